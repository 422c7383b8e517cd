#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Histogram
import Logging
import NIOCore
import NIOPosix

/// Runs one scenario against a gateway and reports what it measured.
public struct BenchRunner: Sendable {
    public let options: BenchOptions
    public let credentials: any BenchCredentials
    /// Pin the load generator's threads to these CPUs once its event loops exist.
    public var pinLoadTo: [Int]?
    /// Progress for people (standard error); the report itself is returned.
    public let logger: Logger

    public init(options: BenchOptions, credentials: any BenchCredentials, pinLoadTo: [Int]? = nil, logger: Logger) {
        self.options = options
        self.credentials = credentials
        self.pinLoadTo = pinLoadTo
        self.logger = logger
    }

    public func run() async throws -> BenchReport {
        let needed = options.subscribers + options.publishConnections + 64
        let limit = Self.raiseFileLimit()
        if limit < needed {
            throw BenchError("\(options.subscribers) streams need about \(needed) file descriptors; the limit is \(limit) (ulimit -n)")
        }
        let harness = try await Harness.make(
            threads: options.threads, endpoint: options.endpoint, streamEndpoints: options.streamEndpoints,
            reconnect: options.reconnect && options.scenario != .replay)  // replay reopens streams itself
        if let pinLoadTo { try CPUAffinity.pinCurrentProcess(to: pinLoadTo) }
        do {
            let report: BenchReport
            switch options.scenario {
            case .fanout, .users:
                report = try await load(harness)
            case .idle:
                report = try await idle(harness)
            case .replay:
                report = try await replay(harness)
            case .soak:
                throw BenchError("the soak scenario runs with SoakRunner")
            }
            await harness.close(publishers: nil)
            await harness.shutdown()
            return report
        } catch {
            await harness.close(publishers: nil)
            await harness.shutdown()
            throw error
        }
    }

    // MARK: - fanout and users

    private func load(_ harness: Harness) async throws -> BenchReport {
        let fanout = options.scenario == .fanout
        let specs = try await subscriberSpecs(count: options.subscribers, topic: fanout ? options.topic : nil)
        let opened = await openStreams(harness, specs)
        let targeting: PublishBody.Targeting =
            fanout ? .topic(options.topic) : .users(prefix: options.userPrefix, count: options.subscribers)
        let publishers = try await harness.publishers(
            connections: options.publishConnections, token: try await credentials.publisherToken(), body: publishBody(targeting),
            pipeline: options.pipeline)
        let mode: PublishMode = options.rate > 0 ? .rate(options.rate) : .flatOut
        try await harness.start(publishers, mode: mode)
        logger.info("warming up", metadata: ["seconds": "\(options.warmup.seconds)"])
        try await Task.sleep(for: options.warmup)

        logger.info("measuring", metadata: ["seconds": "\(options.duration.seconds)"])
        let window = try await measure(harness, publishers: publishers)
        let behind = try await harness.stop(publishers)
        let openNow = try await harness.openStreams()
        await harness.close(publishers: publishers)

        var report = baseReport(opened: opened, disconnects: window.counters.disconnects, lifetime: try await harness.lifetime())
        let publish = window.publish ?? PublishCounters()
        report.publishing = BenchReport.Publishing(
            requests: publish.requests,
            acceptedEvents: publish.acceptedEvents,
            acceptedPerSecond: Double(publish.acceptedEvents) / window.seconds,
            offeredPerSecond: options.rate > 0 ? options.rate : nil,
            rejected: Dictionary(uniqueKeysWithValues: publish.rejected.map { ("http_\($0.key)", $0.value) }),
            connectionErrors: publish.connectionErrors,
            behind: behind,
            roundTripMs: Percentiles(micros: publish.roundTrip),
            lastError: publish.lastError)
        let expected = fanout ? publish.acceptedEvents * openNow : publish.acceptedEvents
        report.delivery = BenchReport.Delivery(
            events: window.counters.events,
            perSecond: Double(window.counters.events) / window.seconds,
            expected: expected,
            resets: window.counters.resets,
            untimed: window.counters.untimed,
            latencyMs: Percentiles(micros: window.counters.latency))
        report.server = window.server(delivered: window.counters.events)
        report.load = window.load
        report.notes += window.hookNotes
        if window.load.cpuPercent > 90 {
            report.notes.append("the load generator used \(Int(window.load.cpuPercent))% of a core: it may be the bottleneck (server CPU per delivered event stays honest)")
        }
        if behind > 0, options.rate > 0 {
            report.notes.append("the publishers could not keep the offered rate: raise --publish-connections")
        }
        return report
    }

