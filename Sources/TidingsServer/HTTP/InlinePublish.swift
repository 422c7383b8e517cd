import Foundation
import HTTPTypes
import Metrics
import NIOCore
import NIOHTTPTypes
import Synchronization
import TidingsCore

/// `POST /events` answered on the connection's event loop, with the memory store.
///
/// Hummingbird serves each request from a task on Swift's cooperative pool: two thread hops per
/// request, and one flush per response. With the memory store a valid publish needs no
/// suspension, so the common case is answered where it was read, and the answers to everything
/// one read delivered (a pipelining publisher) go out in one write.
///
/// Only a request that is certain to succeed is answered here: `POST /events` from a publish key
/// or an already verified token, JSON within the limits, every target allowed. Anything else —
/// an error, a CORS request, `Connection` or `Expect` headers, a client that leaves its answers
/// unread — goes to Hummingbird as it came, so every error answer stays the router's own.
/// While a request handed to Hummingbird has not been answered, later requests of the connection
/// go to Hummingbird too, so answers keep the order of the requests (and nothing pipelined behind
/// `GET /events` is ever served).
final class InlinePublishHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private enum State {
        /// Between requests.
        case idle
        /// The current request goes to Hummingbird.
        case forwarding
        /// The current request may be answered here: head and body so far.
        case collecting(HTTPRequest, Publisher, ByteBuffer?)
    }

    private let publisher: InlinePublisher
    private var state = State.idle
    /// Requests handed to Hummingbird whose answer has not ended yet.
    private var unanswered = 0
    private var needsFlush = false
    private var remembered: (credential: String, publisher: Publisher)?

    init(publisher: InlinePublisher) {
        self.publisher = publisher
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            if unanswered == 0, context.channel.isWritable, let publisher = publisher.accepts(head, remembered: &remembered) {
                state = .collecting(head, publisher, nil)
            } else {
                unanswered += 1
                state = .forwarding
                context.fireChannelRead(data)
            }
        case .body(let chunk):
            guard case .collecting(let head, let from, var body) = state else {
                context.fireChannelRead(data)
                return
            }
            state = .idle  // drop the state's reference, so `body` grows in place
            if body == nil { body = chunk } else { body!.writeImmutableBuffer(chunk) }
            if body!.readableBytes > publisher.maxBody {
                forward(head, body: body, context: context)
                state = .forwarding
            } else {
                state = .collecting(head, from, body)
            }
        case .end:
            let current = state
            state = .idle
            guard case .collecting(let head, let from, let body) = current else {
                context.fireChannelRead(data)
                return
            }
            guard let answer = publisher.publish(body: body, from: from) else {
                forward(head, body: body, context: context)
                context.fireChannelRead(data)
                return
            }
            let fields: HTTPFields = [
                .contentType: "application/json",
                .contentLength: String(answer.readableBytes),
                .date: HTTPDate.now(),
                .server: InlinePublisher.serverName,
            ]
            context.write(wrapOutboundOut(.head(HTTPResponse(status: .accepted, headerFields: fields))), promise: nil)
            context.write(wrapOutboundOut(.body(answer)), promise: nil)
            context.write(wrapOutboundOut(.end(nil)), promise: nil)
            needsFlush = true
        }
    }

    /// Hands the part of a request read so far to Hummingbird.
    private func forward(_ head: HTTPRequest, body: ByteBuffer?, context: ChannelHandlerContext) {
        unanswered += 1
        context.fireChannelRead(wrapInboundOut(.head(head)))
        if let body { context.fireChannelRead(wrapInboundOut(.body(body))) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // (Hummingbird also answers a request it could not parse, which it never got as a head.)
        if case .end = unwrapOutboundIn(data), unanswered > 0 { unanswered -= 1 }
        context.write(data, promise: promise)
    }
}

/// What the inline path checks and does: the steps of ``PublishRules`` (the router's), for the
/// requests it can answer without suspending.
struct InlinePublisher: Sendable {
    static let serverName = "tidings"

    let gateway: Gateway
    let store: MemoryEventStore
    let rules: PublishRules
    var maxBody: Int { rules.maxBody }
    private let checksOrigin: Bool

    init(gateway: Gateway, store: MemoryEventStore) {
        self.gateway = gateway
        self.store = store
        self.rules = PublishRules(gateway.configuration)
        self.checksOrigin = !gateway.configuration.corsOrigins.isEmpty
    }

    /// The publisher, when this request may be answered inline once its body is valid.
    ///
    /// - Parameter remembered: the connection's last credential and its publisher, so a
    ///   connection that publishes with one credential has it checked once.
    func accepts(_ head: HTTPRequest, remembered: inout (credential: String, publisher: Publisher)?) -> Publisher? {
        guard head.method == .post, head.path == "/events" else { return nil }
        let fields = PublishRules.Head(head.headerFields)
        // Only the router serves `Connection` (it may close), `Expect` (an interim answer) and
        // CORS requests.
        guard !fields.hasConnectionOrExpect, !(checksOrigin && fields.hasOrigin),
            let credential = try? PublishRules.credential(fields)
        else { return nil }
        let publisher: Publisher
        if let remembered, Authenticator.constantTimeEqual(remembered.credential.utf8, credential.utf8),
            remembered.publisher.expiresAt.map({ $0 > gateway.authenticator.clock.now() }) ?? true
        {
            publisher = remembered.publisher
        } else {
            guard let known = gateway.authenticator.knownPublisher(credential: credential) else { return nil }
            remembered = (credential, known)
            publisher = known
        }
        do {
            try rules.checkHead(fields)
        } catch {
            return nil
        }
        return publisher
    }

    /// Stores the events and returns the 202 body; `nil`, having stored nothing, when the body
    /// would be refused.
    func publish(body: ByteBuffer?, from publisher: Publisher) -> ByteBuffer? {
        let started = ContinuousClock.now
        defer { gateway.metrics.recordPublishDuration(since: started) }
        guard let decoded = try? rules.decide(body: body, publisher: publisher) else { return nil }
        gateway.metrics.publishRequests.increment()
        gateway.inlinePublishes.add(1, ordering: .relaxed)
        let ids = store.publishNow(decoded.events, publisher: publisher.id)
        return PublishController.acceptedBody(ids: ids, isBatch: decoded.isBatch)
    }
}
