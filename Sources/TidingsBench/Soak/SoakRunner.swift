import Foundation
import Logging
import NIOCore
import Synchronization

/// `tidings bench soak`: minutes of load with everything a gateway meets at once, then checks
/// that it is left as it was and that nobody lost anything.
///
/// The load, run once for the warm-up and again for the soak itself:
/// - tracked streams (`--connections`; SSE, every tenth a WebSocket, every tenth a long poll),
///   each on one of `soakTopics` topics, every event they receive logged;
/// - a publisher at `--rate` events/s, round-robin over the topics, every acknowledged id kept;
/// - churn: `churnPerSecond` short-lived streams (mostly SSE, some WebSocket and long poll)
///   opened, held 0–2 s and closed;
/// - `resumesPerSecond` tracked streams closed and reopened 0–2 s later with `Last-Event-ID`;
/// - `slowClients` slow subscribers (stalled or trickling on a 4 KB receive buffer), which the
///   gateway must disconnect as slow consumers; each then resumes with its last id as a tracked
///   stream, its first connection's events first in its log.
///
/// Between the two runs and at the end the load stops and the server settles; its RSS and
/// descriptors are sampled then. At the end every open tracked stream must catch up to its
/// topic's last event, and every log must read as one gap-free, duplicate-free run of its
/// topic's acknowledged ids (``DeliveryCheck``).
public struct SoakRunner: Sendable {
    public let options: BenchOptions
    public let credentials: any BenchCredentials
    public let logger: Logger
    /// How far the end RSS may exceed the warmed-up one: the larger of the two.
    public var rssSlackBytes = 16 << 20
    public var rssSlackFraction = 0.10

    /// Streams numbered from here are churn (not logged); below are tracked and slow clients.
    private static let churnBase = 1_000_000
    private static let slowBase = 500_000
    /// The slow clients' streams carry every topic: checked against all acknowledged ids.
    private static let everyTopic = "*"

    public init(options: BenchOptions, credentials: any BenchCredentials, logger: Logger) {
        self.options = options
        self.credentials = credentials
        self.logger = logger
    }

    /// Shared between the load tasks: what was published, what churn and resumes did.
    private final class Tally: Sendable {
        struct State: Sendable {
            var published: [String: [Int64]] = [:]
            var connections = SoakReport.Connections()
            var publishing = SoakReport.Publishing()
            var peakRSS = 0
            var nextSlowIndex = SoakRunner.slowBase
        }
        let state = Mutex(State())
    }

    private var topics: [String] { (0..<max(1, options.soakTopics)).map { "\(options.topic).\($0)" } }

    public func run() async throws -> SoakReport {
        let needed = options.subscribers + options.churnPerSecond * 3 + options.slowClients * 64 + 256
        let limit = BenchRunner.raiseFileLimit()
        if limit < needed {
            throw BenchError("the soak needs about \(needed) file descriptors; the limit is \(limit) (ulimit -n)")
        }
        let harness = try await Harness.make(
            threads: options.threads, endpoint: options.endpoint, streamEndpoints: options.streamEndpoints, reconnect: true)
        let ledgers = harness.streams.map { _ in SoakLedger(trackedBelow: Self.churnBase) }
        for (loop, ledger) in zip(harness.streams, ledgers) {
            await loop.submit { $0.observer = { index, event in ledger.record(index: index, event: event) } }
        }
        let publishers = try await harness.publishers(
            connections: 1, token: try await credentials.publisherToken(),
            body: PublishBody(targeting: .topic(topics[0]), eventType: options.eventType, batch: 1, padding: ""))
        do {
            let report = try await soak(harness, ledgers: ledgers, publishers: publishers)
            await harness.close(publishers: publishers)
            await harness.shutdown()
            return report
        } catch {
            await harness.close(publishers: publishers)
            await harness.shutdown()
            throw error
        }
    }

