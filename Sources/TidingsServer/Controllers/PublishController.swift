import Foundation
public import Hummingbird
import Logging
import NIOCore
import Metrics
import TidingsCore

/// `POST /events`: publish one event or a batch.
public struct PublishController: Sendable {
    public typealias Context = TidingsRequestContext
    let gateway: Gateway

    public init(gateway: Gateway) {
        self.gateway = gateway
    }

    public func addRoutes(to router: Router<Context>) {
        router.post("/events", use: publish)
    }

    @Sendable func publish(_ request: Request, context: Context) async throws -> Response {
        gateway.metrics.publishRequests.increment()
        let started = ContinuousClock.now
        defer { gateway.metrics.recordPublishDuration(since: started) }
        do {
            return try await handle(request)
        } catch let problem as Problem {
            gateway.metrics.publishRejected.increment()
            throw problem
        }
    }

    private func handle(_ request: Request) async throws -> Response {
        // The steps of `PublishRules`, in its order (the inline path takes the same).
        let rules = PublishRules(gateway.configuration)
        let head = PublishRules.Head(request.headers)
        let publisher = try await gateway.publisher(credential: try PublishRules.credential(head))
        try rules.checkHead(head)
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: rules.maxBody)
        } catch is NIOTooManyBytesError {
            throw Self.bodyTooLarge(rules.maxBody)
        }
        let decoded = try rules.decide(body: body, publisher: publisher)
        let ids = try await persist(decoded, by: publisher)
        return Response(status: .accepted, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: Self.acceptedBody(ids: ids, isBatch: decoded.isBatch)))
    }

    /// Stores validated events for `publisher` (a WebSocket's `publish`).
    /// - Throws: a ``Problem``: 403 when it may not publish to every target, 503 when the store
    ///   failed (nothing stored) or the outcome of its commit is unknown.
    func store(_ decoded: PublishRequest, by publisher: Publisher) async throws -> [EventID] {
        try PublishRules.authorize(decoded, publisher: publisher)
        return try await persist(decoded, by: publisher)
    }

    /// Stores events whose targets were checked.
    /// - Throws: a ``Problem``: 503 when the store failed (nothing stored) or the outcome of its
    ///   commit is unknown.
    private func persist(_ decoded: PublishRequest, by publisher: Publisher) async throws -> [EventID] {
        do {
            return try await gateway.store.publish(decoded.events, publisher: publisher.id)
        } catch {
            throw Self.problem(storing: error, logger: gateway.logger)
        }
    }

    /// The answer to a store that failed, logged: 503, nothing stored or the outcome unknown.
    static func problem(storing error: any Error, logger: Logger) -> Problem {
        if error is CommitOutcomeUnknownError {
            logger.error("publish outcome unknown: the database connection was lost during COMMIT")
            return Problem.outcomeUnknown
        }
        logger.error("publish failed", metadata: ["error.type": "\(String(reflecting: type(of: error)))", "error": "\(error)"])
        return Problem.unavailable("the event store is unavailable; nothing was stored, retry later", retryAfter: 2)
    }

    /// The 202 body: `{"id":"…"}` for one event, `{"ids":[…]}` for a batch.
    static func acceptedBody(ids: [EventID], isBatch: Bool) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(isBatch ? 10 + ids.count * 22 : 32)
        if isBatch {
            buffer.writeStaticString(#"{"ids":["#)
            for (index, id) in ids.enumerated() {
                buffer.writeStaticString(index == 0 ? "\"" : ",\"")
                buffer.writeString(String(id))
                buffer.writeStaticString("\"")
            }
            buffer.writeStaticString("]}")
        } else {
            buffer.writeStaticString(#"{"id":""#)
            buffer.writeString(String(ids[0]))
            buffer.writeStaticString(#""}"#)
        }
        return buffer
    }

    /// `application/json` or `application/<something>+json`, parameters ignored, case-insensitive.
    static func isJSON(_ contentType: String?) -> Bool {
        guard let contentType else { return false }
        var mediaType = contentType.utf8.prefix { $0 != UInt8(ascii: ";") }[...]
        while mediaType.last == UInt8(ascii: " ") || mediaType.last == UInt8(ascii: "\t") { mediaType = mediaType.dropLast() }
        while mediaType.first == UInt8(ascii: " ") || mediaType.first == UInt8(ascii: "\t") { mediaType = mediaType.dropFirst() }
        let lowered = mediaType.map { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") ? $0 | 0x20 : $0 }
        let application = Array("application/".utf8)
        guard lowered.starts(with: application) else { return false }
        return lowered == Array("application/json".utf8) || (lowered.count > application.count + 5 && lowered.suffix(5).elementsEqual("+json".utf8))
    }

    static func bodyTooLarge(_ limit: Int) -> Problem {
        Problem(.contentTooLarge, type: "body-too-large", title: "Content Too Large",
                detail: "the body is larger than --max-body (\(limit) bytes)")
    }
}
