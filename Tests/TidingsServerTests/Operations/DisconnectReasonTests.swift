import Foundation
import NIOHTTP1
import NIOWebSocket
import Testing
import TidingsCore
@testable import TidingsServer

/// `tidings_disconnects_total{reason}`: every reason has a series, and each is counted.
@Suite("Disconnects by reason")
struct DisconnectReasonTests {
    static func disconnects(_ server: TestServer, _ reason: StreamEnd) async throws -> Int? {
        let metrics = try await server.request(.GET, "/metrics").body
        let prefix = #"tidings_disconnects_total{reason="\#(reason.rawValue)"} "#
        guard let line = metrics.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) else { return nil }
        return Int(line.dropFirst(prefix.count))
    }

    @Test func everyReasonHasASeriesAndWebSocketEndsAreToldApart() async throws {
        try await TestServer.run({ $0.keepAlive = .milliseconds(300) }) { server async throws in
            for reason in StreamEnd.allCases {
                #expect(try await Self.disconnects(server, reason) == 0, "\(reason)")
            }
            let token = try await TestServer.token(sub: "alice")
            // Text that is not JSON breaks the protocol.
            let garbled = try await WebSocketTestClient.connect(port: server.port, token: token)
            garbled.send("{not json")
            #expect(try await garbled.closed() == .dataInconsistentWithMessage)
            try await eventually("a protocol error counted") { try await Self.disconnects(server, .protocolError) == 1 }
            // A client that never answers pings.
            let silent = try await RawConnection.connect(port: server.port)
            try await silent.upgradeToSilentWebSocket(token: token)
            try await silent.waitForClose(timeout: .seconds(10))
            try await eventually("a keep-alive timeout counted") { try await Self.disconnects(server, .keepAliveTimeout) == 1 }
            // A client that says goodbye.
            let polite = try await WebSocketTestClient.connect(port: server.port, token: token)
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            polite.close()
            try await eventually("a client close counted") { try await Self.disconnects(server, .clientClosed) == 1 }
            #expect(try await Self.disconnects(server, .protocolError) == 1)
            #expect(try await Self.disconnects(server, .keepAliveTimeout) == 1)
        }
    }
}