    private func soak(_ harness: Harness, ledgers: [SoakLedger], publishers: NIOLoopBound<PublisherPool>) async throws -> SoakReport {
        let tally = Tally()
        let formatter = ISO8601DateFormatter()
        var report = SoakReport(
            label: options.label, date: formatter.string(from: Date()), pid: options.serverPID,
            settings: SoakReport.Settings(
                durationSeconds: options.duration.seconds, warmupSeconds: options.warmup.seconds, trackedStreams: options.subscribers,
                churnPerSecond: options.churnPerSecond, slowClients: options.slowClients, resumesPerSecond: options.resumesPerSecond,
                publishPerSecond: options.rate, topics: topics.count, payloadBytes: options.payloadBytes))

        // Tracked streams.
        var tracked: [SubscriberSpec] = []
        for index in 0..<options.subscribers {
            tracked.append(try await spec(user: "soak-t\(index)", topic: topic(of: index), transport: trackedTransport(index)))
        }
        logger.info("opening tracked streams", metadata: ["count": "\(tracked.count)"])
        let opened = await harness.open(tracked, perSecond: options.rampPerSecond)
        tally.state.withLock {
            $0.connections.trackedOpened = opened.opened
            $0.connections.trackedFailed = opened.failed
        }
        // A few specs for the churn and the slow clients (their tokens need not differ).
        var churnSpecs: [SubscriberSpec] = []
        for index in 0..<50 {
            let transport: Transport = index % 5 == 3 ? .ws : index % 10 == 9 ? .poll : .sse
            churnSpecs.append(try await spec(user: "soak-c\(index)", topic: topic(of: index), transport: transport))
        }
        // Slow clients take every topic, so the most bytes come their way.
        let slowSpec = SubscriberSpec(
            path: "/events?" + topics.map { "topic=\($0)" }.joined(separator: "&"),
            token: try await credentials.subscriberToken(user: "soak-slow", topics: topics))

        logger.info("warming up", metadata: ["seconds": "\(options.warmup.seconds)"])
        try await load(
            for: options.warmup, harness, ledgers: ledgers, publishers: publishers, tracked: tracked, churn: churnSpecs, slow: slowSpec,
            tally: tally)
        let warmedUp = try await settle(harness)
        logger.info(
            "warmed up", metadata: ["rss_mb": "\((warmedUp?.rssBytes ?? 0) >> 20)", "descriptors": "\(warmedUp?.descriptors ?? 0)"])

        logger.info("soaking", metadata: ["seconds": "\(options.duration.seconds)"])
        try await load(
            for: options.duration, harness, ledgers: ledgers, publishers: publishers, tracked: tracked, churn: churnSpecs, slow: slowSpec,
            tally: tally)
        // The churn ran during the warm-up and the soak, not while the server settled.
        let loadSeconds = (options.warmup + options.duration).seconds
        let end = try await settle(harness)

        // Every open tracked stream catches up to its topic's last event.
        var published = tally.state.withLock { $0.published }
        published[Self.everyTopic] = published.values.flatMap { $0 }
        var lastOfTopic: [Int: Int64] = [:]
        for (number, topic) in topics.enumerated() { lastOfTopic[number] = published[topic]?.max() }
        let topicCount = topics.count
        let behind = try await waitForCatchUp(harness, ledgers: ledgers, last: lastOfTopic, topicCount: topicCount)

        // The verdict.
        let state = tally.state.withLock { $0 }
        report.connections = state.connections
        report.connections.churnPerSecond = Double(state.connections.churnOpened) / max(1, loadSeconds)
        report.publishing = state.publishing
        let lifetime = try await harness.lifetime()
        report.connections.errors = Self.errors(lifetime)
        report.connections.lastError = lifetime.lastError ?? state.connections.lastError
        let check = DeliveryCheck(published: published)
        var delivery = SoakReport.Delivery()
        delivery.behindAtEnd = behind
        for (loop, ledger) in zip(harness.streams, ledgers) {
            let logs = await loop.submit { loop in
                ledger.logs.map { index, log in (index, log, loop.isOpen(index: index)) }
            }
            for (index, log, open) in logs {
                let topic = index >= Self.slowBase ? Self.everyTopic : "\(options.topic).\(index % topicCount)"
                let verdict = check.check(topic: topic, log: log, survivor: open)
                delivery.streams += 1
                delivery.totals.add(verdict)
                if open, index < Self.slowBase { report.connections.trackedOpenAtEnd += 1 }
                if !verdict.isClean {
                    delivery.failedStreams += 1
                    if delivery.failures.count < 10 { delivery.failures.append("\(index) on \(topic): \(verdict)") }
                }
            }
        }
        report.delivery = delivery
        if let warmedUp, let end {
            report.resources = ResourceCheck(
                warmedUp: warmedUp, end: end, peakRSSBytes: max(state.peakRSS, warmedUp.rssBytes, end.rssBytes), rssSlackBytes: rssSlackBytes,
                rssSlackFraction: rssSlackFraction)
        }
        report.judge()
        return report
    }

