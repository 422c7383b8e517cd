import AsyncHTTPClient
import Foundation
import NIOHTTP1
import ServiceLifecycle
import Testing
import TidingsCore
import TidingsServer

@Suite("Operations and lifecycle")
struct OperationsTests {
    @Test func healthReadinessMetricsAndDashboard() async throws {
        try await TestServer.run { server in
            #expect(try await server.request(.GET, "/healthz").status == 200)
            let ready = try await server.request(.GET, "/readyz")
            #expect(ready.status == 200)
            #expect(ready.json["status"] as? String == "ready")
            let stream = try await server.subscribe(token: try await TestServer.token(sub: "u"), headers: [("Last-Event-ID", "0")])
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            try await server.publish(user: "u")
            _ = try await stream.events(1)
            let metrics = try await server.request(.GET, "/metrics")
            #expect(metrics.status == 200)
            for line in ["tidings_connections_open 1", #"tidings_streams_open{transport="sse"} 1"#, "tidings_events_published_total 1", "tidings_events_delivered_total 1"] {
                #expect(metrics.body.contains(line), "metrics lack \(line)")
            }
            let page = try await server.request(.GET, "/")
            #expect(page.status == 200)
            #expect(page.body.contains("<title>Tidings</title>"))
        }
    }

    @Test func browserFilesAreEmbeddedCacheableAndAnswerHead() async throws {
        try await TestServer.run { server in
            let script = try await server.request(.GET, "/tidings.js")
            #expect(script.status == 200)
            #expect(script.headers["Content-Type"].first == "text/javascript; charset=utf-8")
            #expect(script.headers["Access-Control-Allow-Origin"].first == "*")
            #expect(script.headers["Cache-Control"].first == "public, max-age=300")
            #expect(script.body.contains("export function connect("))
            let etag = try #require(script.headers["ETag"].first)
            #expect(etag.hasPrefix("\"") && etag.count > 10)
            let again = try await server.request(.GET, "/tidings.js", headers: [("If-None-Match", etag)])
            #expect(again.status == 304)
            #expect(again.body.isEmpty)
            #expect(try await server.request(.GET, "/tidings.js", headers: [("If-None-Match", "\"other\"")]).status == 200)
            for (path, type) in [("/", "text/html"), ("/demo", "text/html"), ("/favicon.ico", "image/x-icon"), ("/site.css", "text/css")] {
                let get = try await server.request(.GET, path)
                #expect(get.status == 200, "GET \(path)")
                #expect(get.headers["Content-Type"].first?.hasPrefix(type) == true, "GET \(path)")
                let head = try await server.request(.HEAD, path)
                #expect(head.status == 200, "HEAD \(path)")
                #expect(head.body.isEmpty, "HEAD \(path)")
                #expect(head.headers["Content-Length"].first == get.headers["Content-Length"].first, "HEAD \(path)")
                #expect(head.headers["ETag"].first == get.headers["ETag"].first, "HEAD \(path)")
            }
        }
    }

    @Test func corsForListedOriginsOnly() async throws {
        try await TestServer.run({ $0.corsOrigins = ["https://app.example"] }) { server in
            let preflight = try await server.request(.OPTIONS, "/events", headers: [("Origin", "https://app.example"), ("Access-Control-Request-Method", "GET")])
            #expect(preflight.status == 204)
            #expect(preflight.headers["Access-Control-Allow-Origin"].first == "https://app.example")
            #expect(preflight.headers["Access-Control-Allow-Credentials"].first == "true")
            let token = try await TestServer.token(sub: "u")
            let allowed = try await server.subscribe(token: token, headers: [("Origin", "https://app.example")])
            #expect(allowed.headers["Access-Control-Allow-Origin"].first == "https://app.example")
            let other = try await server.request(.GET, "/healthz", headers: [("Origin", "https://evil.example")])
            #expect(other.headers["Access-Control-Allow-Origin"].isEmpty)
            let denied = try await server.request(.GET, "/events", headers: [("Origin", "https://app.example")])
            #expect(denied.status == 401)
            #expect(denied.headers["Access-Control-Allow-Origin"].first == "https://app.example")
        }
    }

    @Test(.timeLimit(.minutes(1))) func gracefulShutdownEndsOpenStreamsPromptly() async throws {
        let (streams, shutdownStarted) = try await TestServer.run({ $0.keepAlive = .seconds(60) }) { server in
            var streams: [SSEClient] = []
            for n in 0..<5 { streams.append(try await server.subscribe(token: try await TestServer.token(sub: "u\(n)"))) }
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 5 }
            return (streams, ContinuousClock.now)  // the shutdown begins when this returns
        }
        // `run` returns only after the server stopped: it must not wait for the clients (whose
        // streams would otherwise stay open for the 60 s keep-alive).
        #expect(ContinuousClock.now - shutdownStarted < .seconds(10))
        for stream in streams {
            try await eventually("stream closed") { stream.ending != nil }
            #expect(stream.ending == .clean, "each stream gets its final chunk")
        }
    }
}
