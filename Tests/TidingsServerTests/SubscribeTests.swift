import AsyncHTTPClient
import Foundation
import NIOHTTP1
import Testing
import TidingsCore
import TidingsServer

@Suite("GET /events over loopback")
struct SubscribeTests {
    @Test func headersRetryAndCommentComeAtOnce() async throws {
        try await TestServer.run({ $0.retry = .milliseconds(2500) }) { server in
            let stream = try await server.subscribe(token: try await TestServer.token(sub: "alice"))
            #expect(stream.status == 200)
            #expect(stream.headers["Content-Type"].first == "text/event-stream; charset=utf-8")
            #expect(stream.headers["Cache-Control"].first == "no-cache")
            #expect(stream.headers["X-Accel-Buffering"].first == "no")
            // The connection ends with the stream: no proxy or client should try to reuse it.
            #expect(stream.headers["Connection"].first == "close")
            #expect(try await stream.nextMessage(timeout: .seconds(2)) == .retry(2500))
            #expect(try await stream.nextMessage(timeout: .seconds(2)) == .comment("tidings"))
            #expect(stream.rawText.hasPrefix("retry: 2500\n: "))
        }
    }

    @Test func liveEventsReachOnlyTheirUser() async throws {
        try await TestServer.run { server in
            let alice = try await server.subscribe(token: try await TestServer.token(sub: "alice"))
            let bob = try await server.subscribe(token: try await TestServer.token(sub: "bob"))
            try await eventually("both subscribed") { server.gateway.bus.subscriptionCount == 2 }
            let first = try await server.publish(user: "alice", event: "order.updated", data: #"{"id":1,"note":"a\nb"}"#)
            try await server.publish(user: "bob", event: "other")
            let second = try await server.publish(user: "alice", event: "order.updated", data: #""x""#)
            #expect(try await alice.events(2) == [
                SSEEvent(id: first, type: "order.updated", data: #"{"id":1,"note":"a\nb"}"#),
                SSEEvent(id: second, type: "order.updated", data: #""x""#),
            ])
            #expect(try await bob.events(1).map(\.type) == ["other"])
        }
    }

    @Test func keepAliveCommentAfterSilence() async throws {
        try await TestServer.run({ $0.keepAlive = .milliseconds(400) }) { server in
            let token = try await TestServer.token(sub: "alice")
            // Clocks start before the server's last write, not when the client got round to
            // reading it (parallel tests can delay the client by 100 ms and more).
            let start = ContinuousClock.now
            let stream = try await server.subscribe(token: token)
            _ = try await stream.nextMessage()  // retry
            _ = try await stream.nextMessage()  // opening comment
            #expect(try await stream.nextMessage(timeout: .seconds(3)) == .comment("keep-alive"))
            let waited = ContinuousClock.now - start
            #expect(waited >= .milliseconds(300), "keep-alive came after \(waited)")
            // An event resets the silence: no keep-alive right after it.
            let beforeEvent = ContinuousClock.now
            try await server.publish(user: "alice")
            #expect(try await stream.nextEvent()?.type == "test")
            #expect(try await stream.nextMessage(timeout: .seconds(3)) == .comment("keep-alive"))
            #expect(ContinuousClock.now - beforeEvent >= .milliseconds(300))
        }
    }

    @Test func replayWithLastEventIDHeaderThenLive() async throws {
        try await TestServer.run { server in
            var ids: [String] = []
            for n in 1...5 { ids.append(try await server.publish(user: "alice", data: "\(n)")) }
            try await server.publish(user: "bob")
            let stream = try await server.subscribe(token: try await TestServer.token(sub: "alice"), headers: [("Last-Event-ID", ids[1])])
            #expect(try await stream.events(3).map(\.id) == Array(ids[2...]).map(Optional.some))
            let live = try await server.publish(user: "alice", data: "6")
            #expect(try await stream.nextEvent()?.id == live)
        }
    }

    @Test func replayWithQueryParameterAndZeroMeansEverything() async throws {
        try await TestServer.run { server in
            var ids: [String] = []
            for n in 1...3 { ids.append(try await server.publish(user: "alice", data: "\(n)")) }
            let token = try await TestServer.token(sub: "alice")
            let all = try await server.subscribe(token: token, query: "last_event_id=0")
            #expect(try await all.events(3).map(\.data) == ["1", "2", "3"])
            let some = try await server.subscribe(token: token, query: "last_event_id=\(ids[1])")
            #expect(try await some.events(1).map(\.data) == ["3"])
            // The header wins over the query parameter.
            let header = try await server.subscribe(token: token, query: "last_event_id=0", headers: [("Last-Event-ID", ids[0])])
            #expect(try await header.events(2).map(\.data) == ["2", "3"])
        }
    }

    @Test func idsNeverGoBackwardsAcrossAMemoryModeRestart() async throws {
        let token = try await TestServer.token(sub: "alice")
        let before = try await TestServer.run { server in
            [try await server.publish(user: "alice"), try await server.publish(user: "alice")]
        }
        try await TestServer.run { server in
            // The browser reconnects by itself with the last id it read from the old process.
            let stream = try await server.subscribe(token: token, headers: [("Last-Event-ID", before[1])])
            let reset = try #require(try await stream.nextEvent())
            #expect(reset.type == "tidings.reset")
            #expect(reset.data == #"{"reason":"unknown_position","last_event_id":"\#(before[1])","oldest_available":null}"#)
            #expect(Int64(reset.id!)! > Int64(before[1])!)
            let next = try await server.publish(user: "alice")
            #expect(Int64(next)! > Int64(reset.id!)!)
            #expect(try await stream.nextEvent()?.id == next)
            // A position above every id issued: the same reset, at the latest id.
            let ahead = try await server.subscribe(token: token, headers: [("Last-Event-ID", "\(Int64(next)! + 1_000)")])
            let aheadReset = try #require(try await ahead.nextEvent())
            #expect(aheadReset.type == "tidings.reset")
            #expect(aheadReset.id == next)
            #expect(aheadReset.data.contains(#""reason":"unknown_position""#))
        }
    }

    /// The seam through the production path: streams over loopback HTTP (registration, replay
    /// from the store, the handoff to the stream's channel, live delivery by the drain passes)
    /// join at moments spread over a run of publishes, each resuming from a random id already
    /// published; every one must see every later id exactly once, in order.
    @Test func streamsJoiningWhileEventsArePublishedSeeEveryLaterIdOnceInOrder() async throws {
        try await TestServer.run({ $0.maxQueue = 100_000 }) { server in
            let token = try await TestServer.token(sub: "alice")
            let start = server.gateway.store.historyStart
            let total: Int64 = 400
            let subscribers: Int64 = 6  // with the publisher, within the shared HTTP client's pool
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for n in 0..<total { try await server.publish(user: "alice", data: "\(n)") }
                }
                for n in 0..<subscribers {
                    group.addTask {
                        let joinAt = start + (n * total) / (subscribers + 1)
                        // However slowly the publisher goes (parallel tests share two cores).
                        try await eventually("\(joinAt - start) published", timeout: .seconds(120)) {
                            server.gateway.bus.lastDelivered >= joinAt
                        }
                        let resume = Int64.random(in: start...server.gateway.bus.lastDelivered)
                        let stream = try await server.subscribe(token: token, headers: [("Last-Event-ID", "\(resume)")])
                        defer { stream.close() }
                        let events = try await stream.events(Int(start + total - resume), timeout: .seconds(120))
                        #expect(events.map(\.id) == stride(from: resume + 1, through: start + total, by: 1).map { "\($0)" }, "resumed after \(resume)")
                    }
                }
                try await group.waitForAll()
            }
        }
    }