    // MARK: - idle

    private func idle(_ harness: Harness) async throws -> BenchReport {
        let specs = try await subscriberSpecs(count: options.subscribers, topic: options.topic)
        // Warm up the server's lazily created state with a few streams, then take the baseline.
        let warmSpecs = try await subscriberSpecs(count: 8, topic: options.topic, firstUser: options.subscribers)
        _ = await harness.open(warmSpecs, perSecond: 1000, firstIndex: options.subscribers)
        for index in options.subscribers..<(options.subscribers + 8) {
            await harness.loop(of: index).submit { $0.close(index: index) }
        }
        try await Task.sleep(for: .seconds(1))
        let baseline = options.serverPID.flatMap(ProcessSample.read)
        let opened = await openStreams(harness, specs)
        logger.info("settling", metadata: ["seconds": "\(options.settle.seconds)"])
        try await Task.sleep(for: options.settle)
        logger.info("measuring", metadata: ["seconds": "\(options.duration.seconds)"])
        let window = try await measure(harness, publishers: nil)
        var report = baseReport(opened: opened, disconnects: window.counters.disconnects, lifetime: try await harness.lifetime())
        if var server = window.server(delivered: 0), let baseline {
            server.baselineRSSBytes = baseline.rssBytes
            if opened.opened > 0 {
                server.memoryPerConnectionBytes = Double(server.rssBytes - baseline.rssBytes) / Double(opened.opened)
            }
            report.server = server
        }
        report.load = window.load
        report.notes += window.hookNotes
        report.notes.append("memory per connection = (RSS with the streams open − RSS before) / streams open")
        return report
    }

    // MARK: - replay

