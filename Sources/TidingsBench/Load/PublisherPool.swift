import Histogram
import NIOCore
import NIOPosix

/// How publishers send.
enum PublishMode: Sendable {
    /// Not sending on its own (only `publishOnce`).
    case manual
    /// About `eventsPerSecond` events per second over all connections.
    case rate(Double)
    /// Each connection sends its next request as soon as the previous one is answered.
    case flatOut
}

/// What publishers saw.
struct PublishCounters: Sendable {
    var requests = 0
    /// Requests answered `202`.
    var accepted = 0
    /// Events in accepted requests.
    var acceptedEvents = 0
    var rejected: [Int: Int] = [:]
    var connectionErrors = 0
    /// Publish round trip (request written → response read), microseconds.
    var roundTrip = Histogram<UInt64>(highestTrackableValue: LoadCounters.latencyLimitMicros, numberOfSignificantValueDigits: .three)
    var lastError: String?

    mutating func add(_ other: PublishCounters) {
        requests += other.requests
        accepted += other.accepted
        acceptedEvents += other.acceptedEvents
        for (code, count) in other.rejected { rejected[code, default: 0] += count }
        connectionErrors += other.connectionErrors
        roundTrip.add(other.roundTrip)
        lastError = lastError ?? other.lastError
    }
}

/// Keep-alive publishing connections on one event loop; one request in flight per connection.
final class PublisherPool {
    typealias Completion = (Int, String) -> Void

    let loop: any EventLoop
    let endpoint: Endpoint
    let token: String?
    let body: PublishBody
    /// Requests in flight per connection (HTTP/1.1 pipelining when more than 1).
    let pipeline: Int
    private(set) var mode = PublishMode.manual
    private var idle: [PublisherHandler] = []
    private var all: [ObjectIdentifier: PublisherHandler] = [:]
    private var waiting: [(ByteBuffer, Int, Completion?)] = []
    private var sequence: UInt64 = 0
    private var sentEvents = 0
    private var started: UInt64 = 0
    private var running = false
    private var tickInterval = TimeAmount.milliseconds(5)
    private var scratch = ByteBufferAllocator().buffer(capacity: 1024)
    /// Set for a measurement: requests sent inside it are counted, and their answers whenever
    /// they arrive (as subscribers count the events those requests carry).
    var bounds: MeasurementWindow?
    private func inWindow(_ instant: UInt64 = MeasurementWindow.now) -> Bool {
        bounds?.contains(instant) ?? false
    }
    var window = PublishCounters()
    var lifetime = PublishCounters()
    /// Events the rate asked for that no idle connection could take (the server answered slower
    /// than the rate needs with this many connections).
    private(set) var behind = 0

    init(loop: any EventLoop, endpoint: Endpoint, token: String?, body: PublishBody, pipeline: Int = 1) {
        self.loop = loop
        self.endpoint = endpoint
        self.token = token
        self.body = body
        self.pipeline = max(1, pipeline)
    }