    @Test func withoutResumePointOnlyLiveEvents() async throws {
        try await TestServer.run { server in
            try await server.publish(user: "alice", data: "1")
            let stream = try await server.subscribe(token: try await TestServer.token(sub: "alice"))
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            try await server.publish(user: "alice", data: "2")
            #expect(try await stream.events(1).map(\.data) == ["2"])
        }
    }

    @Test func resetEventWhenHistoryIsGone() async throws {
        try await TestServer.run({ $0.memoryMaxEvents = 3 }) { server in
            var ids: [String] = []
            for n in 1...6 { ids.append(try await server.publish(user: "alice", data: "\(n)")) }
            let stream = try await server.subscribe(token: try await TestServer.token(sub: "alice"), headers: [("Last-Event-ID", ids[0])])
            let events = try await stream.events(4)
            #expect(events[0] == SSEEvent(
                id: ids[2], type: "tidings.reset",
                data: #"{"reason":"history_expired","last_event_id":"\#(ids[0])","oldest_available":"\#(ids[3])"}"#))
            #expect(events.dropFirst().map(\.data) == ["4", "5", "6"])
        }
    }

    @Test func badResumePointIs400() async throws {
        try await TestServer.run { server in
            let token = try await TestServer.token(sub: "alice")
            for bad in ["abc", "-1", "1.5", "99999999999999999999999", "1 2"] {
                let stream = try await server.subscribe(token: token, headers: [("Last-Event-ID", bad)])
                #expect(stream.status == 400, "Last-Event-ID \(bad)")
            }
            let query = try await server.subscribe(token: token, query: "last_event_id=x")
            #expect(query.status == 400)
            #expect(query.headers["Content-Type"].first == "application/problem+json")
        }
    }

