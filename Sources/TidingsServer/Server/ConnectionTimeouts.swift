import Logging
import NIOCore
import NIOHTTP1

/// `--request-timeout` and `--idle-timeout` of one HTTP/1.1 connection.
struct ConnectionTimeouts: Sendable {
    /// A request's head and body must arrive within it: from the connection's start for the
    /// first request, from its first byte for the next ones.
    var request: TimeAmount
    /// A keep-alive connection with no request in progress is closed after it.
    var idle: TimeAmount

    init(request: TimeAmount, idle: TimeAmount) {
        self.request = request
        self.idle = idle
    }

    init(_ configuration: TidingsConfiguration) {
        self.init(
            request: .milliseconds(configuration.requestTimeout.milliseconds),
            idle: .milliseconds(configuration.idleTimeout.milliseconds))
    }
}

/// Which deadline a connection is under: a plain struct whose events return the timer to arm,
/// so every interleaving is testable without a socket.
///
/// A request in progress (head or body still arriving) is under `--request-timeout`; while
/// requests are being answered none runs (a long poll, an SSE stream before its handoff; with
/// pipelining several may be outstanding); a connection between requests is under
/// `--idle-timeout`. Once the connection carries a stream (a WebSocket upgrade; SSE streams
/// leave for a channel of their own) it is under none for good.
struct ConnectionTimerStateMachine: Equatable {
    enum Timer: Equatable {
        case request
        case idle
        case none
    }

    /// What to do with the connection's timer.
    enum Action: Equatable {
        case keep
        case arm(Timer)
    }

    /// No request has arrived yet: the first one's clock runs from the connection's start.
    private(set) var beforeFirstRequest = true
    /// Bytes of a request whose end has not arrived came.
    private(set) var receiving = false
    /// Requests that arrived and whose answer has not been written yet.
    private(set) var outstanding = 0
    /// The connection carries a stream.
    private(set) var isOff = false

    /// The connection started: the first request must arrive within the request timeout.
    func started() -> Action {
        .arm(.request)
    }

    /// Bytes came from the client.
    mutating func bytesArrived() -> Action {
        guard !isOff, !receiving else { return .keep }
        receiving = true
        // Behind an outstanding request (pipelined) nothing is timed until it is answered.
        return beforeFirstRequest || outstanding > 0 ? .keep : .arm(.request)
    }

    /// A request's end (head and body) arrived.
    mutating func requestReceived() -> Action {
        guard !isOff else { return .keep }
        beforeFirstRequest = false
        receiving = false
        outstanding += 1
        return .arm(.none)
    }

    /// A response's end was written.
    mutating func responseSent() -> Action {
        // An answer before its request ended (a refusal): the request's clock runs on.
        guard !isOff, outstanding > 0 else { return .keep }
        outstanding -= 1
        if outstanding > 0 { return .keep }
        return .arm(receiving ? .request : .idle)
    }

    /// The connection now carries a stream.
    mutating func streamStarted() -> Action {
        isOff = true
        return .arm(.none)
    }
}

/// Holds a connection's deadline and performs what ``ConnectionTimerStateMachine`` decides:
/// closes the connection when the deadline passes. Only used on the connection's event loop.
///
/// A keep-alive connection arms and disarms its deadline for every request; scheduling (and
/// cancelling) a NIO task each time would cost two heap-ordered timer operations per request, so
/// the deadline is a plain value and at most one task is scheduled: when it fires early (the
/// deadline moved on) it schedules itself again for the current deadline.
final class ConnectionTimer {
    private let timeouts: ConnectionTimeouts
    private let channel: any Channel
    private let logger: Logger
    private var machine = ConnectionTimerStateMachine()
    /// When the connection is closed, and why; nil: not timed now.
    private var deadline: (at: NIODeadline, reason: String)?
    private var scheduled: (task: Scheduled<Void>, at: NIODeadline)?

    init(timeouts: ConnectionTimeouts, channel: any Channel, logger: Logger) {
        self.timeouts = timeouts
        self.channel = channel
        self.logger = logger
    }

    func started() { perform(machine.started()) }
    func bytesArrived() { perform(machine.bytesArrived()) }
    func requestReceived() { perform(machine.requestReceived()) }
    func responseSent() { perform(machine.responseSent()) }

    /// The connection carries a stream, or closed: nothing is timed any more.
    func streamStarted() {
        perform(machine.streamStarted())
        scheduled?.task.cancel()
        scheduled = nil
    }

    private func perform(_ action: ConnectionTimerStateMachine.Action) {
        guard case .arm(let timer) = action else { return }
        switch timer {
        case .none:
            deadline = nil  // a task still scheduled finds nothing to do
        case .request:
            arm(.now() + timeouts.request, reason: "request_timeout")
        case .idle:
            arm(.now() + timeouts.idle, reason: "idle_timeout")
        }
    }

    private func arm(_ at: NIODeadline, reason: String) {
        deadline = (at, reason)
        if let scheduled, scheduled.at <= at { return }  // it fires first and reschedules
        scheduled?.task.cancel()
        schedule(at: at)
    }

    private func schedule(at: NIODeadline) {
        let loop = channel.eventLoop
        let bound = NIOLoopBound(self, eventLoop: loop)
        scheduled = (loop.scheduleTask(deadline: at) { bound.value.fired() }, at)
    }

    private func fired() {
        scheduled = nil
        guard let deadline else { return }
        guard NIODeadline.now() >= deadline.at else {
            schedule(at: deadline.at)
            return
        }
        logger.debug("connection closed", metadata: ["tidings.reason": .string(deadline.reason)])
        self.deadline = nil
        channel.close(promise: nil)
    }
}

/// Nearest the socket: tells the timer when bytes arrive (a request starts, or trickles in).
final class ConnectionBytesHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    let timer: ConnectionTimer

    init(timer: ConnectionTimer) {
        self.timer = timer
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { timer.started() }
    }

    func channelActive(context: ChannelHandlerContext) {
        timer.started()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        timer.bytesArrived()
        context.fireChannelRead(data)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer.streamStarted()  // nothing more to time
        context.fireChannelInactive()
    }
}

/// Behind the HTTP/1.1 decoder: tells the timer when a request has fully arrived and when its
/// answer was written.
final class ConnectionMessagesHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart
    let timer: ConnectionTimer

    init(timer: ConnectionTimer) {
        self.timer = timer
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) { timer.requestReceived() }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { timer.responseSent() }
        context.write(data, promise: promise)
    }
}
