import Foundation
import NIOHTTP1
import Testing
import TidingsCore
import TidingsServer

/// WebSocket and long-poll in PostgreSQL mode: the same stream on every instance.
@Suite("WebSocket and long-poll in PostgreSQL mode", .enabled(if: GatewayDatabase.isConfigured, "needs TIDINGS_TEST_DATABASE_URL (make test sets it)"))
struct PostgresTransportTests {
    private func postgres(_ url: String) -> (inout TidingsConfiguration) -> Void {
        { $0.databaseURL = url }
    }

    @Test func aWebSocketReplaysFromTheDatabaseThenGetsEventsPublishedOnAnotherInstanceAndFromSQL() async throws {
        try await GatewayDatabase.with { url in
            try await TestServer.run(postgres(url)) { a in
                try await TestServer.run(postgres(url)) { b in
                    let token = try await TestServer.token(sub: "42", topics: ["news.*"])
                    var expected: [String] = []
                    for n in 0..<5 { expected.append(try await a.publish(user: "42", data: "\(n)")) }
                    let publisher = Task {
                        var ids: [String] = []
                        for n in 0..<40 { ids.append(try await (n % 2 == 0 ? a : b).publish(user: "42", data: "\(n)")) }
                        return ids
                    }
                    let client = try await WebSocketTestClient.connect(port: b.port, query: "last_event_id=\(expected[1])", token: token)
                    expected = Array(expected[2...]) + (try await publisher.value)
                    // Before the subscribe (delivered on this instance before it): never sent.
                    let before = try #require(try await GatewayDatabase.values(url, "SELECT tidings.publish('topic:news.eu', 'sql', '{\"n\":1}')").first.flatMap { EventID($0) })
                    try await eventually("delivered on b") { b.gateway.bus.lastDelivered >= before }
                    client.send(#"{"type":"subscribe","topics":["news.eu"],"ref":"s"}"#)
                    var got: [String] = []
                    var sawAck = false
                    while !sawAck || got.count < expected.count {
                        guard let message = try await client.next() else { break }
                        if message.type == "ack" { sawAck = true; continue }
                        if message.event == "test", let id = message.id { got.append(id) }
                    }
                    #expect(got == expected)
                    // The topic's events flow from the subscribe on, from SQL too.
                    try await GatewayDatabase.execute(url, "SELECT tidings.publish('topic:news.eu', 'sql', '{\"n\":2}')")
                    let fromSQL = try #require(try await client.next())
                    #expect(fromSQL.event == "sql")
                    #expect((fromSQL.json["data"] as? [String: Any])?["n"] as? Int == 2)
                    client.close()
                }
            }
        }
    }

    @Test func aPollLoopAlternatingBetweenInstancesSeesEveryIdOnce() async throws {
        try await GatewayDatabase.with { url in
            try await TestServer.run(postgres(url)) { a in
                try await TestServer.run(postgres(url)) { b in
                    let token = try await TestServer.token(sub: "42")
                    let start = try await PollTests.poll(a, token: token, after: nil).last
                    let publisher = Task {
                        var ids: [String] = []
                        for n in 0..<60 { ids.append(try await (n % 3 == 0 ? b : a).publish(user: "42", data: "\(n)")) }
                        return ids
                    }
                    var got: [String] = []
                    var cursor = start
                    var polls = 0
                    var expected: [String]?
                    let deadline = ContinuousClock.now + .seconds(60)
                    while got.count < (expected?.count ?? .max), ContinuousClock.now < deadline {
                        let server = polls % 2 == 0 ? a : b
                        polls += 1
                        let answer = try await PollTests.poll(server, token: token, after: cursor, query: "limit=5&timeout=2s")
                        got += answer.ids
                        cursor = answer.last
                        if expected == nil, got.count >= 10 { expected = try await publisher.value }
                    }
                    #expect(got == expected)
                }
            }
        }
    }
}