    private func replay(_ harness: Harness) async throws -> BenchReport {
        let topic = options.topic
        let publishers = try await harness.publishers(
            connections: 1, token: try await credentials.publisherToken(), body: publishBody(.topic(topic)))
        if options.background > 0 {
            logger.info("pre-filling the store", metadata: ["events": "\(options.background)"])
            let other = PublishBody(targeting: .topic(topic + ".background"), eventType: options.eventType, batch: 1_000, padding: padding)
            var published = 0
            while published < options.background {
                let batch = min(1_000, options.background - published)
                let body = PublishBody(targeting: other.targeting, eventType: other.eventType, batch: batch, padding: padding)
                let (status, text) = try await harness.publish(publishers, json: json(body, sequence: published), events: batch)
                guard status == 202 else { throw BenchError("pre-fill publish failed: HTTP \(status) \(text)") }
                published += batch
            }
        }
        let spec = try await subscriberSpecs(count: 1, topic: topic)[0]
        var times: [Double] = []
        var histogram = LoadCounters().latency
        let started = ContinuousClock.now
        var opened = Harness.Opened()
        for iteration in 0..<options.iterations {
            guard ContinuousClock.now - started < .seconds(600) else { break }
            // 1. A live stream sees a marker event: its id is the resume point.
            let marker = iteration * 2
            let markerSeen = try await expect(events: 1, on: harness, index: marker)
            let live = await harness.open([spec], perSecond: 1000, firstIndex: marker)
            opened.opened += live.opened
            opened.failed += live.failed
            guard live.opened == 1 else { throw BenchError("cannot open the replay stream") }
            let (status, text) = try await harness.publish(
                publishers, json: json(PublishBody(targeting: .topic(topic), eventType: options.eventType, batch: 1, padding: padding), sequence: 0),
                events: 1)
            guard status == 202 else { throw BenchError("publish failed: HTTP \(status) \(text)") }
            let (resumeID, _) = try await markerSeen.get()
            guard let resumeID else { throw BenchError("the marker event had no id: replay needs a server with event ids") }
            await harness.loop(of: marker).submit { $0.close(index: marker) }
            // 2. Events published while it is away.
            var published = 0
            while published < options.missed {
                let batch = min(1_000, options.missed - published)
                let body = PublishBody(targeting: .topic(topic), eventType: options.eventType, batch: batch, padding: padding)
                let (status, text) = try await harness.publish(publishers, json: json(body, sequence: published), events: batch)
                guard status == 202 else { throw BenchError("publish failed: HTTP \(status) \(text)") }
                published += batch
            }
            // 3. Reconnect with Last-Event-ID and time the arrival of the last missed event.
            let resumed = iteration * 2 + 1
            let allSeen = try await expect(events: options.missed, on: harness, index: resumed)
            let t0 = NIODeadline.now().uptimeNanoseconds
            let reopened = await harness.open([spec], perSecond: 1000, firstIndex: resumed, lastEventID: resumeID)
            opened.opened += reopened.opened
            opened.failed += reopened.failed
            if reopened.opened == 1, let (_, t1) = try? await allSeen.get() {
                let micros = (t1 - t0) / 1000
                times.append(Double(micros) / 1000)
                _ = histogram.record(micros)
            }
            await harness.loop(of: resumed).submit { $0.close(index: resumed) }
        }
        await harness.close(publishers: publishers)
        var report = baseReport(opened: opened, disconnects: 0, lifetime: try await harness.lifetime())
        report.replay = BenchReport.Replay(
            missed: options.missed, iterations: options.iterations, completed: times.count,
            timeMs: Percentiles(micros: histogram), background: options.background)
        if let pid = options.serverPID, let sample = ProcessSample.read(pid: pid) {
            report.server = BenchReport.Server(
                pid: pid, cpuSeconds: sample.cpuSeconds, cpuPercent: 0, cpuSecondsPerMillionDelivered: nil,
                rssBytes: sample.rssBytes, baselineRSSBytes: nil, memoryPerConnectionBytes: nil, threads: sample.threads)
        }
        return report
    }

    /// A future that succeeds with (last id, arrival time) once stream `index` has received
    /// `count` events (resets not counted), or fails after 30 seconds.
    private func expect(events count: Int, on harness: Harness, index: Int) async throws -> EventLoopFuture<(Int64?, UInt64)> {
        let promise = harness.group.next().makePromise(of: (Int64?, UInt64).self)
        await harness.loop(of: index).submit { loop in
            var received = 0
            var settled = false
            loop.observer = { eventIndex, event in
                guard eventIndex == index, !event.isReset, !settled else { return }
                received += 1
                if received == count {
                    settled = true
                    promise.succeed((event.id, NIODeadline.now().uptimeNanoseconds))
                }
            }
            loop.schedule(in: 30_000_000_000) {
                guard !settled else { return }
                settled = true
                promise.fail(BenchError("stream \(index) received \(received) of \(count) events within 30 s"))
            }
        }
        return promise.futureResult
    }

    // MARK: - shared

    private var padding: String { String(repeating: "x", count: max(0, options.payloadBytes)) }

    private func publishBody(_ targeting: PublishBody.Targeting) -> PublishBody {
        PublishBody(targeting: targeting, eventType: options.eventType, batch: max(1, options.batch), padding: padding)
    }

