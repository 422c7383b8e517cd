import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import NIOWebSocket

/// The gateway's HTTP/1.1 connections, with the upgrade of `GET /ws` to a WebSocket.
///
/// Built like hummingbird-websocket's `HTTP1WebSocketUpgradeChannel` (the upgrade inside
/// Hummingbird's own child channel, NIO's `NIOTypedWebSocketServerUpgrader` doing the handshake),
/// with two differences the contract needs: a refused upgrade is answered with the same status
/// and problem document as `GET /events` (`400`, `401`, `403`, `503`) rather than a bare `400`, and
/// an upgraded connection needs no task of its own afterwards — its stream lives on the
/// channel's handlers (``WebSocketEndpoint``), like an SSE stream after its handoff.
struct TidingsHTTPChannel: ServerChildChannel, HTTPChannelHandler {
    enum Negotiated: Sendable {
        /// Plain HTTP: served by Hummingbird's responder.
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// An upgrade to `/ws` the checks refused: answer the problem, then close.
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, Problem)
        /// A WebSocket stream: it runs on the channel's handlers.
        case webSocket
    }

    struct Value: ServerChildChannelValue {
        let negotiated: EventLoopFuture<Negotiated>
        let channel: any Channel
    }

    let responder: HTTPChannelHandler.Responder
    let configuration: HTTP1Channel.Configuration
    let webSocket: WebSocketEndpoint
    /// Largest client frame or message (`--max-body`).
    let maxFrameSize: Int
    /// `--request-timeout` and `--idle-timeout`.
    let timeouts: ConnectionTimeouts

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let loop = channel.eventLoop
            let refusal = NIOLoopBoundBox<Problem?>(nil, eventLoop: loop)
            let opening = NIOLoopBoundBox<WebSocketEndpoint.Opening?>(nil, eventLoop: loop)
            let webSocket = self.webSocket
            let timer = ConnectionTimer(timeouts: timeouts, channel: channel, logger: logger)
            let bytes = ConnectionBytesHandler(timer: timer)
            try channel.pipeline.syncOperations.addHandler(bytes)
            let malformed = MalformedRequestHandler()
            let timed = NIOLoopBound((timer: timer, bytes: bytes, malformed: malformed), eventLoop: loop)
            let upgrader = NIOTypedWebSocketServerUpgrader<Negotiated>(
                maxFrameSize: maxFrameSize,
                shouldUpgrade: { channel, head in
                    guard let request = try? HTTPRequest(head, secure: false, splitCookie: false),
                          WebSocketEndpoint.matches(request)
                    else { return channel.eventLoop.makeSucceededFuture(nil) }
                    // The upgrade's head arrived: checking it (the token) is not the client's time.
                    timed.value.timer.requestReceived()
                    let promise = channel.eventLoop.makePromise(of: Result<WebSocketEndpoint.Opening, Problem>.self)
                    promise.completeWithTask {
                        do {
                            return .success(try await webSocket.open(request, channel: channel))
                        } catch let problem as Problem {
                            return .failure(problem)
                        }
                    }
                    // Back on the event loop, where the boxes live.
                    return promise.futureResult.map { opened -> HTTPHeaders? in
                        switch opened {
                        case .success(let opened):
                            opening.value = opened
                            return HTTPHeaders()
                        case .failure(let problem):
                            refusal.value = problem
                            return nil
                        }
                    }
                },
                upgradePipelineHandler: { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        guard let opened = opening.value else { throw ChannelError.inappropriateOperationForState }
                        // A stream is not timed: its keep-alives tell whether the peer is there.
                        timed.value.timer.streamStarted()
                        channel.pipeline.syncOperations.removeHandler(timed.value.bytes, promise: nil)
                        channel.pipeline.syncOperations.removeHandler(timed.value.malformed, promise: nil)
                        try webSocket.start(opened, on: channel)
                        return Negotiated.webSocket
                    }
                })
            let upgrade = NIOTypedHTTPServerUpgradeConfiguration<Negotiated>(
                upgraders: [upgrader],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ConnectionMessagesHandler(timer: timed.value.timer))
                        try channel.pipeline.syncOperations.addHandler(ClientGoneHandler())
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandlers(configuration.additionalChannelHandlers())
                        try channel.pipeline.syncOperations.addHandler(
                            HTTPConnectionStateHandler(idleTimeout: configuration.idleTimeout.map { .init($0) }, logger: logger))
                        let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                        if let problem = refusal.value { return .refused(asyncChannel, problem) }
                        return .http(asyncChannel)
                    }
                })
            var pipeline = NIOUpgradableHTTPServerPipelineConfiguration<Negotiated>(upgradeConfiguration: upgrade)
            pipeline.enablePipelining = false  // Hummingbird serves requests in order itself
            pipeline.enableErrorHandling = false  // MalformedRequestHandler and Hummingbird do
            pipeline.enableResponseHeaderValidation = false  // HTTP types validate already
            pipeline.decoderConfiguration.maxHeaderFieldSize = configuration.httpDecoder.maxHeaderFieldSize
            pipeline.decoderConfiguration.maxHeaderListSize = configuration.httpDecoder.maxHeaderListSize
            pipeline.decoderConfiguration.maxHeaderFieldCount = configuration.httpDecoder.maxHeaderFieldCount
            let negotiated = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(configuration: pipeline)
            // Right behind the parser: it answers what the parser refuses, for every request.
            let decoder = try channel.pipeline.syncOperations.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try channel.pipeline.syncOperations.addHandler(malformed, position: .after(decoder.handler))
            return Value(negotiated: negotiated, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.negotiated.get() {
            case .http(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refused(let http, let problem):
                await refuse(http, with: problem, logger: logger)
            case .webSocket:
                // The stream's handlers own the connection from here; no task waits for it.
                break
            }
        } catch {
            logger.debug("connection ended before its first request was served", metadata: ["error.type": "\(String(reflecting: type(of: error)))"])
            value.channel.close(promise: nil)
        }
    }

    /// Answers a refused upgrade with its problem and closes the connection.
    private func refuse(_ http: NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, with problem: Problem, logger: Logger) async {
        do {
            try await http.executeThenClose { _, outbound in
                let body = try problem.body()
                var headers = problem.responseHeaders
                headers[.contentLength] = String(body.readableBytes)
                headers[.connection] = "close"
                try await outbound.write(contentsOf: [
                    .head(HTTPResponse(status: problem.status, headerFields: headers)), .body(body), .end(nil),
                ])
            }
        } catch {
            logger.trace("the refused upgrade's answer could not be written", metadata: ["error.type": "\(String(reflecting: type(of: error)))"])
        }
    }
}
