import NIOCore
import NIOPosix

/// How one subscriber connects: its request path and token.
struct SubscriberSpec: Sendable {
    var path: String
    var token: String?
}

/// Why a stream could not be opened.
struct StreamOpenError: Error, CustomStringConvertible {
    var description: String
}

/// The SSE connections of one event loop.
///
/// Everything here runs on `loop`: no locks, no tasks. A stream the server ends is reopened
/// after `reconnectDelay` with `Last-Event-ID`, as a browser would, while the pool is active.
final class SubscriberPool {
    let loop: any EventLoop
    let endpoint: Endpoint
    let stats: LoopStats
    /// Reopen streams the server ends (with Last-Event-ID).
    var reconnect = true
    var reconnectDelay = TimeAmount.seconds(1)
    /// Called for every event of every stream of this pool (the replay scenario uses it).
    var observer: ((Int, ScannedEvent) -> Void)?
    private(set) var active = true
    /// Open channels by stream index.
    private var live: [Int: any Channel] = [:]

    init(loop: any EventLoop, endpoint: Endpoint, stats: LoopStats) {
        self.loop = loop
        self.endpoint = endpoint
        self.stats = stats
    }

    /// Opens one stream; the future succeeds when its `200` head arrives.
    func open(_ spec: SubscriberSpec, index: Int, lastEventID: Int64? = nil) -> EventLoopFuture<Void> {
        let ready = loop.makePromise(of: Void.self)
        let bound = NIOLoopBound(self, eventLoop: loop)
        let request = RequestWriter.subscribe(
            path: spec.path, host: endpoint.hostHeader, token: spec.token, lastEventID: lastEventID,
            allocator: ByteBufferAllocator())
        ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = SubscriberHandler(
                        pool: bound.value, spec: spec, index: index, request: request, lastEventID: lastEventID, ready: ready)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: endpoint.host, port: endpoint.port)
            .assumeIsolated()
            .whenFailure { error in
                bound.value.stats.recordFailure(.connect)
                bound.value.stats.lifetime.lastError = "connect: \(error)"
                ready.fail(StreamOpenError(description: "connect: \(error)"))
            }
        return ready.futureResult
    }

    /// Stops reconnecting and closes every stream.
    func closeAll() -> EventLoopFuture<Void> {
        active = false
        let channels = Array(live.values)
        live.removeAll()
        let closes = channels.map { channel -> EventLoopFuture<Void> in
            let promise = loop.makePromise(of: Void.self)
            channel.close(promise: promise)
            return promise.futureResult.recover { _ in }
        }
        return EventLoopFuture.andAllComplete(closes, on: loop)
    }

    var openChannels: Int { live.count }

    /// Closes stream `index` without reopening it.
    func close(index: Int) -> EventLoopFuture<Void> {
        guard let channel = live.removeValue(forKey: index) else { return loop.makeSucceededVoidFuture() }
        let promise = loop.makePromise(of: Void.self)
        channel.close(promise: promise)
        return promise.futureResult.recover { _ in }
    }

    fileprivate func added(_ channel: any Channel, index: Int) {
        live[index] = channel
    }

    /// The channel closed; false when it was closed on purpose (`close(index:)`).
    fileprivate func removed(_ channel: any Channel, index: Int) -> Bool {
        guard let current = live[index], current === channel else { return false }
        live[index] = nil
        return true
    }

    /// A stream that was open ended while the pool is active: count it and reopen it.
    fileprivate func ended(_ spec: SubscriberSpec, index: Int, lastEventID: Int64?) {
        guard active else { return }
        stats.recordFailure(.disconnect)
        guard reconnect else { return }
        loop.assumeIsolated().scheduleTask(in: reconnectDelay) { [self] in
            guard active else { return }
            _ = open(spec, index: index, lastEventID: lastEventID)
        }
    }
}

/// One SSE stream: writes the request, reads the response head, de-chunks and scans the body.
final class SubscriberHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let pool: SubscriberPool
    private let spec: SubscriberSpec
    private let index: Int
    private let request: ByteBuffer
    private let ready: EventLoopPromise<Void>
    private var reader = HTTPResponseReader()
    private var scanner = SSEScanner()
    private var status = 0
    private var isOpen = false
    private var failed = false
    private var errorBody: [UInt8] = []
    private let resumedFrom: Int64?

    init(pool: SubscriberPool, spec: SubscriberSpec, index: Int, request: ByteBuffer, lastEventID: Int64?, ready: EventLoopPromise<Void>) {
        self.pool = pool
        self.spec = spec
        self.index = index
        self.request = request
        self.ready = ready
        self.resumedFrom = lastEventID
    }

    func channelActive(context: ChannelHandlerContext) {
        pool.added(context.channel, index: index)
        context.writeAndFlush(wrapOutboundOut(request), promise: nil)
        context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(30)) { [self] in
            if !isOpen, !failed { fail(context: context, .protocolError, "no response head within 30 s") }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        var now: UInt64 = 0
        let stats = pool.stats
        let observer = pool.observer
        let index = self.index
        do {
            try buffer.withUnsafeReadableBytes { bytes in
                _ = try reader.feed(bytes) { part in
                    switch part {
                    case .head(let code):
                        status = code
                        if code == 200 {
                            isOpen = true
                            stats.openStreams += 1
                            ready.succeed(())
                        }
                    case .body(let body):
                        if isOpen {
                            scanner.scan(body) { event in
                                if now == 0 { now = NIODeadline.now().uptimeNanoseconds }
                                stats.recordEvent(event, now: now)
                                observer?(index, event)
                            }
                        } else if errorBody.count < 300 {
                            errorBody.append(contentsOf: body.prefix(300 - errorBody.count))
                        }
                    case .end:
                        break
                    }
                }
            }
        } catch {
            fail(context: context, .protocolError, "\(error)")
            return
        }
        if reader.isDone {
            if isOpen {
                context.close(promise: nil)  // the server ended the stream: reconnect from channelInactive
            } else {
                fail(context: context, .status(status), "HTTP \(status): \(String(decoding: errorBody, as: UTF8.self))")
            }
        }
    }

    private func fail(context: ChannelHandlerContext, _ failure: LoopStats.Failure, _ message: String) {
        guard !failed else { return }
        failed = true
        pool.stats.recordFailure(failure)
        pool.stats.lifetime.lastError = message
        ready.fail(StreamOpenError(description: message))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let unexpected = pool.removed(context.channel, index: index)
        if isOpen {
            isOpen = false
            pool.stats.openStreams -= 1
            if unexpected { pool.ended(spec, index: index, lastEventID: scanner.lastID ?? resumedFrom) }
        } else if !failed {
            if status != 0 {
                fail(context: context, .status(status), "HTTP \(status): \(String(decoding: errorBody, as: UTF8.self))")
            } else {
                fail(context: context, .protocolError, "the connection closed before a response")
            }
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !isOpen {
            fail(context: context, .protocolError, "\(error)")
        } else {
            context.close(promise: nil)
        }
    }
}
