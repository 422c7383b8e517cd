import Foundation
import NIOHTTP1
import Testing
import TidingsCore
import TidingsTestSupport

@testable import TidingsServer

/// `GET /presence/users/{id}` and `GET /presence/topics/{name}` over loopback HTTP.
@Suite("Presence")
struct PresenceTests {
    private static let auth = [("Authorization", "Bearer \(TestServer.publishKey)")]

    @Test func countsTheOpenStreamsOfAUserAndOfATopicAndSeesOneClose() async throws {
        try await TestServer.run { server in
            let token42 = try await TestServer.token(sub: "42", topics: ["news.*"])
            let token7 = try await TestServer.token(sub: "7", topics: ["news.eu"])
            let withTopic = try await server.subscribe(token: token42, query: "topic=news.eu")
            let plain = try await server.subscribe(token: token42)
            let other = try await server.subscribe(token: token7, query: "topic=news.eu")
            #expect([withTopic.status, plain.status, other.status] == [Int](repeating: 200, count: 3))
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 3 }

            let user = try await server.request(.GET, "/presence/users/42", headers: Self.auth)
            #expect(user.status == 200)
            #expect(user.headers["Content-Type"].first == "application/json")
            #expect(user.body == #"{"user":"42","connections":2}"#)
            let topic = try await server.request(.GET, "/presence/topics/news.eu", headers: Self.auth)
            #expect(topic.body == #"{"topic":"news.eu","connections":2,"users":2}"#)
            // Nobody: zeros, not 404.
            #expect(try await server.request(.GET, "/presence/users/nobody", headers: Self.auth).body == #"{"user":"nobody","connections":0}"#)
            #expect(try await server.request(.GET, "/presence/topics/quiet", headers: Self.auth).body
                == #"{"topic":"quiet","connections":0,"users":0}"#)

            withTopic.close()
            try await eventually("a stream of 42 closed") {
                try await server.request(.GET, "/presence/users/42", headers: Self.auth).body == #"{"user":"42","connections":1}"#
            }
            #expect(try await server.request(.GET, "/presence/topics/news.eu", headers: Self.auth).body
                == #"{"topic":"news.eu","connections":1,"users":1}"#)
            plain.close()
            other.close()
        }
    }

    /// Streams of every transport count: SSE, WebSocket (with a topic added at run time) and a
    /// waiting long poll.
    @Test func everyTransportCounts() async throws {
        try await TestServer.run { server in
            let token = try await TestServer.token(sub: "42", topics: ["news.*"])
            let sse = try await server.subscribe(token: token)
            let ws = try await WebSocketTestClient.connect(port: server.port, token: token)
            ws.send(#"{"type":"subscribe","topics":["news.eu"],"ref":"1"}"#)
            #expect(try await ws.nextAnswer()?.type == "ack")
            let position = try await PollTests.poll(server, token: token, after: nil).last
            async let poll = PollTests.poll(server, token: token, after: position, query: "timeout=10s")
            try await eventually("three streams") { server.gateway.bus.subscriptionCount == 3 }
            #expect(try await server.request(.GET, "/presence/users/42", headers: Self.auth).body == #"{"user":"42","connections":3}"#)
            #expect(try await server.request(.GET, "/presence/topics/news.eu", headers: Self.auth).body
                == #"{"topic":"news.eu","connections":1,"users":1}"#)
            let metrics = try await server.request(.GET, "/metrics").body
            for transport in ["sse", "ws", "poll"] {
                #expect(metrics.contains(#"tidings_streams_open{transport="\#(transport)"} 1"#), "\(transport)")
            }
            try await server.publish(user: "42")
            _ = try await poll
            ws.close()
            sse.close()
            try await eventually("all gone") {
                try await server.request(.GET, "/presence/users/42", headers: Self.auth).body == #"{"user":"42","connections":0}"#
            }
        }
    }

    @Test func needsAPublisherThatMayPublishToTheTargetAndAValidName() async throws {
        try await TestServer.run { server in
            func get(_ path: String, _ credential: String?) async throws -> TestServer.Reply {
                try await server.request(.GET, path, headers: credential.map { [("Authorization", "Bearer \($0)")] } ?? [])
            }
            func expectProblem(_ reply: TestServer.Reply, _ status: Int, sourceLocation: SourceLocation = #_sourceLocation) {
                #expect(reply.status == status, "\(reply.body)", sourceLocation: sourceLocation)
                #expect(reply.headers["Content-Type"].first == "application/problem+json", sourceLocation: sourceLocation)
                #expect(reply.json["status"] as? Int == status, sourceLocation: sourceLocation)
            }
            // No credential, an unknown key, a bad signature, another scheme: 401.
            expectProblem(try await get("/presence/users/42", nil), 401)
            expectProblem(try await get("/presence/users/42", "not-a-known-publish-key"), 401)
            let forged = try await TestServer.token(sub: "p", publish: .all(true), secret: String(repeating: "x", count: 40))
            expectProblem(try await get("/presence/topics/news.eu", forged), 401)
            expectProblem(try await server.request(.GET, "/presence/users/42", headers: [("Authorization", "Basic eDp5")]), 401)
            // Without a valid credential even a bad name is 401: nothing is told.
            expectProblem(try await get("/presence/users/bad%20id", nil), 401)
            // A subscriber's token without a publish claim: 403.
            expectProblem(try await get("/presence/users/42", try await TestServer.token(sub: "42")), 403)

            // A publisher JWT whose patterns do or do not cover the target.
            let scoped = try await TestServer.token(sub: "backend", publish: .patterns(["user:42", "topic:news.*"]))
            #expect(try await get("/presence/users/42", scoped).status == 200)
            #expect(try await get("/presence/topics/news.eu", scoped).status == 200)
            expectProblem(try await get("/presence/users/43", scoped), 403)
            expectProblem(try await get("/presence/topics/sport", scoped), 403)
            expectProblem(try await get("/presence/topics/news", scoped), 403)
            let everywhere = try await TestServer.token(sub: "backend", publish: .all(true))
            #expect(try await get("/presence/users/43", everywhere).status == 200)
            #expect(try await get("/presence/topics/sport", everywhere).body == #"{"topic":"sport","connections":0,"users":0}"#)
            #expect(try await get("/presence/users/a.b_c@d:e-f", TestServer.publishKey).body == #"{"user":"a.b_c@d:e-f","connections":0}"#)

            // Names: 1-128 characters of [A-Za-z0-9._@:-].
            let longest = String(repeating: "a", count: 128)
            #expect(try await get("/presence/users/\(longest)", TestServer.publishKey).status == 200)
            expectProblem(try await get("/presence/users/\(longest)a", TestServer.publishKey), 400)
            expectProblem(try await get("/presence/topics/\(longest)a", scoped), 400)
            expectProblem(try await get("/presence/users/bad%20id", TestServer.publishKey), 400)
            expectProblem(try await get("/presence/topics/caf%C3%A9", TestServer.publishKey), 400)
            expectProblem(try await get("/presence/topics/a%22b", TestServer.publishKey), 400)
        }
    }

    /// Found by the API fuzzing: a name sent percent-encoded (`%40` for `@`, as URL builders
    /// write it) was taken as it came and refused with 400.
    @Test func aPercentEncodedNameIsTheNameItEncodes() async throws {
        try await TestServer.run { server in
            let auth = [("Authorization", "Bearer \(TestServer.publishKey)")]
            let user = try await server.request(.GET, "/presence/users/alice%40example.com", headers: auth)
            #expect(user.status == 200, "\(user.body)")
            #expect(user.body == #"{"user":"alice@example.com","connections":0}"#)
            let topic = try await server.request(.GET, "/presence/topics/news%3Aeu", headers: auth)
            #expect(topic.body == #"{"topic":"news:eu","connections":0,"users":0}"#)
            // What an encoding hides is checked like any name.
            #expect(try await server.request(.GET, "/presence/users/a%2Fb", headers: auth).status == 400)
            #expect(try await server.request(.GET, "/presence/users/a%zz", headers: auth).status == 400)
        }
    }
}