    private func json(_ body: PublishBody, sequence: Int) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: 64 * max(1, body.batch))
        body.write(sequence: UInt64(sequence), sentAt: NIODeadline.now().uptimeNanoseconds, into: &buffer)
        return buffer
    }

    private func subscriberSpecs(count: Int, topic: String?, firstUser: Int = 0) async throws -> [SubscriberSpec] {
        var specs: [SubscriberSpec] = []
        specs.reserveCapacity(count)
        let path = options.transport.path(topic: topic)
        for index in firstUser..<(firstUser + count) {
            let token = try await credentials.subscriberToken(user: "\(options.userPrefix)\(index)", topics: topic.map { [$0] } ?? [])
            specs.append(SubscriberSpec(path: path, token: token, transport: options.transport))
        }
        return specs
    }

    private func openStreams(_ harness: Harness, _ specs: [SubscriberSpec]) async -> Harness.Opened {
        logger.info("opening streams", metadata: ["count": "\(specs.count)", "per_second": "\(options.rampPerSecond)"])
        let logger = self.logger
        let total = specs.count
        let opened = await harness.open(specs, perSecond: options.rampPerSecond) { opened, failed in
            logger.info("opening streams", metadata: ["open": "\(opened)", "failed": "\(failed)", "of": "\(total)"])
        }
        logger.info("streams open", metadata: ["open": "\(opened.opened)", "failed": "\(opened.failed)", "seconds": "\(opened.seconds)"])
        return opened
    }

    /// What one measurement window saw.
    private struct Window {
        var counters: LoadCounters
        var publish: PublishCounters?
        var seconds: Double
        var serverStart: ProcessSample?
        var serverEnd: ProcessSample?
        var load: BenchReport.Load
        var pid: Int32?
        /// Time between the CPU samples (the window's length, give or take a few ms).
        var sampleSeconds: Double = 0
        /// What went wrong with `--window-hook`, if anything.
        var hookNotes: [String] = []

        func server(delivered: Int) -> BenchReport.Server? {
            guard let pid, let serverStart, let serverEnd else { return nil }
            let cpu = serverEnd.cpuSeconds - serverStart.cpuSeconds
            return BenchReport.Server(
                pid: pid, cpuSeconds: cpu, cpuPercent: 100 * cpu / (sampleSeconds > 0 ? sampleSeconds : seconds),
                cpuSecondsPerMillionDelivered: delivered > 0 ? cpu / Double(delivered) * 1e6 : nil,
                rssBytes: serverEnd.rssBytes, baselineRSSBytes: nil, memoryPerConnectionBytes: nil, threads: serverEnd.threads)
        }
    }

    private func measure(_ harness: Harness, publishers: NIOLoopBound<PublisherPool>?) async throws -> Window {
        // The window's instants are fixed first and handed to every loop before it opens, so
        // subscribers and publishers count over the same interval (see `MeasurementWindow`).
        let durationNanos = UInt64(options.duration.components.seconds) * 1_000_000_000
            + UInt64(options.duration.components.attoseconds / 1_000_000_000)
        let start = MeasurementWindow.now + 200_000_000
        let bounds = MeasurementWindow(start: start, end: start + durationNanos)
        try await harness.beginWindow(bounds, publishers: publishers)
        try await Self.sleep(until: bounds.start)
        let serverStart = options.serverPID.flatMap(ProcessSample.read)
        let loadStart = ProcessSample.current()
        let sampled = MeasurementWindow.now
        let hookStarted = await runWindowHook("start")
        try await Self.sleep(until: bounds.end)
        let serverEnd = options.serverPID.flatMap(ProcessSample.read)
        let loadEnd = ProcessSample.current()
        // CPU over the interval between the samples (within a few ms of the window).
        let sampleSeconds = Double(MeasurementWindow.now - sampled) / 1e9
        let hookEnded = await runWindowHook("end")
        try await awaitStragglers(harness, publishers: publishers)
        let (counters, publish) = try await harness.endWindow(publishers: publishers)
        let loadCPU = (loadEnd?.cpuSeconds ?? 0) - (loadStart?.cpuSeconds ?? 0)
        var window = Window(
            counters: counters, publish: publish, seconds: Double(durationNanos) / 1e9, serverStart: serverStart, serverEnd: serverEnd,
            load: BenchReport.Load(cpuSeconds: loadCPU, cpuPercent: 100 * loadCPU / sampleSeconds, rssBytes: loadEnd?.rssBytes ?? 0),
            pid: options.serverPID)
        window.sampleSeconds = sampleSeconds
        window.hookNotes = [hookStarted, hookEnded].compactMap { $0 }
        return window
    }

    /// Publishes sent inside the window count wherever their answers and events arrive (see
    /// `MeasurementWindow`): waits until every such request is answered and every subscriber got
    /// its events, or the deliveries stop growing for a second (a long-poll client's re-poll on
    /// a loaded machine can pause them for a few hundred milliseconds), or 5 s pass.
    private func awaitStragglers(_ harness: Harness, publishers: NIOLoopBound<PublisherPool>?) async throws {
        let clock = ContinuousClock()
        let giveUp = clock.now + .seconds(5)
        let streams = options.scenario == .fanout ? try await harness.openStreams() : 1
        var last = -1
        var steadySince = clock.now
        while clock.now < giveUp {
            let delivered = await harness.windowEvents()
            var answered = true
            var expected: Int?
            if let publishers {
                let publish = try await harness.publishWindow(publishers)
                answered = publish.accepted + publish.rejected.values.reduce(0, +) >= publish.requests
                expected = publish.acceptedEvents * streams
            }
            if answered, let expected, delivered >= expected { return }
            if delivered != last {
                last = delivered
                steadySince = clock.now
            } else if answered, clock.now - steadySince >= .seconds(1) {
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Runs `--window-hook` with `phase`; a note for the report when it fails.
    private func runWindowHook(_ phase: String) async -> String? {
        guard let hook = options.windowHook else { return nil }
        do {
            let status = try await WindowHook.run(hook, phase: phase)
            return status == 0 ? nil : "the window hook exited with status \(status) at the window's \(phase)"
        } catch {
            return "the window hook could not run at the window's \(phase): \(error)"
        }
    }

    private static func sleep(until instant: UInt64) async throws {
        let now = MeasurementWindow.now
        if instant > now { try await Task.sleep(for: .nanoseconds(Int64(instant - now))) }
    }

    private func baseReport(opened: Harness.Opened, disconnects: Int, lifetime: LoadCounters) -> BenchReport {
        var errors: [String: Int] = [:]
        if lifetime.connectFailures > 0 { errors["connect"] = lifetime.connectFailures }
        if lifetime.protocolErrors > 0 { errors["protocol"] = lifetime.protocolErrors }
        for (code, count) in lifetime.statusFailures { errors["http_\(code)"] = count }
        let formatter = ISO8601DateFormatter()
        return BenchReport(
            scenario: options.scenario,
            label: options.label,
            target: ([options.endpoint] + options.streamEndpoints.filter { $0 != options.endpoint }).map(\.description).joined(separator: " "),
            date: formatter.string(from: Date()),
            settings: BenchReport.Settings(
                subscribers: options.subscribers,
                transport: options.transport,
                rate: options.rate > 0 ? options.rate : nil,
                publishConnections: options.publishConnections,
                pipeline: options.pipeline,
                batch: options.batch,
                payloadBytes: options.payloadBytes,
                durationSeconds: options.duration.seconds,
                warmupSeconds: options.warmup.seconds,
                loadThreads: options.threads,
                serverCPU: options.serverCPU,
                loadCPU: options.loadCPU),
            connections: BenchReport.Connections(
                requested: options.scenario == .replay ? opened.opened + opened.failed : options.subscribers,
                opened: opened.opened,
                failed: opened.failed,
                seconds: opened.seconds,
                errors: errors,
                disconnects: disconnects,
                lastError: lifetime.lastError))
    }

    /// Raises the soft open-files limit to the hard one; returns the limit now in force.
    public static func raiseFileLimit() -> Int {
        var limit = rlimit()
        #if os(Linux)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(resource, &limit)
            _ = getrlimit(resource, &limit)
        }
        return Int(clamping: limit.rlim_cur)
    }
}