    @Test func missingOrBadTokensAre401() async throws {
        try await TestServer.run { server in
            let none = try await server.subscribe(token: nil)
            #expect(none.status == 401)
            #expect(none.headers["Content-Type"].first == "application/problem+json")
            let problem = try JSONSerialization.jsonObject(with: Data(none.errorBody.utf8)) as? [String: Any]
            #expect(problem?["status"] as? Int == 401)
            #expect(problem?["title"] as? String == "Unauthorized")
            #expect((problem?["type"] as? String)?.isEmpty == false)
            #expect((problem?["detail"] as? String)?.isEmpty == false)

            let wrongSecret = try await TestServer.token(sub: "alice", secret: "another-secret-0123456789-0123456789")
            #expect(try await server.subscribe(token: wrongSecret).status == 401)
            let expired = try await TestServer.token(sub: "alice", expiresIn: -60)
            #expect(try await server.subscribe(token: expired).status == 401)
            #expect(try await server.subscribe(token: "not.a.jwt").status == 401)
            #expect(try await server.subscribe(token: nil, headers: [("Authorization", "Basic YTpi")]).status == 401)
            let badSub = try await TestServer.token(sub: "has space")
            #expect(try await server.subscribe(token: badSub).status == 401)
            // The token is never echoed back.
            let reply = try await server.subscribe(token: wrongSecret)
            #expect(!reply.errorBody.contains(wrongSecret))
        }
    }

    @Test func tokenFromCookieAndQueryParameter() async throws {
        try await TestServer.run({ $0.allowQueryToken = false }) { server in
            let token = try await TestServer.token(sub: "alice")
            let cookie = try await server.subscribe(token: nil, headers: [("Cookie", "other=1; tidings_token=\(token)")])
            #expect(cookie.status == 200)
            let query = try await server.subscribe(token: nil, query: "access_token=\(token)")
            #expect(query.status == 401)
        }
        try await TestServer.run({ $0.allowQueryToken = true }) { server in
            let token = try await TestServer.token(sub: "alice")
            let query = try await server.subscribe(token: nil, query: "access_token=\(token)")
            #expect(query.status == 200)
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            try await server.publish(user: "alice")
            #expect(try await query.events(1).count == 1)
        }
    }

    /// The contract's order: Bearer, then an explicit ticket, then the ambient cookie.
    @Test func anExplicitTicketWinsOverTheCookieAndIsConsumed() async throws {
        try await TestServer.run { server in
            let bob = try await TestServer.token(sub: "bob")
            let issued = try await server.request(.POST, "/tickets", headers: [("Authorization", "Bearer \(bob)")])
            let ticket = try #require(issued.json["ticket"] as? String)
            let alice = try await TestServer.token(sub: "alice")
            let stream = try await server.subscribe(token: nil, query: "ticket=\(ticket)", headers: [("Cookie", "tidings_token=\(alice)")])
            #expect(stream.status == 200)
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            try await server.publish(user: "alice", event: "for-alice")
            try await server.publish(user: "bob", event: "for-bob")
            #expect(try await stream.events(1).map(\.type) == ["for-bob"], "the ticket's user, not the cookie's")
            let again = try await server.subscribe(token: nil, query: "ticket=\(ticket)", headers: [("Cookie", "tidings_token=\(alice)")])
            #expect(again.status == 401, "the ticket was consumed")
        }
    }

