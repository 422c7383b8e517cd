import HTTPTypes
import NIOCore
import NIOHTTP1

/// Answers bytes NIO's HTTP parser refuses — a broken head, request smuggling shapes
/// (`Content-Length` with `Transfer-Encoding`, two `Content-Length`s, an unknown transfer
/// coding, obs-fold), a broken chunk, headers over the limits — with a problem document and
/// `Connection: close`, then closes the connection.
///
/// It sits right behind the parser, so the answer is the same whoever serves the requests:
/// Hummingbird (which otherwise answers an empty `400` between requests, a broken body as its
/// handler's error, and nothing at all in a connection's first request, which then waits for
/// `--request-timeout`), or the inline publish path. The answer keeps the order of the
/// requests: it is written once every request received whole before the error is answered (the
/// request whose body broke is answered by it).
final class MalformedRequestHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// Requests whose head arrived and whose answer has not ended.
    private var unanswered = 0
    /// The last request's end has not arrived.
    private var receiving = false
    /// An answer's head was written, its end not yet.
    private var answering = false
    /// The parser's refusal, until it is answered.
    private var pending: HTTPParserError?
    /// This handler answered: the connection is closing, later answers are dropped.
    private var refused = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            unanswered += 1
            receiving = true
        case .body:
            break
        case .end:
            receiving = false
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !refused else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        switch unwrapOutboundIn(data) {
        case .head(let head):
            if head.status.code >= 200 { answering = true }
            context.write(data, promise: promise)
        case .body:
            context.write(data, promise: promise)
        case .end:
            answering = false
            if unanswered > 0 { unanswered -= 1 }
            context.write(data, promise: promise)
            answerIfDue(context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parseError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        // Not passed on: this handler answers it, for whoever serves the connection. Bytes after
        // a request with `Connection: close` are not answered: that connection is closing.
        guard parseError != .closedConnection else { return }
        if pending == nil, !refused { pending = parseError }
        answerIfDue(context: context)
    }

    /// Answers the refusal once no other answer is due before it.
    private func answerIfDue(context: ChannelHandlerContext) {
        guard let error = pending, !answering, unanswered - (receiving ? 1 : 0) <= 0 else { return }
        pending = nil
        let problem = Self.problem(error)
        let body = (try? problem.body()) ?? ByteBuffer()
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/problem+json")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "Connection", value: "close")
        let head = HTTPResponseHead(
            version: .http1_1, status: HTTPResponseStatus(statusCode: Int(problem.status.code)), headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        refused = true
    }

    static func problem(_ error: HTTPParserError) -> Problem {
        switch error {
        case .headerOverflow:
            Problem(.init(code: 431, reasonPhrase: "Request Header Fields Too Large"), type: "headers-too-large",
                    title: "Request Header Fields Too Large",
                    detail: "the request's headers are over the limits (80 KiB a field, 80 KiB in all, 1,000 fields); the connection is closed")
        default:
            Problem(.badRequest, type: "malformed-request", title: "Bad Request",
                    detail: "the request is not valid HTTP/1.1 (its request line, a header, or the framing of its body); the connection is closed")
        }
    }
}
