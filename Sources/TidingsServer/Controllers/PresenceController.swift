import Foundation
public import Hummingbird
import Logging
import NIOCore
import TidingsCore

/// `GET /presence/users/{id}` and `GET /presence/topics/{name}`: how many streams are open, over
/// every instance sharing the store, for publishers allowed to publish to the target.
public struct PresenceController: Sendable {
    public typealias Context = TidingsRequestContext
    let gateway: Gateway

    public init(gateway: Gateway) {
        self.gateway = gateway
    }

    public func addRoutes(to router: Router<Context>) {
        router.get("/presence/users/:id", use: user)
        router.get("/presence/topics/:name", use: topic)
    }

    /// `200 {"user":"42","connections":2}`
    @Sendable func user(_ request: Request, context: Context) async throws -> Response {
        let id = try await authorize(request, name: context.parameters.get("id"), kind: "user id", Target.user)
        let presence = try await ask { try await gateway.presence.user(id) }
        return Self.json(#"{"user":"\#(id)","connections":\#(presence.connections)}"#)
    }

    /// `200 {"topic":"news.eu","connections":17,"users":12}`
    @Sendable func topic(_ request: Request, context: Context) async throws -> Response {
        let name = try await authorize(request, name: context.parameters.get("name"), kind: "topic name", Target.topic)
        let presence = try await ask { try await gateway.presence.topic(name) }
        return Self.json(#"{"topic":"\#(name)","connections":\#(presence.connections),"users":\#(presence.users)}"#)
    }

    /// The id or name once the request's publisher may publish to its target: `401` or `403`
    /// for the credential, then `400` for a name that is not 1–128 characters of
    /// `[A-Za-z0-9._@:-]` (so it never needs escaping in the answer), then `403` when the
    /// publisher's patterns do not cover the target.
    private func authorize(
        _ request: Request, name: String?, kind: String, _ target: (String) -> Target
    ) async throws -> String {
        let publisher = try await gateway.publisher(of: request)
        // The router hands the path segment as sent: `%40` is `@` (an invalid escape is no name).
        guard let name = name?.removingPercentEncoding, Target.isValidName(name) else {
            throw Problem.badRequest(
                "the \(kind) \"\((name ?? "").prefix(140))\" is not 1-128 characters of A-Z a-z 0-9 . _ @ : -",
                type: "invalid-target")
        }
        guard publisher.mayPublish(to: target(name)) else {
            throw Problem.forbidden("this publisher may not publish to \(target(name)), so it may not ask its presence")
        }
        return name
    }

    private func ask<T>(_ query: () async throws -> T) async throws -> T {
        do {
            return try await query()
        } catch {
            gateway.logger.error(
                "presence query failed",
                metadata: ["error.type": "\(String(reflecting: type(of: error)))", "error": "\(error)"])
            throw Problem.unavailable("presence is unavailable: the store cannot be asked, retry later", retryAfter: 2)
        }
    }

    private static func json(_ body: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}
