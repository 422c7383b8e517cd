import Foundation
import HTTPTypes
import Metrics
import Hummingbird
import NIOCore
import TidingsCore

/// What every transport's stream request carries, checked the same way for `GET /events`,
/// `GET /ws` and `GET /poll`: the subscriber, the stream's targets and the resume point.
struct StreamRequest: Sendable {
    let subscriber: Subscriber
    /// `user:<sub>` first, then each allowed `topic` once.
    let targets: [Target]
    let resumePoint: EventID?

    /// - Throws: a ``Problem``: 401 without a valid identity, 400 for a bad topic name or resume
    ///   point, 403 for a topic the claims do not allow.
    static func parse(_ request: Request, gateway: Gateway) async throws -> StreamRequest {
        let subscriber = try await identify(request, gateway: gateway)
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
        return StreamRequest(subscriber: subscriber, targets: targets, resumePoint: try resumePoint(request))
    }

    /// The token's expiry as a monotonic deadline.
    var expiresAt: NIODeadline? {
        subscriber.expiresAt.map { date in
            NIODeadline.now() + .milliseconds(Int64(date.timeIntervalSinceNow * 1000))
        }
    }

    /// Registers the stream on the bus.
    /// - Throws: a 503 ``Problem`` at a connection limit or during shutdown.
    func subscribe(
        on gateway: Gateway, hold: Bool, transport: StreamTransport, keepAlive: Subscription.KeepAlive = .whenIdle,
        interrupt: (@Sendable () -> Void)? = nil
    ) throws -> (subscription: Subscription, horizon: EventID) {
        do {
            return try gateway.bus.subscribe(
                user: subscriber.user, targets: targets, expiresAt: expiresAt, hold: hold, transport: transport, keepAlive: keepAlive,
                interrupt: interrupt)
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
    }

    /// Identity from, in order: `Authorization: Bearer`, a one-time `ticket`, the `tidings_token`
    /// cookie, and `access_token` (only with `--allow-query-token`).
    private static func identify(_ request: Request, gateway: Gateway) async throws -> Subscriber {
        do {
            if let bearer = request.bearerCredential {
                guard !bearer.isEmpty else { throw AuthError.invalid("the Authorization header must be \"Bearer <token>\"") }
                return try await gateway.authenticator.subscriber(token: bearer)
            }
            // An explicit ticket wins over the ambient cookie (and is consumed).
            if let ticket = request.query("ticket") {
                guard let grant = try await gateway.tickets.redeem(ticket) else {
                    throw AuthError.invalid("the ticket is unknown, expired or already used")
                }
                return Subscriber(user: grant.user, topicPatterns: grant.topics, expiresAt: grant.tokenExpiresAt)
            }
            if let cookie = request.tokenCookie {
                try request.checkCookieOrigin(allowed: gateway.configuration.corsOrigins)
                return try await gateway.authenticator.subscriber(token: cookie)
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