    /// Opens `count` keep-alive connections.
    func connect(count: Int) -> EventLoopFuture<Void> {
        let bound = NIOLoopBound(self, eventLoop: loop)
        let futures = (0..<count).map { _ in
            ClientBootstrap(group: loop)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.seconds(10))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(PublisherHandler(pool: bound.value))
                    }
                }
                .connect(host: endpoint.host, port: endpoint.port)
                .map { _ in }
        }
        return EventLoopFuture.andAllSucceed(futures, on: loop)
    }

    var connectionCount: Int { all.count }

    /// Starts sending in `mode`.
    func start(_ mode: PublishMode) {
        self.mode = mode
        running = true
        started = NIODeadline.now().uptimeNanoseconds
        sentEvents = 0
        switch mode {
        case .manual:
            break
        case .flatOut:
            while let handler = idle.popLast() { sendGenerated(on: handler) }
        case .rate(let perSecond):
            let interval = 1.0 / max(perSecond, 0.001)
            tickInterval = .nanoseconds(Int64(min(max(interval, 0.001), 0.01) * 1e9))
            tick()
        }
    }

    /// Stops generating requests (those in flight complete).
    func stop() {
        running = false
        mode = .manual
    }

    /// Sends one prepared body; `completion` gets the status and the response body.
    func publishOnce(_ json: ByteBuffer, events: Int, completion: Completion?) {
        if let handler = idle.popLast() {
            send(json, events: events, on: handler, completion: completion)
        } else {
            waiting.append((json, events, completion))
        }
    }

    func closeAll() -> EventLoopFuture<Void> {
        running = false
        let handlers = Array(all.values)
        return EventLoopFuture.andAllComplete(handlers.map { $0.close() }, on: loop)
    }

    private func tick() {
        guard running, case .rate(let perSecond) = mode else { return }
        let elapsed = Double(NIODeadline.now().uptimeNanoseconds - started) / 1e9
        var due = Int(elapsed * perSecond) - sentEvents
        let batch = max(1, body.batch)
        while due >= batch, let handler = idle.popLast() {
            sendGenerated(on: handler)
            due -= batch
        }
        behind = max(behind, due / batch)
        loop.assumeIsolated().scheduleTask(in: tickInterval) { [self] in tick() }
    }

    private func sendGenerated(on handler: PublisherHandler) {
        scratch.clear()
        let now = NIODeadline.now().uptimeNanoseconds
        body.write(sequence: sequence, sentAt: now, into: &scratch)
        let events = max(1, body.batch)
        sequence += UInt64(events)
        sentEvents += events
        send(scratch, events: events, on: handler, sentAt: now, completion: nil)
    }

    /// `sentAt`: the send time the body carries (the instant the window classifies it by).
    private func send(
        _ json: ByteBuffer, events: Int, on handler: PublisherHandler, sentAt: UInt64 = MeasurementWindow.now, completion: Completion?
    ) {
        var request = handler.allocator.buffer(capacity: json.readableBytes + 256)
        RequestWriter.publish(path: endpoint.eventsPath, host: endpoint.hostHeader, token: token, body: json, into: &request)
        lifetime.requests += 1
        if inWindow(sentAt) { window.requests += 1 }
        handler.send(request, events: events, sentAt: sentAt, completion: completion)
    }

    fileprivate func ready(_ handler: PublisherHandler) {
        all[ObjectIdentifier(handler)] = handler
        // A connection is in `idle` once per free pipeline slot.
        for _ in 0..<pipeline { next(handler) }
    }

    fileprivate func completed(_ handler: PublisherHandler, status: Int, events: Int, sentAt: UInt64, now: UInt64, body: String) {
        let micros = min((now - sentAt) / 1000, LoadCounters.latencyLimitMicros)
        Self.count(&lifetime, status: status, events: events, micros: micros, body: body)
        if inWindow(sentAt) { Self.count(&window, status: status, events: events, micros: micros, body: body) }
        next(handler)
    }

    private static func count(_ counters: inout PublishCounters, status: Int, events: Int, micros: UInt64, body: String) {
        if status == 202 {
            counters.accepted += 1
            counters.acceptedEvents += events
            _ = counters.roundTrip.record(micros)
        } else {
            counters.rejected[status, default: 0] += 1
            counters.lastError = "HTTP \(status): \(body)"
        }
    }

    private func next(_ handler: PublisherHandler) {
        if !waiting.isEmpty {
            let (json, events, completion) = waiting.removeFirst()
            send(json, events: events, on: handler, completion: completion)
        } else if running, case .flatOut = mode {
            sendGenerated(on: handler)
        } else {
            idle.append(handler)
        }
    }

    fileprivate func lost(_ handler: PublisherHandler, error: String, inFlight: Bool) {
        all[ObjectIdentifier(handler)] = nil
        idle.removeAll { $0 === handler }
        lifetime.connectionErrors += 1
        lifetime.lastError = error
        if inWindow() { window.connectionErrors += 1 }
        guard running || !waiting.isEmpty else { return }
        // Replace the connection so the offered load stays the same.
        loop.assumeIsolated().scheduleTask(in: .milliseconds(100)) { [self] in
            _ = connect(count: 1)
        }
    }
}

/// One keep-alive publishing connection.
final class PublisherHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let pool: PublisherPool
    private var context: ChannelHandlerContext?
    private var reader = HTTPResponseReader()
    private var inFlight: [(sentAt: UInt64, events: Int, completion: PublisherPool.Completion?)] = []
    private var inFlightHead = 0
    private var status = 0
    private var responseBody: [UInt8] = []
    private var closed = false

    init(pool: PublisherPool) {
        self.pool = pool
    }

    var allocator: ByteBufferAllocator { context?.channel.allocator ?? ByteBufferAllocator() }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        pool.ready(self)
    }

    func send(_ request: ByteBuffer, events: Int, sentAt: UInt64, completion: PublisherPool.Completion?) {
        guard let context, !closed else {
            completion?(0, "connection closed")
            return
        }
        inFlight.append((sentAt, events, completion))
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
    }

    func close() -> EventLoopFuture<Void> {
        guard let context, !closed else { return pool.loop.makeSucceededVoidFuture() }
        closed = true
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.close(promise: promise)
        return promise.futureResult.recover { _ in }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        var completed: [(status: Int, body: String)] = []
        do {
            try buffer.withUnsafeReadableBytes { bytes in
                // Several pipelined responses can arrive in one read.
                var offset = 0
                while offset < bytes.count {
                    var finished = false
                    let used = try reader.feed(UnsafeRawBufferPointer(rebasing: bytes[offset...])) { part in
                        switch part {
                        case .head(let code):
                            status = code
                        case .body(let bytes):
                            if responseBody.count < 512 { responseBody.append(contentsOf: bytes.prefix(512 - responseBody.count)) }
                        case .end:
                            finished = true
                        }
                    }
                    offset += used
                    guard finished else { break }
                    completed.append((status, String(decoding: responseBody, as: UTF8.self)))
                    responseBody.removeAll(keepingCapacity: true)
                    reader.reset()
                }
            }
        } catch {
            context.close(promise: nil)
            return
        }
        let now = NIODeadline.now().uptimeNanoseconds
        for (status, body) in completed {
            guard inFlightHead < inFlight.count else { break }
            let (sentAt, events, completion) = inFlight[inFlightHead]
            inFlightHead += 1
            if inFlightHead == inFlight.count {
                inFlight.removeAll(keepingCapacity: true)
                inFlightHead = 0
            }
            completion?(status, body)
            pool.completed(self, status: status, events: events, sentAt: sentAt, now: max(now, sentAt), body: body)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        let pending = inFlight[inFlightHead...]
        inFlight.removeAll()
        inFlightHead = 0
        for request in pending { request.completion?(0, "connection closed") }
        if !closed {
            closed = true
            pool.lost(self, error: "publish connection closed by the server", inFlight: !pending.isEmpty)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
