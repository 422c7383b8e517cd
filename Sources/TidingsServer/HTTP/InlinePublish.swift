import Foundation
import HTTPTypes
import Metrics
import NIOCore
import NIOHTTPTypes
import Synchronization
import TidingsCore

/// `POST /events` answered by the connection's event loop, without Hummingbird's task.
///
/// Hummingbird serves each request from a task on Swift's cooperative pool: two thread hops per
/// request, and one flush per response. Here the common case is answered by the event loop that
/// read it. With the memory store a valid publish needs no suspension: it is answered where it
/// was read, and the answers to everything one read delivered (a pipelining publisher) go out in
/// one write. With PostgreSQL the events go to the store's group commit from the event loop, and
/// the thread that committed hands the answer back to it: no task in between.
///
/// Only a request that is certain to be valid is taken here: `POST /events` from a publish key
/// or an already verified token, JSON within the limits, every target allowed. Anything else —
/// an error, a CORS request, `Connection` or `Expect` headers, a client that leaves its answers
/// unread — goes to Hummingbird as it came, so every error answer stays the router's own; only
/// the store's own failure (`503`) is answered here, with the problem the router answers.
///
/// Answers keep the order of the requests, and a connection's publishes are stored in order,
/// one after the other, as the router does: ids follow the order of a pipelining publisher's
/// requests. While a request handed to Hummingbird has not been answered, later requests go to
/// Hummingbird too (and nothing pipelined behind `GET /events` is ever served). While the store
/// has a publish of the connection, later publishes wait here for their turn; a request for
/// Hummingbird is held back, and the connection not read, until they are all answered.
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

    /// Most publishes waiting for the store before the connection is no longer read.
    static let maxAwaited = 64

    private let publisher: InlinePublisher
    private var state = State.idle
    /// Requests handed to Hummingbird whose answer has not ended yet.
    private var unanswered = 0
    private var needsFlush = false
    private var remembered: (credential: String, publisher: Publisher)?
    /// Publishes for the store, in request order: the first is with the store, the others wait.
    private var awaited = CircularBuffer<(request: PublishRequest, publisher: Publisher)>()
    /// Parts of requests for Hummingbird that came while answers were awaited, in order.
    private var held: [HTTPRequestPart] = []
    /// A read was asked for while the connection was not to be read.
    private var readPending = false
    /// The server began to shut down while publishes were with the store: Hummingbird, which
    /// never saw them, would close the connection under their answers, so it hears of the
    /// shutdown once they are written (and takes no new publish here meanwhile).
    private var quiesceHeld = false

    init(publisher: InlinePublisher) {
        self.publisher = publisher
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch part {
        case .head(let head):
            if unanswered == 0, held.isEmpty, !quiesceHeld, context.channel.isWritable,
                let publisher = publisher.accepts(head, remembered: &remembered)
            {
                state = .collecting(head, publisher, nil)
            } else {
                state = .forwarding
                route(part, context: context)
            }
        case .body(let chunk):
            guard case .collecting(let head, let from, var body) = state else {
                route(part, context: context)
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
                route(part, context: context)
                return
            }
            guard let decoded = publisher.decide(body: body, from: from) else {
                forward(head, body: body, context: context)
                route(part, context: context)
                return
            }
            if publisher.answersAtOnce {
                write(publisher.publishNow(decoded, from: from), context: context)
                needsFlush = true
                return
            }
            awaited.append((decoded, from))
            if awaited.count == 1 { store(decoded, from: from, context: context) }
        }
    }

    /// Hands the connection's next publish to the store; the thread that stored it hands the
    /// answer back to the event loop.
    private func store(_ request: PublishRequest, from: Publisher, context: ChannelHandlerContext) {
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let boundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        publisher.publishLater(request, from: from) { answer in
            handler.eventLoop.execute { handler.value.received(answer, context: boundContext.value) }
        }
    }

    /// The store answered the first awaited publish: it is written, and the next one goes.
    private func received(_ answer: InlineAnswer, context: ChannelHandlerContext) {
        awaited.removeFirst()
        write(answer, context: context)
        context.flush()
        if let next = awaited.first {
            store(next.request, from: next.publisher, context: context)
            return resumeReading(context: context)
        }
        // Requests held for Hummingbird go on now, as if just read (one may be a publish again).
        let parts = held
        held = []
        for part in parts { channelRead(context: context, data: wrapInboundOut(part)) }
        if !parts.isEmpty { context.fireChannelReadComplete() }
        if quiesceHeld, awaited.isEmpty, held.isEmpty {
            quiesceHeld = false
            context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        }
        resumeReading(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent, !awaited.isEmpty || !held.isEmpty {
            quiesceHeld = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func write(_ answer: InlineAnswer, context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(answer.head)), promise: nil)
        context.write(wrapOutboundOut(.body(answer.body)), promise: nil)
        context.write(wrapOutboundOut(.end(nil)), promise: nil)
    }

    /// A part for Hummingbird: passed on, or held while answers are awaited.
    private func route(_ part: HTTPRequestPart, context: ChannelHandlerContext) {
        guard awaited.isEmpty, held.isEmpty else {
            held.append(part)
            return
        }
        if case .head = part { unanswered += 1 }
        context.fireChannelRead(wrapInboundOut(part))
    }

    /// Hands the part of a request read so far to Hummingbird.
    private func forward(_ head: HTTPRequest, body: ByteBuffer?, context: ChannelHandlerContext) {
        route(.head(head), context: context)
        if let body { route(.body(body), context: context) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        guard held.isEmpty, awaited.count < Self.maxAwaited else {
            readPending = true
            return
        }
        context.read()
    }

    private func resumeReading(context: ChannelHandlerContext) {
        guard readPending, held.isEmpty, awaited.count < Self.maxAwaited else { return }
        readPending = false
        context.read()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // (Hummingbird also answers a request it could not parse, which it never got as a head.)
        if case .end = unwrapOutboundIn(data), unanswered > 0 { unanswered -= 1 }
        context.write(data, promise: promise)
    }
}

/// A response the inline path writes: its head and whole body.
struct InlineAnswer: Sendable {
    var head: HTTPResponse
    var body: ByteBuffer

    /// The router's answer: `headers` (its own), then the length, date and server name.
    init(status: HTTPResponse.Status, headers: HTTPFields, body: ByteBuffer) {
        var fields = headers
        fields[.contentLength] = String(body.readableBytes)
        fields[.date] = HTTPDate.now()
        fields[.server] = InlinePublisher.serverName
        self.head = HTTPResponse(status: status, headerFields: fields)
        self.body = body
    }

    static func accepted(ids: [EventID], isBatch: Bool) -> InlineAnswer {
        InlineAnswer(status: .accepted, headers: [.contentType: "application/json"],
                     body: PublishController.acceptedBody(ids: ids, isBatch: isBatch))
    }

    init(_ problem: Problem) {
        self.init(status: problem.status, headers: problem.responseHeaders,
                  body: (try? problem.body()) ?? ByteBuffer())
    }
}

/// What the inline path checks and does: the steps of ``PublishRules`` (the router's), for the
/// requests it can answer without Hummingbird.
struct InlinePublisher: Sendable {
    static let serverName = "tidings"

    let gateway: Gateway
    /// The memory store, which answers without suspending; nil with PostgreSQL.
    private let memory: MemoryEventStore?
    let rules: PublishRules
    var maxBody: Int { rules.maxBody }
    private let checksOrigin: Bool

    init(gateway: Gateway) {
        self.gateway = gateway
        self.memory = gateway.store as? MemoryEventStore
        self.rules = PublishRules(gateway.configuration)
        self.checksOrigin = !gateway.configuration.corsOrigins.isEmpty
    }

    /// True when the store answers at once (``publishNow(_:from:)``), false when later
    /// (``publishLater(_:from:answer:)``).
    var answersAtOnce: Bool { memory != nil }

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

    /// The request to store, counted; nil, having stored nothing, when the body would be
    /// refused (the router answers it).
    func decide(body: ByteBuffer?, from publisher: Publisher) -> PublishRequest? {
        guard let decoded = try? rules.decide(body: body, publisher: publisher) else { return nil }
        gateway.metrics.publishRequests.increment()
        gateway.inlinePublishes.add(1, ordering: .relaxed)
        return decoded
    }

    /// Stores the events in the memory store; returns the 202.
    func publishNow(_ decoded: PublishRequest, from publisher: Publisher) -> InlineAnswer {
        let started = ContinuousClock.now
        defer { gateway.metrics.recordPublishDuration(since: started) }
        let ids = memory!.publishNow(decoded.events, publisher: publisher.id)
        return .accepted(ids: ids, isBatch: decoded.isBatch)
    }

    /// Hands the events to the store; `answer` gets the 202, or the router's problem when the
    /// store failed, on the thread that finished.
    func publishLater(_ decoded: PublishRequest, from publisher: Publisher, answer: @escaping @Sendable (InlineAnswer) -> Void) {
        let started = ContinuousClock.now
        let gateway = self.gateway
        gateway.store.publish(decoded.events, publisher: publisher.id) { result in
            defer { gateway.metrics.recordPublishDuration(since: started) }
            switch result {
            case .success(let ids):
                answer(.accepted(ids: ids, isBatch: decoded.isBatch))
            case .failure(let error):
                gateway.metrics.publishRejected.increment()
                answer(InlineAnswer(PublishController.problem(storing: error, logger: gateway.logger)))
            }
        }
    }
}
