import Foundation
import NIOHTTP1
import ServiceLifecycle
import Testing
import TidingsCore
import TidingsServer

@Suite("GET /poll over loopback")
struct PollTests {
    struct Answer {
        var ids: [String]
        var types: [String]
        var last: String
    }

    static func poll(_ server: TestServer, token: String, after: String?, query: String = "") async throws -> Answer {
        var parts: [String] = []
        if let after { parts.append("last_event_id=\(after)") }
        if !query.isEmpty { parts.append(query) }
        let reply = try await server.request(
            .GET, "/poll" + (parts.isEmpty ? "" : "?" + parts.joined(separator: "&")),
            headers: [("Authorization", "Bearer \(token)")])
        guard reply.status == 200 else { throw TestFailure("poll answered \(reply.status): \(reply.body)") }
        let events = try #require(reply.json["events"] as? [[String: Any]])
        return Answer(
            ids: events.compactMap { $0["id"] as? String }, types: events.compactMap { $0["event"] as? String },
            last: try #require(reply.json["last_event_id"] as? String))
    }

    @Test func withoutAResumePointItAnswersAtOnceWithThePosition() async throws {
        try await TestServer.run { server in
            let token = try await TestServer.token(sub: "alice")
            let before = try await server.publish(user: "alice")
            let start = try await Self.poll(server, token: token, after: nil)
            #expect(start.ids.isEmpty)
            #expect(start.last == before)
            // The next poll waits for the first live event after it.
            async let waiting = Self.poll(server, token: token, after: start.last, query: "timeout=10s")
            try await eventually("the poll waits on the bus") { server.gateway.bus.subscriptionCount == 1 }
            let id = try await server.publish(user: "alice", event: "live")
            let answer = try await waiting
            #expect(answer.ids == [id])
            #expect(answer.types == ["live"])
            #expect(answer.last == id)
            try await eventually("the poll left the bus") { server.gateway.bus.subscriptionCount == 0 }
        }
    }

    @Test func aPollLoopSeesEveryIdOnceInOrderUnderConcurrentPublishing() async throws {
        try await TestServer.run { server in
            let token = try await TestServer.token(sub: "alice")
            var expected: [String] = []
            for n in 0..<20 { expected.append(try await server.publish(user: "alice", data: "\(n)")) }
            let publisher = Task {
                var ids: [String] = []
                for n in 0..<150 { ids.append(try await server.publish(user: "alice", data: "\(n)")) }
                return ids
            }
            var got: [String] = []
            var cursor = "0"
            let deadline = ContinuousClock.now + .seconds(30)
            var total = Int.max
            while got.count < total, ContinuousClock.now < deadline {
                let answer = try await Self.poll(server, token: token, after: cursor, query: "limit=7&timeout=2s")
                #expect(answer.ids.count <= 7)
                got += answer.ids
                cursor = answer.last
                if total == Int.max, publisher.isCancelled == false, got.count >= 20 {
                    let later = try await publisher.value
                    expected += later
                    total = expected.count
                }
            }
            #expect(got == expected)
        }
    }

    @Test func aPollThatTimesOutAnswersNoEventsAndAPositionThatLosesNothing() async throws {
        try await TestServer.run { server in
            let token = try await TestServer.token(sub: "alice")
            let mine = try await server.publish(user: "alice")
            let others = try await server.publish(user: "bob")
            let answer = try await Self.poll(server, token: token, after: mine, query: "timeout=300ms")
            #expect(answer.ids.isEmpty)
            #expect(answer.last == others, "moved past what is not for this stream")
            let next = try await server.publish(user: "alice")
            #expect(try await Self.poll(server, token: token, after: answer.last).ids == [next])
        }
    }

    @Test func badParametersAndIdentityAreRefused() async throws {
        try await TestServer.run { server in
            let token = try await TestServer.token(sub: "alice")
            let auth = [("Authorization", "Bearer \(token)")]
            #expect(try await server.request(.GET, "/poll?last_event_id=0").status == 401)
            #expect(try await server.request(.GET, "/poll?last_event_id=0&timeout=61s", headers: auth).status == 400)
            #expect(try await server.request(.GET, "/poll?last_event_id=0&timeout=soon", headers: auth).status == 400)
            #expect(try await server.request(.GET, "/poll?last_event_id=0&limit=0", headers: auth).status == 400)
            #expect(try await server.request(.GET, "/poll?last_event_id=0&limit=1001", headers: auth).status == 400)
            #expect(try await server.request(.GET, "/poll?last_event_id=x", headers: auth).status == 400)
        }
    }

    /// Found while describing `timeout` for the API description: a value too large for a `Duration` in milliseconds
    /// (`1e300s`) trapped converting it and took the gateway down.
    @Test func aTimeoutBeyondAnyClockIsRefusedAndTheGatewayLivesOn() async throws {
        try await TestServer.run { server in
            let auth = [("Authorization", "Bearer \(try await TestServer.token(sub: "alice"))")]
            for timeout in ["1e300s", "1e19", "99999999999999999999d", "1e16ms"] {
                let reply = try await server.request(.GET, "/poll?last_event_id=0&timeout=\(timeout)", headers: auth)
                #expect(reply.status == 400, "timeout=\(timeout)")
            }
            #expect(try await server.request(.GET, "/healthz").status == 200)
        }
    }

    @Test func aWaitingPollCountsAsAConnection() async throws {
        try await TestServer.run({ $0.maxConnections = 1 }) { server in
            let token = try await TestServer.token(sub: "alice")
            let position = try await Self.poll(server, token: token, after: nil).last
            async let waiting = Self.poll(server, token: token, after: position, query: "timeout=5s")
            try await eventually("the poll waits on the bus") { server.gateway.bus.subscriptionCount == 1 }
            let refused = try await server.request(
                .GET, "/poll?last_event_id=\(position)", headers: [("Authorization", "Bearer \(token)")])
            #expect(refused.status == 503)
            let id = try await server.publish(user: "alice")
            #expect(try await waiting.ids == [id])
        }
    }

    /// A client that leaves while its poll waits is let go at once: its subscription and its
    /// connection slot are not held until the poll's timeout.
    @Test func aPollWhoseClientLeftIsLetGoAtOnce() async throws {
        try await TestServer.run({ $0.maxConnections = 1 }) { server in
            let token = try await TestServer.token(sub: "alice")
            let position = try await Self.poll(server, token: token, after: nil).last
            let client = try await RawConnection.connect(port: server.port)
            try await client.send(
                "GET /poll?last_event_id=\(position)&timeout=60s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \(token)\r\n\r\n")
            try await eventually("the poll waits on the bus") { server.gateway.bus.subscriptionCount == 1 }
            client.close()
            try await eventually("the poll let go", timeout: .seconds(10)) { server.gateway.bus.subscriptionCount == 0 }
            // Its connection slot is free again: a new poll is served, and gets the next event.
            async let waiting = Self.poll(server, token: token, after: position, query: "timeout=10s")
            try await eventually("the new poll waits on the bus") { server.gateway.bus.subscriptionCount == 1 }
            let id = try await server.publish(user: "alice")
            #expect(try await waiting.ids == [id])
        }
    }

    /// One stream read over the three transports in turn: every id once, in order.
    @Test func oneStreamResumedAcrossTransports() async throws {
        try await TestServer.run { server in
            let token = try await TestServer.token(sub: "alice")
            var expected: [String] = []
            for n in 0..<10 { expected.append(try await server.publish(user: "alice", data: "\(n)")) }
            var got: [String] = []
            // SSE from the start, the first four.
            let sse = try await server.subscribe(token: token, query: "last_event_id=0")
            got += try await sse.events(4).compactMap(\.id)
            sse.close()
            // WebSocket from the last id SSE saw, three more.
            let ws = try await WebSocketTestClient.connect(port: server.port, query: "last_event_id=\(got.last!)", token: token)
            for _ in 0..<3 { if let id = try await ws.next()?.id { got.append(id) } }
            ws.close()
            for n in 10..<15 { expected.append(try await server.publish(user: "alice", data: "\(n)")) }
            // Long-poll from the last id the WebSocket saw, to the end.
            var cursor = got.last!
            while got.count < expected.count {
                let answer = try await Self.poll(server, token: token, after: cursor, query: "limit=4&timeout=2s")
                got += answer.ids
                cursor = answer.last
            }
            #expect(got == expected)
        }
    }

    /// Graceful shutdown answers a waiting poll at once (the server does not wait out its
    /// timeout), with a position that loses nothing.
    @Test func shutdownAnswersAWaitingPollAtOnce() async throws {
        let started = ContinuousClock.now
        let (answer, position) = try await TestServer.run { server in
            let token = try await TestServer.token(sub: "alice")
            let position = try await Self.poll(server, token: token, after: nil).last
            async let waiting = Self.poll(server, token: token, after: position, query: "timeout=60s")
            try await eventually("the poll waits on the bus") { server.gateway.bus.subscriptionCount == 1 }
            await server.group.triggerGracefulShutdown()
            return (try await waiting, position)
        }
        #expect(answer.ids.isEmpty)
        #expect(answer.last == position)
        #expect(ContinuousClock.now - started < .seconds(20), "shutdown waited for the poll's timeout")
    }
}
