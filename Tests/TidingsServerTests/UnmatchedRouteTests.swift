import NIOHTTP1
import Testing

/// Requests no route serves get problems like every other error. Found by the API fuzzing: an
/// unsupported method on a served path was answered `404` with an empty body.
@Suite struct UnmatchedRouteTests {
    @Test func anotherMethodOnAServedPathIs405WithAllow() async throws {
        try await TestServer.run { server in
            for (method, path, allow) in [
                (HTTPMethod.DELETE, "/events", "GET, POST"), (.PUT, "/tickets", "POST"), (.TRACE, "/tidings.js", "GET, HEAD"),
                (.POST, "/presence/users/42", "GET"), (.PATCH, "/", "GET, HEAD"), (.OPTIONS, "/poll", "GET"),
            ] {
                let reply = try await server.request(method, path)
                #expect(reply.status == 405, "\(method) \(path)")
                #expect(reply.headers["Allow"].first == allow, "\(method) \(path)")
                #expect(reply.headers["Content-Type"].first == "application/problem+json", "\(method) \(path)")
                #expect(reply.json["status"] as? Int == 405, "\(method) \(path)")
            }
        }
    }

    @Test func anUnknownPathIs404() async throws {
        try await TestServer.run { server in
            for path in ["/nowhere", "/presence/users", "/presence/users/42/more", "/events/1"] {
                let reply = try await server.request(.GET, path)
                #expect(reply.status == 404, "\(path)")
                #expect(reply.headers["Content-Type"].first == "application/problem+json", "\(path)")
                #expect(reply.json["status"] as? Int == 404, "\(path)")
            }
        }
    }
}