/// Presence in PostgreSQL mode: gateways sharing one database report to it and answer the sum.
@Suite("Presence over PostgreSQL", .enabled(if: GatewayDatabase.isConfigured, "needs TIDINGS_TEST_DATABASE_URL (make test sets it)"))
struct PostgresPresenceTests {
    private static let auth = [("Authorization", "Bearer \(TestServer.publishKey)")]
    /// Short, so that dropping out takes a test a moment; long enough for a loaded machine.
    private static let interval: Duration = .milliseconds(500)

    private func postgres(_ url: String) -> (inout TidingsConfiguration) -> Void {
        { $0.databaseURL = url; $0.presenceInterval = Self.interval }
    }

    private func presence(_ server: TestServer, _ path: String) async throws -> String {
        let reply = try await server.request(.GET, path, headers: Self.auth)
        guard reply.status == 200 else { throw TestFailure("\(path): \(reply.status) \(reply.body)") }
        return reply.body
    }

    /// 42 on both gateways and 7 on the second, all three on topic news.eu.
    private func openStreams(_ a: TestServer, _ b: TestServer) async throws -> [SSEClient] {
        let token42 = try await TestServer.token(sub: "42", topics: ["news.eu"])
        let token7 = try await TestServer.token(sub: "7", topics: ["news.eu"])
        let streams = [
            try await a.subscribe(token: token42, query: "topic=news.eu"),
            try await b.subscribe(token: token42, query: "topic=news.eu"),
            try await b.subscribe(token: token7, query: "topic=news.eu"),
        ]
        #expect(streams.map(\.status) == [Int](repeating: 200, count: 3))
        return streams
    }