    @Test func issuerAndAudienceAreChecked() async throws {
        try await TestServer.run({ $0.jwtIssuer = "auth.example"; $0.jwtAudience = "tidings" }) { server in
            let good = try await TestServer.token(sub: "a", issuer: "auth.example", audience: "tidings")
            #expect(try await server.subscribe(token: good).status == 200)
            let wrongIssuer = try await TestServer.token(sub: "a", issuer: "evil", audience: "tidings")
            #expect(try await server.subscribe(token: wrongIssuer).status == 401)
            let noAudience = try await TestServer.token(sub: "a", issuer: "auth.example")
            #expect(try await server.subscribe(token: noAudience).status == 401)
            // Canonically equivalent is not equal: a Kelvin sign (U+212A) for the K of an issuer or
            // audience is another name, compared byte for byte.
        }
        try await TestServer.run({ $0.jwtIssuer = "auth.K"; $0.jwtAudience = "K" }) { server in
            #expect(try await server.subscribe(token: try await TestServer.token(sub: "a", issuer: "auth.K", audience: "K")).status == 200)
            let kelvinIssuer = try await TestServer.token(sub: "a", issuer: "auth.\u{212A}", audience: "K")
            #expect(try await server.subscribe(token: kelvinIssuer).status == 401)
            let kelvinAudience = try await TestServer.token(sub: "a", issuer: "auth.K", audience: "\u{212A}")
            #expect(try await server.subscribe(token: kelvinAudience).status == 401)
        }
    }

    /// Found by fuzzing (Fuzz/Credentials, from a look-alike seed): claim patterns were compared
    /// as Swift strings, which treat canonically equivalent text as equal, so a topics claim
    /// `K*` spelled with the Kelvin sign (U+212A) admitted the topic `Key`, and a publish claim
    /// likewise. A pattern admits only what it spells, byte for byte.
    @Test func claimPatternsMatchByteForByte() async throws {
        try await TestServer.run { server in
            let kelvin = "\u{212A}"
            let token = try await TestServer.token(sub: "alice", topics: ["\(kelvin)*", "\(kelvin)ey"])
            #expect(try await server.subscribe(token: token, query: "topic=Key").status == 403)
            #expect(try await server.subscribe(token: token, query: "topic=K").status == 403)
            let publisher = try await TestServer.token(sub: "p", publish: .patterns(["topic:\(kelvin)*"]))
            #expect(try await server.publish(#"{"topic":"Key","event":"e","data":1}"#, credential: publisher).status == 403)
        }
    }

