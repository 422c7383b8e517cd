import Logging
import NIOCore
import NIOPosix

/// The load generator's threads: `StreamLoop`s reading the SSE streams and one NIO event loop
/// for the publishers. The streams are spread over `streamEndpoints` round-robin by index; the
/// publishers go to `endpoint`.
///
/// The async functions here only orchestrate (ramp, windows, totals); the per-event work runs on
/// the loops' threads.
struct Harness: Sendable {
    /// The publishers' event loop.
    let group: MultiThreadedEventLoopGroup
    let streams: [StreamLoop]
    let endpoint: Endpoint

    /// `reconnect`: reopen streams the server ends, with Last-Event-ID. `streamEndpoints`: where
    /// the streams go (stream `i` to the `i % count`th); empty for `endpoint` alone.
    static func make(threads: Int, endpoint: Endpoint, streamEndpoints: [Endpoint] = [], reconnect: Bool) async throws -> Harness {
        let targets = try (streamEndpoints.isEmpty ? [endpoint] : streamEndpoints).map { endpoint in
            do {
                return StreamTarget(endpoint: endpoint, address: try SocketAddress.makeAddressResolvingHost(endpoint.host, port: endpoint.port))
            } catch {
                throw BenchError("cannot resolve \(endpoint.host): \(error)")
            }
        }
        let streams = try (0..<max(1, threads)).map { _ in try StreamLoop(targets: targets, reconnect: reconnect) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        return Harness(group: group, streams: streams, endpoint: endpoint)
    }

    /// The loop of stream `index`.
    func loop(of index: Int) -> StreamLoop {
        streams[index % streams.count]
    }

    /// Result of opening streams.
    struct Opened: Sendable {
        var opened = 0
        var failed = 0
        var seconds = 0.0
    }

    /// Opens `specs` at about `perSecond` new connections per second, waiting for each batch's
    /// response heads; stops early after `timeout`.
    func open(
        _ specs: [SubscriberSpec], perSecond: Int, timeout: Duration = .seconds(300), firstIndex: Int = 0,
        lastEventID: Int64? = nil, progress: ((Int, Int) -> Void)? = nil
    ) async -> Opened {
        let clock = ContinuousClock()
        let started = clock.now
        let tick = Duration.milliseconds(10)
        let batchSize = max(1, perSecond / 100)
        var result = Opened()
        var index = 0
        var nextProgress = clock.now + .seconds(1)
        while index < specs.count, clock.now - started < timeout {
            let tickStart = clock.now
            let end = min(index + batchSize, specs.count)
            var perLoop = [[(SubscriberSpec, Int)]](repeating: [], count: streams.count)
            for offset in index..<end {
                let number = firstIndex + offset
                perLoop[number % streams.count].append((specs[offset], number))
            }
            let batch = await withTaskGroup(of: (opened: Int, failed: Int).self) { group in
                for (loop, streams) in zip(self.streams, perLoop) where !streams.isEmpty {
                    group.addTask { await loop.open(streams, lastEventID: lastEventID) }
                }
                return await group.reduce(into: (opened: 0, failed: 0)) { total, part in
                    total.opened += part.opened
                    total.failed += part.failed
                }
            }
            result.opened += batch.opened
            result.failed += batch.failed
            index = end
            if let progress, clock.now >= nextProgress {
                progress(result.opened, result.failed)
                nextProgress = clock.now + .seconds(1)
            }
            let elapsed = clock.now - tickStart
            if elapsed < tick { try? await Task.sleep(for: tick - elapsed) }
        }
        result.seconds = (clock.now - started).seconds
        return result
    }

    /// Tells every loop (and `publishers`) the measurement window: call before it starts.
    func beginWindow(_ bounds: MeasurementWindow, publishers: NIOLoopBound<PublisherPool>?) async throws {
        _ = await gather { $0.stats.beginWindow(bounds) }
        if let publishers {
            try await publishers.eventLoop.submit {
                publishers.value.window = PublishCounters()
                publishers.value.bounds = bounds
            }.get()
        }
    }

    /// `read` run on every stream loop, in order.
    private func gather<T: Sendable>(_ read: @escaping @Sendable (StreamLoop) -> T) async -> [T] {
        var values: [T] = []
        for loop in streams { values.append(await loop.submit(read)) }
        return values
    }

    /// Events of the window the subscribers have received so far.
    func windowEvents() async -> Int {
        await gather { $0.stats.window.events }.reduce(0, +)
    }

    /// The publishers' window counters so far.
    func publishWindow(_ publishers: NIOLoopBound<PublisherPool>) async throws -> PublishCounters {
        try await publishers.eventLoop.submit { publishers.value.window }.get()
    }

    /// Ends the window; returns what subscribers and publishers saw in it.
    func endWindow(publishers: NIOLoopBound<PublisherPool>?) async throws -> (LoadCounters, PublishCounters?) {
        var total = LoadCounters()
        var publish: PublishCounters?
        if let publishers {
            publish = try await publishers.eventLoop.submit {
                publishers.value.bounds = nil
                return publishers.value.window
            }.get()
        }
        for counters in await gather({ $0.stats.endWindow() }) { total.add(counters) }
        return (total, publish)
    }

    /// Counters since the start, over all loops.
    func lifetime() async throws -> LoadCounters {
        var total = LoadCounters()
        for counters in await gather({ $0.stats.lifetime }) { total.add(counters) }
        return total
    }

    /// Streams open now.
    func openStreams() async throws -> Int {
        await gather { $0.stats.openStreams }.reduce(0, +)
    }

    /// Creates a publisher pool with `connections` connections on the publishers' loop.
    func publishers(connections: Int, token: String?, body: PublishBody, pipeline: Int = 1) async throws -> NIOLoopBound<PublisherPool> {
        let loop = group.next()
        let endpoint = self.endpoint
        let pool = try await loop.submit {
            NIOLoopBound(PublisherPool(loop: loop, endpoint: endpoint, token: token, body: body, pipeline: pipeline), eventLoop: loop)
        }.get()
        try await loop.flatSubmit { pool.value.connect(count: connections) }.get()
        return pool
    }

    func start(_ publishers: NIOLoopBound<PublisherPool>, mode: PublishMode) async throws {
        try await publishers.eventLoop.submit { publishers.value.start(mode) }.get()
    }

    func stop(_ publishers: NIOLoopBound<PublisherPool>) async throws -> Int {
        try await publishers.eventLoop.submit {
            publishers.value.stop()
            return publishers.value.behind
        }.get()
    }

    /// Publishes one prepared JSON body and waits for the answer.
    func publish(_ publishers: NIOLoopBound<PublisherPool>, json: ByteBuffer, events: Int) async throws -> (Int, String) {
        let promise = publishers.eventLoop.makePromise(of: (Int, String).self)
        try await publishers.eventLoop.submit {
            publishers.value.publishOnce(json, events: events) { status, body in promise.succeed((status, body)) }
        }.get()
        return try await promise.futureResult.get()
    }

    /// Closes every stream (no reconnects) and the publishers.
    func close(publishers: NIOLoopBound<PublisherPool>?) async {
        if let publishers {
            try? await publishers.eventLoop.flatSubmit { publishers.value.closeAll() }.get()
        }
        _ = await gather { $0.closeAll() }
    }

    func shutdown() async {
        for loop in streams { await loop.shutdown() }
        try? await group.shutdownGracefully()
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
