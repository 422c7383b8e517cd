import Logging
import NIOCore
import NIOPosix

/// The load generator's event loops with their subscriber pools and one publisher pool.
///
/// The async functions here only orchestrate (ramp, windows, totals); the per-event work runs in
/// the channel handlers on the loops.
struct Harness: Sendable {
    let group: MultiThreadedEventLoopGroup
    let loops: [any EventLoop]
    let pools: [NIOLoopBound<SubscriberPool>]
    let endpoint: Endpoint

    static func make(threads: Int, endpoint: Endpoint) async throws -> Harness {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let loops = Array(group.makeIterator())
        var pools: [NIOLoopBound<SubscriberPool>] = []
        for loop in loops {
            pools.append(
                try await loop.submit {
                    NIOLoopBound(SubscriberPool(loop: loop, endpoint: endpoint, stats: LoopStats()), eventLoop: loop)
                }.get())
        }
        return Harness(group: group, loops: loops, pools: pools, endpoint: endpoint)
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
            var futures: [EventLoopFuture<Void>] = []
            futures.reserveCapacity(end - index)
            for offset in index..<end {
                let slot = (firstIndex + offset) % loops.count
                let pool = pools[slot]
                let spec = specs[offset]
                let number = firstIndex + offset
                futures.append(loops[slot].flatSubmit { pool.value.open(spec, index: number, lastEventID: lastEventID) })
            }
            for future in futures {
                do {
                    try await future.get()
                    result.opened += 1
                } catch {
                    result.failed += 1
                }
            }
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
        for (loop, pool) in zip(loops, pools) {
            try await loop.submit { pool.value.stats.beginWindow(bounds) }.get()
        }
        if let publishers {
            try await publishers.eventLoop.submit {
                publishers.value.window = PublishCounters()
                publishers.value.bounds = bounds
            }.get()
        }
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
        for (loop, pool) in zip(loops, pools) {
            total.add(try await loop.submit { pool.value.stats.endWindow() }.get())
        }
        return (total, publish)
    }

    /// Counters since the start, over all loops.
    func lifetime() async throws -> LoadCounters {
        var total = LoadCounters()
        for (loop, pool) in zip(loops, pools) {
            total.add(try await loop.submit { pool.value.stats.lifetime }.get())
        }
        return total
    }

    /// Streams open now.
    func openStreams() async throws -> Int {
        var total = 0
        for (loop, pool) in zip(loops, pools) {
            total += try await loop.submit { pool.value.stats.openStreams }.get()
        }
        return total
    }

    /// Creates a publisher pool with `connections` connections on the first loop.
    func publishers(connections: Int, token: String?, body: PublishBody, pipeline: Int = 1) async throws -> NIOLoopBound<PublisherPool> {
        let loop = loops[0]
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
        for (loop, pool) in zip(loops, pools) {
            try? await loop.flatSubmit { pool.value.closeAll() }.get()
        }
    }

    func shutdown() async {
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