    @Test func topicsFollowTheTokensClaimWithPrefixes() async throws {
        try await TestServer.run { server in
            let token = try await TestServer.token(sub: "alice", topics: ["news.*", "weather"])
            let stream = try await server.subscribe(token: token, query: "topic=news.eu&topic=weather")
            #expect(stream.status == 200)
            #expect(try await server.subscribe(token: token, query: "topic=sports").status == 403)
            #expect(try await server.subscribe(token: token, query: "topic=weather.eu").status == 403)
            #expect(try await server.subscribe(token: token, query: "topic=news.eu&topic=secret").status == 403)
            #expect(try await server.subscribe(token: try await TestServer.token(sub: "bob"), query: "topic=weather").status == 403)
            #expect(try await server.subscribe(token: token, query: "topic=bad%20name").status == 400)
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            _ = try await server.publish(#"{"topic":"news.eu","event":"n","data":1}"#)
            _ = try await server.publish(#"{"topic":"news.us","event":"n","data":2}"#)
            _ = try await server.publish(#"{"topic":"weather","event":"w","data":3}"#)
            _ = try await server.publish(#"{"user":"alice","event":"u","data":4}"#)
            #expect(try await stream.events(3).map(\.data) == ["1", "3", "4"])
        }
    }

    @Test func ticketsAreSingleUseAndCarryIdentityAndTopics() async throws {
        try await TestServer.run { server in
            let token = try await TestServer.token(sub: "alice", topics: ["news"])
            #expect(try await server.request(.POST, "/tickets").status == 401)
            let issued = try await server.request(.POST, "/tickets", headers: [("Authorization", "Bearer \(token)")])
            #expect(issued.status == 201)
            #expect(issued.json["expires_in"] as? Int == 30)
            let ticket = try #require(issued.json["ticket"] as? String)
            #expect(ticket.count >= 40)
            let stream = try await server.subscribe(token: nil, query: "ticket=\(ticket)&topic=news")
            #expect(stream.status == 200)
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            _ = try await server.publish(#"{"topic":"news","event":"n","data":1}"#)
            #expect(try await stream.events(1).map(\.data) == ["1"])
            #expect(try await server.subscribe(token: nil, query: "ticket=\(ticket)").status == 401)
            #expect(try await server.subscribe(token: nil, query: "ticket=made-up").status == 401)
            let viaCookie = try await server.request(.POST, "/tickets", headers: [("Cookie", "tidings_token=\(token)")])
            #expect(viaCookie.status == 201)
            let other = try #require(viaCookie.json["ticket"] as? String)
            #expect(try await server.subscribe(token: nil, query: "ticket=\(other)&topic=secret").status == 403)
        }
    }

    @Test func ticketsExpire() async throws {
        let clock = TestClock()
        try await TestServer.run(clock: clock, { $0.ticketTTL = .seconds(60) }) { server in
            let token = try await TestServer.token(sub: "alice")
            func ticket() async throws -> String {
                let issued = try await server.request(.POST, "/tickets", headers: [("Authorization", "Bearer \(token)")])
                return try #require(issued.json["ticket"] as? String)
            }
            let fresh = try await ticket()
            clock.skip(.seconds(30))
            #expect(try await server.subscribe(token: nil, query: "ticket=\(fresh)").status == 200, "within its time to live")
            let stale = try await ticket()
            clock.skip(.seconds(61))
            #expect(try await server.subscribe(token: nil, query: "ticket=\(stale)").status == 401, "after its time to live")
        }
    }

    @Test func streamEndsWhenTheTokenExpires() async throws {
        let clock = TestClock()
        try await TestServer.run(clock: clock, { $0.keepAlive = .seconds(60) }) { server in
            let stream = try await server.subscribe(token: try await TestServer.token(sub: "alice", expiresIn: 3600))
            #expect(try await stream.nextMessage() == .retry(3000))
            #expect(try await stream.nextMessage() == .comment("tidings"))
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            // Ten seconds before the expiry the stream goes on: the keep-alive shows that the
            // ticker saw that time.
            clock.skip(.seconds(3590))
            #expect(try await stream.nextMessage() == .comment("keep-alive"))
            #expect(server.gateway.bus.subscriptionCount == 1)
            clock.skip(.seconds(11))
            let (events, ending) = try await stream.eventsUntilEnd()
            #expect(events.isEmpty)
            #expect(ending == .clean, "the stream ends with its final chunk")
            try await eventually("unsubscribed") { server.gateway.bus.subscriptionCount == 0 }
            let metrics = try await server.request(.GET, "/metrics")
            #expect(metrics.body.contains(#"tidings_disconnects_total{reason="token_expired"} 1"#))
        }
    }

    @Test func closedClientIsNoticedAtOnce() async throws {
        try await TestServer.run { server in
            let stream = try await server.subscribe(token: try await TestServer.token(sub: "alice"))
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            stream.close()
            try await eventually("subscription released", timeout: .seconds(10)) { server.gateway.bus.subscriptionCount == 0 }
        }
    }

    @Test func connectionLimitsAnswer503WithRetryAfter() async throws {
        try await TestServer.run({ $0.maxConnections = 3; $0.maxConnectionsPerUser = 2 }) { server in
            let alice = try await TestServer.token(sub: "alice")
            var open = [try await server.subscribe(token: alice), try await server.subscribe(token: alice)]
            let third = try await server.subscribe(token: alice)
            #expect(third.status == 503)
            #expect(third.headers["Retry-After"].first != nil)
            open.append(try await server.subscribe(token: try await TestServer.token(sub: "bob")))
            let overall = try await server.subscribe(token: try await TestServer.token(sub: "carol"))
            #expect(overall.status == 503)
            #expect(overall.headers["Retry-After"].first != nil)
            open[0].close()
            try await eventually("slot freed") { server.gateway.bus.subscriptionCount == 2 }
            #expect(try await server.subscribe(token: alice).status == 200)
        }
    }

    @Test func slowConsumerIsDisconnectedAndLosesNothing() async throws {
        try await TestServer.run({ $0.maxQueue = 5 }) { server in
            let token = try await TestServer.token(sub: "alice")
            // Reads nothing until resumed: its receive window fills after a few KB.
            let client = try await ThrottledSSEClient.connect(port: server.port, path: "/events", token: token)
            defer { client.close() }
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            let clientPort = try #require(client.localPort)
            @Sendable func serverSide() throws -> String? { try TCPTable.state(localPort: server.port, remotePort: clientPort) }
            #expect(TCPTable.isOpen(try serverSide()))
            // 60 KiB events fill the socket buffers and NIO's queue quickly; then the queue overflows.
            var published = try await server.publishUntilSlowConsumerIsCut(user: "alice")
            #expect(server.gateway.bus.subscriptionCount == 0, "the slow subscriber was not disconnected")
            // The server closes the connection while the client still reads nothing (the client
            // cannot tell yet: the FIN waits behind the bytes it has not read).
            try await eventually("the server closed its side of the connection") { !TCPTable.isOpen(try serverSide()) }
            #expect(client.ending == nil, "checked while the client was paused")
            for _ in 0..<3 { published.append(try await server.publish(user: "alice", data: "\"" + String(repeating: "x", count: 60_000) + "\"")) }
            try await client.resume()
            let (received, ending) = try await client.eventsUntilEnd()
            #expect(ending != .clean, "a slow consumer gets no final chunk")
            let receivedIDs = received.compactMap(\.id)
            #expect(receivedIDs == Array(published.prefix(receivedIDs.count)), "what arrived is a prefix, in order")
            #expect(receivedIDs.count < published.count)
            // Resuming from the last id received delivers the rest: nothing lost, nothing repeated.
            let resumed = try await server.subscribe(token: token, headers: [("Last-Event-ID", receivedIDs.last ?? "0")])
            let rest = try await resumed.events(published.count - receivedIDs.count, timeout: .seconds(10))
            #expect(receivedIDs + rest.compactMap(\.id) == published)
            let metrics = try await server.request(.GET, "/metrics")
            #expect(metrics.body.contains(#"tidings_disconnects_total{reason="slow_consumer"} 1"#))
        }
    }

    @Test func clientThatFallsBehindCatchesUpInOrder() async throws {
        // A client with a tiny receive window that stops reading: live writes go partly straight
        // to the socket and partly through NIO's queue, then straight again once it caught up.
        try await TestServer.run({ $0.maxQueue = 10_000 }) { server in
            let client = try await ThrottledSSEClient.connect(
                port: server.port, path: "/events", token: try await TestServer.token(sub: "alice"))
            defer { client.close() }
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            let sizes = [10, 60_000, 3_000, 65_000, 1]
            var published: [String] = []
            for round in 1...2 {
                for index in 0..<200 {
                    let data = "\"" + String(repeating: "abc".randomElement()!, count: sizes[index % sizes.count]) + "\""
                    published.append(try await server.publish(user: "alice", data: data))
                }
                try await client.resume()
                let received = try await client.events(200 * round)
                #expect(received.compactMap(\.id) == published, "round \(round): every event once, in order")
                #expect(received.map(\.data.count) == (0..<200 * round).map { sizes[$0 % 200 % sizes.count] + 2 })
                try await client.pause()
            }
            #expect(server.gateway.bus.subscriptionCount == 1, "the client was not disconnected")
        }
    }

    @Test func aRequestPipelinedBehindAStreamIsNeverServed() async throws {
        try await TestServer.run { server in
            let token = try await TestServer.token(sub: "alice")
            let smuggled = #"{"user":"alice","event":"smuggled","data":1}"#
            let connection = try await RawConnection.connect(port: server.port)
            defer { connection.close() }
            try await connection.send(
                "GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nAuthorization: Bearer \(token)\r\n\r\n"
                    + "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(TestServer.publishKey)\r\n"
                    + "Content-Type: application/json\r\nContent-Length: \(smuggled.utf8.count)\r\n\r\n\(smuggled)")
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            let id = try await server.publish(user: "alice", event: "legit")
            try await connection.waitFor("event: legit")
            #expect(connection.text.contains("id: \(id)\n"))
            #expect(!connection.text.contains("smuggled"))
            #expect(!connection.text.contains("HTTP/1.1 202"), "no second response on a stream's connection")
            // Nothing but the legitimate event was ever stored.
            let replay = try await server.subscribe(token: token, headers: [("Last-Event-ID", "0")])
            let events = try await replay.events(1)
            #expect(events.map(\.type) == ["legit"])
            try await Task.sleep(for: .milliseconds(200))
            #expect(replay.rawText.components(separatedBy: "event: ").count == 2, "one event in history: \(replay.rawText)")
        }
    }
}
