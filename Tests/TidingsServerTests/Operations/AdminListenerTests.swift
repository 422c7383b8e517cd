import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TidingsCore
@testable import TidingsServer

/// `--admin-host` / `--admin-port`: the operations routes apart from the public port.
@Suite("Admin listener")
struct AdminListenerTests {
    static let operations = ["/metrics", "/healthz", "/readyz", "/"]

    @Test func withAnAdminPortOperationsAreServedThereAndNotOnThePublicPort() async throws {
        try await TestServer.run({ $0.adminPort = 0 }) { server in
            let admin = try #require(server.adminPort)
            #expect(admin != server.port)
            for path in Self.operations {
                #expect(try await server.request(.GET, path).status == 404, "public \(path)")
                #expect(try await Self.get(port: admin, path).status == 200, "admin \(path)")
            }
            // The dashboard's script is on both; the public API only on the public port.
            #expect(try await Self.get(port: admin, "/tidings.js").status == 200)
            #expect(try await server.request(.GET, "/tidings.js").status == 200)
            #expect(try await server.request(.GET, "/demo").status == 200)
            #expect(try await Self.get(port: admin, "/events").status == 404)
            let id = try await server.publish(user: "alice")
            #expect(!id.isEmpty)
            let metrics = try await Self.get(port: admin, "/metrics").body
            #expect(metrics.contains("tidings_publish_requests_total 1"))
            #expect(metrics.contains(#"tidings_build_info{version="\#(TidingsVersion.current)"} 1"#))
            #expect(metrics.contains("tidings_publish_request_duration_seconds_count 1"))
        }
    }

    @Test func withoutOneEverythingIsOnThePublicPort() async throws {
        try await TestServer.run({ $0.adminPort = nil }) { server async throws in
            #expect(server.adminPort == nil)
            for path in Self.operations {
                #expect(try await server.request(.GET, path).status == 200, "public \(path)")
            }
        }
    }

    @Test func theStreamDurationHistogramCountsEndedStreams() async throws {
        try await TestServer.run { server in
            let token = try await TestServer.token(sub: "alice")
            let stream = try await server.subscribe(token: token)
            try await eventually("the stream on the bus") { server.gateway.bus.subscriptionCount == 1 }
            stream.close()
            try await eventually("the stream left the bus") { server.gateway.bus.subscriptionCount == 0 }
            let metrics = try await server.request(.GET, "/metrics").body
            #expect(metrics.contains(#"tidings_stream_duration_seconds_count{transport="sse"} 1"#), "\(metrics)")
            #expect(metrics.contains(#"tidings_disconnects_total{reason="client_closed"} 1"#))
        }
    }

    static func get(port: Int, _ path: String) async throws -> TestServer.Reply {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)"), timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 4 << 20)
        return TestServer.Reply(status: Int(response.status.code), headers: response.headers, body: String(buffer: body))
    }
}
