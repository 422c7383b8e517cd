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
/// A request in progress (head or body still arriving) is under `--request-timeout`; a request
/// being answered is under none (a long poll, an SSE stream before its handoff); a connection
/// between requests is under `--idle-timeout`. Once the connection carries a stream (a WebSocket
/// upgrade; SSE streams leave for a channel of their own) it is under none for good.
struct ConnectionTimerStateMachine: Equatable {
    enum State: Equatable {
        /// Waiting for the first request (a connection that sends nothing is cut at the request
        /// timeout).
        case awaitingFirstRequest
        /// A request's head or body is arriving.
        case receiving
        /// The request arrived and is being answered; `pipelined`: bytes of the next one came.
        case answering(pipelined: Bool)
        /// Between requests.
        case idle
        /// The connection carries a stream.
        case off
    }

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

    private(set) var state = State.awaitingFirstRequest

    /// The connection started: the first request must arrive within the request timeout.
    func started() -> Action {
        .arm(.request)
    }

    /// Bytes came from the client.
    mutating func bytesArrived() -> Action {
        switch state {
        case .idle:
            state = .receiving
            return .arm(.request)
        case .answering:
            state = .answering(pipelined: true)
            return .keep
        case .awaitingFirstRequest:
            state = .receiving
            return .keep  // the first request's clock started with the connection
        case .receiving, .off:
            return .keep
        }
    }

    /// The request's end (head and body) arrived.
    mutating func requestReceived() -> Action {
        switch state {
        case .off:
            return .keep
        default:
            state = .answering(pipelined: false)
            return .arm(.none)
        }
    }

    /// The response's end was written.
    mutating func responseSent() -> Action {
        switch state {
        case .answering(pipelined: true):
            state = .receiving
            return .arm(.request)
        case .answering(pipelined: false):
            state = .idle
            return .arm(.idle)
        case .awaitingFirstRequest, .receiving, .idle, .off:
            // An answer before the request ended (a refusal): the request's clock runs on.
            return .keep
        }
    }

    /// The connection now carries a stream.
    mutating func streamStarted() -> Action {
        state = .off
        return .arm(.none)
    }
}

/// Holds a connection's timer and performs what ``ConnectionTimerStateMachine`` decides: closes
/// the connection when the deadline passes. Only used on the connection's event loop.
final class ConnectionTimer {
    private let timeouts: ConnectionTimeouts
    private let channel: any Channel
    private let logger: Logger
    private var machine = ConnectionTimerStateMachine()
    private var scheduled: Scheduled<Void>?

    init(timeouts: ConnectionTimeouts, channel: any Channel, logger: Logger) {
        self.timeouts = timeouts
        self.channel = channel
        self.logger = logger
    }

    func started() { perform(machine.started()) }
    func bytesArrived() { perform(machine.bytesArrived()) }
    func requestReceived() { perform(machine.requestReceived()) }
    func responseSent() { perform(machine.responseSent()) }
    func streamStarted() { perform(machine.streamStarted()) }

    private func perform(_ action: ConnectionTimerStateMachine.Action) {
        guard case .arm(let timer) = action else { return }
        scheduled?.cancel()
        scheduled = nil
        let (amount, reason): (TimeAmount, String)
        switch timer {
        case .none: return
        case .request: (amount, reason) = (timeouts.request, "request_timeout")
        case .idle: (amount, reason) = (timeouts.idle, "idle_timeout")
        }
        let channel = self.channel
        let logger = self.logger
        scheduled = channel.eventLoop.scheduleTask(in: amount) {
            logger.debug("connection closed", metadata: ["tidings.reason": .string(reason)])
            channel.close(promise: nil)
        }
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