    private static let summed = (user: #"{"user":"42","connections":2}"#, topic: #"{"topic":"news.eu","connections":3,"users":2}"#)
    private static let onlyA = (user: #"{"user":"42","connections":1}"#, topic: #"{"topic":"news.eu","connections":1,"users":1}"#)

    /// Waits until both gateways answer the sum of their streams, users counted once.
    private func expectSummed(_ a: TestServer, _ b: TestServer) async throws {
        for server in [a, b] {
            try await eventually("summed counts", timeout: .seconds(15)) {
                let user = try await presence(server, "/presence/users/42")
                let topic = try await presence(server, "/presence/topics/news.eu")
                return user == Self.summed.user && topic == Self.summed.topic
            }
        }
    }

    @Test func gatewaysSumTheirStreamsAndOneStoppingGracefullyLeavesAtOnce() async throws {
        try await GatewayDatabase.with { url in
            try await TestServer.run(postgres(url)) { a in
                let streams = try await TestServer.run(postgres(url)) { b in
                    let streams = try await openStreams(a, b)
                    try await expectSummed(a, b)
                    #expect(try await GatewayDatabase.values(url, "SELECT count(*) FROM tidings.instances") == ["2"])
                    // A stream closing is seen by the other gateway within a report.
                    streams[0].close()
                    try await eventually("a stream closed") {
                        let user = try await presence(b, "/presence/users/42")
                        let topic = try await presence(b, "/presence/topics/news.eu")
                        return user == #"{"user":"42","connections":1}"# && topic == #"{"topic":"news.eu","connections":2,"users":2}"#
                    }
                    return streams
                }
                // B stopped gracefully: its rows are gone as it ends, not three intervals later.
                #expect(try await GatewayDatabase.values(url, "SELECT count(*) FROM tidings.instances") == ["1"])
                #expect(try await presence(a, "/presence/users/42") == #"{"user":"42","connections":0}"#)
                #expect(try await presence(a, "/presence/users/7") == #"{"user":"7","connections":0}"#)
                #expect(try await presence(a, "/presence/topics/news.eu") == #"{"topic":"news.eu","connections":0,"users":0}"#)
                streams.forEach { $0.close() }
            }
            // The last one leaves nothing behind either.
            #expect(try await GatewayDatabase.values(url, "SELECT count(*) FROM tidings.presence") == ["0"])
            #expect(try await GatewayDatabase.values(url, "SELECT count(*) FROM tidings.instances") == ["0"])
        }
    }

    @Test func aGatewayCutOffFromTheDatabaseDropsOutWithinThreeIntervals() async throws {
        try await GatewayDatabase.with { url in
            let (host, port) = try #require(CuttingProxy.hostAndPort(of: url))
            let proxy = try CuttingProxy(targetHost: host, targetPort: port)
            defer { proxy.stop() }
            try await TestServer.run(postgres(url)) { a in
                try await TestServer.run(postgres(CuttingProxy.url(through: proxy, for: url))) { b in
                    let streams = try await openStreams(a, b)
                    defer { streams.forEach { $0.close() } }
                    try await expectSummed(a, b)
                    // While both report, neither drops out: three more reports of each, the sum
                    // every time.
                    let oldest = "SELECT min(reported_at) FROM tidings.instances"
                    var heartbeats: Set<[String]> = [try await GatewayDatabase.values(url, oldest)]
                    let deadline = ContinuousClock.now + .seconds(20)
                    while heartbeats.count < 4 {
                        guard ContinuousClock.now < deadline else { throw TestFailure("the gateways stopped reporting") }
                        #expect(try await presence(a, "/presence/topics/news.eu") == Self.summed.topic)
                        heartbeats.insert(try await GatewayDatabase.values(url, oldest))
                        try await Task.sleep(for: .milliseconds(20))
                    }
                    // B loses the database (as if killed: no goodbye), its streams stay open.
                    proxy.stop()
                    // By the rule A's answers apply, B is out three intervals after its last
                    // report, which was before the cut (bounded with room for this side's polling).
                    let limit = Self.interval * 3 + .seconds(2)
                    let live = "SELECT count(*) FROM tidings.instances WHERE reported_at > clock_timestamp() - 3 * report_interval"
                    try await eventually("B out by the rule", timeout: limit) {
                        try await GatewayDatabase.values(url, live) == ["1"]
                    }
                    // And A answers so. Both gateways run in this test process: in the full test
                    // pass A's answer has come 5 s after the cut (B's last report then 5.2 s old),
                    // so its own bound is wider.
                    try await eventually("B dropped out", timeout: .seconds(15)) {
                        try await presence(a, "/presence/topics/news.eu") == Self.onlyA.topic
                    }
                    // Not before: its last report is at least three intervals old.
                    let age = try await GatewayDatabase.values(url, "SELECT extract(epoch FROM now() - min(reported_at)) FROM tidings.instances")
                    let seconds = try #require(age.first.flatMap { Double($0) })
                    #expect(seconds >= Double(Self.interval.milliseconds) * 3 / 1000, "dropped out after \(seconds) s of silence")
                    #expect(try await presence(a, "/presence/users/42") == Self.onlyA.user)
                    #expect(try await presence(a, "/presence/users/7") == #"{"user":"7","connections":0}"#)
                    #expect(b.gateway.bus.subscriptionCount == 2)
                    // Its rows are still there (nobody deleted them), just not counted.
                    #expect(try await GatewayDatabase.values(url, "SELECT count(*) FROM tidings.instances") == ["2"])
                }
            }
            // A left gracefully; B's rows wait for pruning (60 intervals of silence).
            #expect(try await GatewayDatabase.values(url, "SELECT count(*) FROM tidings.instances") == ["1"])
        }
    }
}