    // MARK: - Load

    /// Runs every kind of load for `duration`, then stops it and waits for its tasks.
    private func load(
        for duration: Duration, _ harness: Harness, ledgers: [SoakLedger], publishers: NIOLoopBound<PublisherPool>,
        tracked: [SubscriberSpec], churn: [SubscriberSpec], slow: SubscriberSpec, tally: Tally
    ) async throws {
        let stop = StopFlag()
        let endpoint = harness.endpoint
        let slowTarget = StreamTarget(endpoint: endpoint, address: try SocketAddress.makeAddressResolvingHost(endpoint.host, port: endpoint.port))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await publish(harness, publishers: publishers, tally: tally, stop: stop) }
            group.addTask { await self.churn(harness, specs: churn, tally: tally, stop: stop) }
            group.addTask { await resume(harness, ledgers: ledgers, tracked: tracked, tally: tally, stop: stop) }
            for slot in 0..<options.slowClients {
                group.addTask { await slowClients(slot: slot, target: slowTarget, harness, ledgers: ledgers, spec: slow, tally: tally, stop: stop) }
            }
            group.addTask {
                let clock = ContinuousClock()
                let end = clock.now + duration
                while clock.now < end {
                    if let pid = options.serverPID, let sample = ProcessSample.read(pid: pid) {
                        tally.state.withLock { $0.peakRSS = max($0.peakRSS, sample.rssBytes) }
                    }
                    try await Task.sleep(for: min(.seconds(1), end - clock.now))
                }
                stop.set()
            }
            try await group.waitForAll()
        }
    }

    /// Events to the topics in turn at `options.rate`, `--batch` per request (by default as many
    /// as make 50 requests a second), one request at a time; every acknowledged id kept.
    private func publish(_ harness: Harness, publishers: NIOLoopBound<PublisherPool>, tally: Tally, stop: StopFlag) async throws {
        let clock = ContinuousClock()
        let started = clock.now
        let batch = options.batch > 1 ? options.batch : max(1, Int(options.rate / 50))
        let interval = Duration.seconds(Double(batch) / max(1, options.rate))
        let padding = String(repeating: "x", count: max(0, options.payloadBytes))
        var sent = 0
        let topics = self.topics
        while !stop.isSet {
            let topic = topics[sent % topics.count]
            let body = PublishBody(targeting: .topic(topic), eventType: options.eventType, batch: batch, padding: padding)
            var buffer = ByteBufferAllocator().buffer(capacity: batch * (128 + padding.utf8.count))
            body.write(sequence: UInt64(sent * batch), sentAt: NIODeadline.now().uptimeNanoseconds, into: &buffer)
            let (status, text) = try await harness.publish(publishers, json: buffer, events: batch)
            sent += 1
            tally.state.withLock { state in
                let ids = Self.acknowledgedIDs(text)
                if status == 202, ids.count == batch {
                    state.published[topic, default: []].append(contentsOf: ids)
                    state.publishing.accepted += batch
                } else {
                    state.publishing.rejected += batch
                    state.publishing.lastError = "HTTP \(status): \(text.prefix(200))"
                }
            }
            let next = started + interval * sent
            if next > clock.now { try await Task.sleep(until: next, clock: .continuous) }
        }
    }

    /// `{"id":"123"}` → [123], `{"ids":["123","124"]}` → [123, 124].
    static func acknowledgedIDs(_ text: String) -> [Int64] {
        if let range = text.range(of: #""id":""#) {
            return Int64(text[range.upperBound...].prefix { $0.isNumber }).map { [$0] } ?? []
        }
        guard let range = text.range(of: #""ids":["#), let end = text[range.upperBound...].firstIndex(of: "]") else { return [] }
        return text[range.upperBound..<end].split(separator: ",").compactMap { Int64($0.filter(\.isNumber)) }
    }

    /// Counts of the churn, kept on the loops' threads.
    private final class ChurnCounts: Sendable {
        let opened = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
    }

    /// Opens `churnPerSecond` short-lived streams a second, each closed again 0–2 s later (a
    /// third at once). Opens are not awaited: at most a second's worth are outstanding.
    private func churn(_ harness: Harness, specs: [SubscriberSpec], tally: Tally, stop: StopFlag) async {
        let clock = ContinuousClock()
        let perTick = max(1, options.churnPerSecond / 100)
        let pool = max(perTick * 100 * 10, 1_000)  // indices reused after ~10 s
        let counts = ChurnCounts()
        var issued = 0
        let started = clock.now
        var ticks = 0
        while !stop.isSet {
            let settled = counts.opened.load(ordering: .relaxed) + counts.failed.load(ordering: .relaxed)
            if issued - settled < max(perTick, options.churnPerSecond) {
                var perLoop = [[(SubscriberSpec, Int)]](repeating: [], count: harness.streams.count)
                for _ in 0..<perTick {
                    let index = Self.churnBase + issued % pool
                    perLoop[index % harness.streams.count].append((specs[issued % specs.count], index))
                    issued += 1
                }
                for (loop, streams) in zip(harness.streams, perLoop) where !streams.isEmpty {
                    loop.execute { loop in
                        for (spec, index) in streams {
                            loop.open(spec, index: index) { result in
                                guard case .success = result else {
                                    counts.failed.add(1, ordering: .relaxed)
                                    return
                                }
                                counts.opened.add(1, ordering: .relaxed)
                                if Int.random(in: 0..<3) == 0 {
                                    loop.execute { $0.close(index: index) }
                                } else {
                                    loop.schedule(in: UInt64.random(in: 0..<2_000_000_000)) { loop.close(index: index) }
                                }
                            }
                        }
                    }
                }
            }
            ticks += 1
            let next = started + .milliseconds(10) * ticks
            if next > clock.now { try? await Task.sleep(until: next, clock: .continuous) }
        }
        // Let the outstanding opens and the delayed closes run before the server is sampled.
        let giveUp = clock.now + .seconds(30)
        while counts.opened.load(ordering: .relaxed) + counts.failed.load(ordering: .relaxed) < issued, clock.now < giveUp {
            try? await Task.sleep(for: .milliseconds(50))
        }
        try? await Task.sleep(for: .milliseconds(2_100))
        tally.state.withLock {
            $0.connections.churnOpened += counts.opened.load(ordering: .relaxed)
            $0.connections.churnFailed += counts.failed.load(ordering: .relaxed)
        }
    }

    /// Closes random open tracked streams and reopens each 0–2 s later from its last id.
    private func resume(_ harness: Harness, ledgers: [SoakLedger], tracked: [SubscriberSpec], tally: Tally, stop: StopFlag) async {
        guard options.resumesPerSecond > 0, !tracked.isEmpty else { return }
        let interval = Duration.seconds(1 / options.resumesPerSecond)
        while !stop.isSet {
            try? await Task.sleep(for: interval)
            let index = Int.random(in: 0..<tracked.count)
            let loop = harness.loop(of: index)
            let ledger = ledgers[index % ledgers.count]
            let spec = tracked[index]
            let resumed = await loop.submit { loop -> Bool in
                guard loop.isOpen(index: index), let last = ledger.lastIDs[index] else { return false }
                loop.close(index: index)
                loop.schedule(in: UInt64.random(in: 0..<2_000_000_000)) { loop.open(spec, index: index, lastEventID: last) }
                return true
            }
            if resumed { tally.state.withLock { $0.connections.resumes += 1 } }
        }
        try? await Task.sleep(for: .milliseconds(2_100))  // the last reopen
    }

    /// Slow subscribers, one after another in this slot: each until the gateway disconnects it,
    /// then resumed from its last id as a tracked stream (at most 200 resumed per slot).
    private func slowClients(slot: Int, target: StreamTarget, _ harness: Harness, ledgers: [SoakLedger], spec: SubscriberSpec, tally: Tally, stop: StopFlag) async {
        var resumed = 0
        while !stop.isSet {
            let index = tally.state.withLock { state -> Int in
                let index = state.nextSlowIndex
                state.nextSlowIndex = index + 1
                state.connections.slowClientsStarted += 1
                return index
            }
            // Half stall for 3–12 s and then read everything (some are disconnected, some catch
            // up in time); half trickle 2.5 KB/s, below what their topics send.
            let stall = Duration.milliseconds(Int.random(in: 3_000...12_000))
            let pace: SlowClient.Pace = slot % 2 == 0 ? .stalled(stall) : .trickle(256)
            let client = SlowClient(target: target, spec: spec, pace: pace)
            let outcome = await client.run(stop: stop, limit: slot % 2 == 0 ? stall + .seconds(10) : .seconds(60))
            tally.state.withLock { state in
                if outcome.closedByServer { state.connections.slowClientsDisconnected += 1 }
                if let error = outcome.error { state.connections.lastError = "slow client: \(error)" }
            }
            guard outcome.opened else {
                try? await Task.sleep(for: .milliseconds(500))
                continue
            }
            let loop = harness.loop(of: index)
            let ledger = ledgers[index % ledgers.count]
            let resume = outcome.closedByServer && resumed < 200
            await loop.submit { loop in
                ledger.seed(index: index, entries: outcome.entries, lastID: outcome.lastID)
                if resume { loop.open(spec, index: index, lastEventID: outcome.lastID) }
            }
            if resume {
                resumed += 1
                tally.state.withLock { $0.connections.slowClientsResumed += 1 }
            }
        }
    }

    // MARK: - Settling and sampling

    /// Waits until the server's descriptor count holds still for 2 s with the load stopped, and
    /// at least the polls' timeout plus 2 s (a waiting long poll whose client left keeps its
    /// socket until its timeout), at most that plus 30 s; then samples it.
    private func settle(_ harness: Harness) async throws -> ResourceCheck.Sample? {
        guard let pid = options.serverPID else { return nil }
        let clock = ContinuousClock()
        let earliest = clock.now + options.pollTimeout + .seconds(2)
        let giveUp = earliest + .seconds(30)
        var last = -1
        var steadySince = clock.now
        while clock.now < giveUp {
            let count = ProcessSample.descriptors(pid: pid) ?? -1
            if count != last {
                last = count
                steadySince = clock.now
            } else if clock.now - steadySince >= .seconds(2), clock.now >= earliest {
                break
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let streams = try await harness.openStreams()
        guard let sample = ProcessSample.read(pid: pid), let descriptors = ProcessSample.descriptors(pid: pid) else { return nil }
        return ResourceCheck.Sample(rssBytes: sample.rssBytes, descriptors: descriptors, streams: streams)
    }

    /// Waits (at most 30 s) until every open tracked stream has its topic's last event; returns
    /// how many still have not.
    private func waitForCatchUp(_ harness: Harness, ledgers: [SoakLedger], last: [Int: Int64], topicCount: Int) async throws -> Int {
        let clock = ContinuousClock()
        let giveUp = clock.now + .seconds(30)
        while true {
            var behind = 0
            for (loop, ledger) in zip(harness.streams, ledgers) {
                behind += await loop.submit { loop in
                    ledger.logs.keys.filter { index in
                        let target = index >= Self.slowBase ? last.values.max() : last[index % topicCount]
                        guard loop.isOpen(index: index), let target else { return false }
                        return (ledger.lastIDs[index] ?? 0) < target
                    }.count
                }
            }
            if behind == 0 || clock.now >= giveUp { return behind }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    // MARK: - Helpers

    private func topic(of index: Int) -> String { "\(options.topic).\(index % max(1, options.soakTopics))" }

    private func trackedTransport(_ index: Int) -> Transport {
        switch index % 10 {
        case 8: .ws
        case 9: .poll
        default: .sse
        }
    }

    private func spec(user: String, topic: String, transport: Transport) async throws -> SubscriberSpec {
        let seconds = max(1, Int(options.pollTimeout.components.seconds))
        return SubscriberSpec(
            path: transport.path(topic: topic).replacingOccurrences(of: "timeout=25s", with: "timeout=\(seconds)s"), token: try await credentials.subscriberToken(user: user, topics: [topic]), transport: transport)
    }

    private static func errors(_ lifetime: LoadCounters) -> [String: Int] {
        var errors: [String: Int] = [:]
        if lifetime.connectFailures > 0 { errors["connect"] = lifetime.connectFailures }
        if lifetime.protocolErrors > 0 { errors["protocol"] = lifetime.protocolErrors }
        if lifetime.disconnects > 0 { errors["disconnect"] = lifetime.disconnects }
        for (code, count) in lifetime.statusFailures { errors["http_\(code)"] = count }
        return errors
    }
}
