public import Hummingbird
import Logging
import Foundation
import HTTPTypes
import NIOCore
import Metrics
import TidingsCore

/// `GET /events`: one Server-Sent Events stream per request.
public struct SubscribeController: Sendable {
    public typealias Context = TidingsRequestContext
    let gateway: Gateway

    public init(gateway: Gateway) {
        self.gateway = gateway
    }

    public func addRoutes(to router: Router<Context>) {
        router.get("/events", use: subscribe)
    }

    /// Opens the stream in a child task (see ``inChildTask(_:)``): the connection's task only
    /// keeps the frames of the routing.
    @Sendable func subscribe(_ request: Request, context: Context) async throws -> Response {
        let channel = context.channel
        return try await inChildTask { try await open(request, channel: channel) }
    }

    private func open(_ request: Request, channel: any Channel) async throws -> Response {
        let subscriber = try await identify(request)
        var targets: [Target] = [.user(subscriber.user)]
        for topic in request.uri.queryParameters.getAll("topic") {
            guard Target.isValidName(topic) else {
                throw Problem.badRequest("topic \"\(topic.prefix(140))\" is not a valid topic name", type: "invalid-topic")
            }
            guard subscriber.mayRead(topic: topic) else {
                throw Problem.forbidden("the token's topics claim does not allow topic \"\(topic)\"")
            }
            if !targets.contains(.topic(topic)) { targets.append(.topic(topic)) }
        }
        let resumePoint = try Self.resumePoint(request)

        let expiresAt = subscriber.expiresAt.map { date in
            NIODeadline.now() + .milliseconds(Int64(date.timeIntervalSinceNow * 1000))
        }
        let (subscription, horizon): (Subscription, EventID)
        do {
            (subscription, horizon) = try gateway.bus.subscribe(
                user: subscriber.user, targets: targets, expiresAt: expiresAt, hold: resumePoint != nil,
                // Weak: once the stream has its own channel, Hummingbird's is closed and must
                // not be kept alive by the subscription.
                interrupt: { [weak channel] in channel?.close(promise: nil) })
        } catch {
            gateway.metrics.subscribeRejected.increment()
            switch error {
            case .tooManyConnections:
                throw Problem.unavailable("the gateway has reached --max-connections", retryAfter: 5)
            case .tooManyConnectionsForUser:
                throw Problem.unavailable("this user has reached --max-connections-per-user", retryAfter: 5)
            case .shuttingDown:
                throw Problem.unavailable("the gateway is shutting down", retryAfter: 1)
            }
        }
        gateway.logger.debug(
            "stream opened",
            metadata: [
                "tidings.user": .string(subscriber.user),
                "tidings.topics": .stringConvertible(targets.count - 1),
                "tidings.resume": resumePoint.map { .stringConvertible($0) } ?? "none",
            ])
        let stream = EventStream(
            gateway: gateway, channel: channel, subscription: subscription, targets: Set(targets),
            resumePoint: resumePoint, horizon: horizon)
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream; charset=utf-8"
        headers[.cacheControl] = "no-cache"
        headers[HTTPField.Name("X-Accel-Buffering")!] = "no"
        // The stream's connection serves nothing else and closes when the stream ends.
        headers[.connection] = "close"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                // Returns once the stream is handed to the connection's event loop (see
                // ChannelSink), which notices the client leaving; a client that leaves during
                // the replay fails its writes. The replay runs in a child task too.
                let moved = MovedToChildTask(value: writer)
                writer = try await inChildTask {
                    var writer = moved.value
                    try await stream.run(writer: &writer)
                    return MovedToChildTask(value: writer)
                }.value
            })
    }

    /// Identity from, in order: `Authorization: Bearer`, the `tidings_token` cookie, a one-time
    /// `ticket`, and `access_token` (only with `--allow-query-token`).
    private func identify(_ request: Request) async throws -> Subscriber {
        do {
            if let bearer = request.bearerCredential {
                guard !bearer.isEmpty else { throw AuthError.invalid("the Authorization header must be \"Bearer <token>\"") }
                return try await gateway.authenticator.subscriber(token: bearer)
            }
            if let cookie = request.tokenCookie {
                return try await gateway.authenticator.subscriber(token: cookie)
            }
            if let ticket = request.query("ticket") {
                guard let grant = try await gateway.tickets.redeem(ticket) else {
                    throw AuthError.invalid("the ticket is unknown, expired or already used")
                }
                return Subscriber(user: grant.user, topicPatterns: grant.topics, expiresAt: grant.tokenExpiresAt)
            }
            if let token = request.query("access_token") {
                guard gateway.configuration.allowQueryToken else {
                    throw AuthError.invalid("access_token in the URL is disabled (start the server with --allow-query-token)")
                }
                return try await gateway.authenticator.subscriber(token: token)
            }
            throw AuthError.missing
        } catch let error as AuthError {
            throw Problem.unauthorized(error.description)
        }
    }

    /// `Last-Event-ID`, else `last_event_id`; `nil` for live only.
    static func resumePoint(_ request: Request) throws -> EventID? {
        let text = request.headers[HTTPField.Name("Last-Event-ID")!] ?? request.query("last_event_id")
        guard let text, !text.isEmpty else { return nil }
        guard text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), let id = EventID(text) else {
            throw Problem.badRequest("the resume point (Last-Event-ID or last_event_id) must be a decimal integer", type: "invalid-last-event-id")
        }
        return id
    }
}
