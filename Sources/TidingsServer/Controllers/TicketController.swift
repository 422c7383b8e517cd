import Foundation
public import Hummingbird
import NIOCore
import TidingsCore

/// `POST /tickets`: a one-time ticket for `GET /events?ticket=…`, for browsers that cannot send
/// an Authorization header to another origin.
public struct TicketController: Sendable {
    public typealias Context = TidingsRequestContext
    let gateway: Gateway

    public init(gateway: Gateway) {
        self.gateway = gateway
    }

    public func addRoutes(to router: Router<Context>) {
        router.post("/tickets", use: issue)
    }

    @Sendable func issue(_ request: Request, context: Context) async throws -> Response {
        let token: String
        if let bearer = request.bearerCredential, !bearer.isEmpty {
            token = bearer
        } else if let cookie = request.tokenCookie {
            try request.checkCookieOrigin(allowed: gateway.configuration.corsOrigins)
            token = cookie
        } else {
            throw Problem.unauthorized("a ticket needs a subscriber token: Authorization: Bearer or the tidings_token cookie")
        }
        let subscriber: Subscriber
        do {
            subscriber = try await gateway.authenticator.subscriber(token: token)
        } catch {
            throw Problem.unauthorized(error.description)
        }
        let ttl = gateway.configuration.ticketTTL
        let grant = TicketGrant(user: subscriber.user, topics: subscriber.topicPatterns, tokenExpiresAt: subscriber.expiresAt)
        let ticket: String
        do {
            ticket = try await gateway.tickets.issue(grant, ttl: ttl)
        } catch {
            throw Problem.unavailable("the ticket store is unavailable", retryAfter: 2)
        }
        let seconds = max(1, Int(ttl.milliseconds / 1000))
        let json = #"{"ticket":"\#(ticket)","expires_in":\#(seconds)}"#
        return Response(
            status: .created, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: json)))
    }
}
