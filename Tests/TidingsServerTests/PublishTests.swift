import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TidingsCore
import TidingsServer

@Suite("POST /events over loopback")
struct PublishTests {
    /// Everything the store holds for `user`, via a replay from 0.
    private func stored(_ server: TestServer, user: String = "u") async throws -> [SSEEvent] {
        let page = try await server.gateway.store.replay(targets: [.user(user)], after: 0, through: .max, limit: 10_000)
        return page.events.map { SSEEvent(id: $0.id.map(String.init), type: $0.type.rawValue, data: $0.data) }
    }

    @Test func singleAndBatchAnswer202WithIds() async throws {
        try await TestServer.run { server in
            let one = try await server.publish(#"{"user":"u","event":"a","data":{"k":[1,2]}}"#)
            #expect(one.status == 202)
            #expect(one.headers["Content-Type"].first == "application/json")
            let first = try #require((one.json["id"] as? String).flatMap { Int64($0) })
            let batch = try await server.publish(#"[{"user":"u","event":"b","data":1},{"users":["u","v"],"event":"c","data":2},{"topic":"t","event":"d","data":3}]"#)
            #expect(batch.status == 202)
            #expect(batch.json["ids"] as? [String] == (Int64(1)...3).map { "\(first + $0)" })
            for json in ["Application/JSON", " application/json ; charset=utf-8", "application/vnd.api+json"] {
                #expect(try await server.publish(#"{"topic":"t","event":"x","data":1}"#, contentType: json).status == 202, "\(json)")
            }
            #expect(try await stored(server).map(\.type) == ["a", "b", "c"])
            #expect(try await stored(server).first?.data == #"{"k":[1,2]}"#)
        }
    }

    @Test func publisherTokensWithPatterns() async throws {
        try await TestServer.run { server in
            let everywhere = try await TestServer.token(sub: "svc", publish: .all(true))
            #expect(try await server.publish(#"{"user":"u","event":"a","data":1}"#, credential: everywhere).status == 202)
            let users = try await TestServer.token(sub: "svc2", publish: .patterns(["user:*", "topic:news.*"]))
            #expect(try await server.publish(#"{"user":"u","event":"a","data":1}"#, credential: users).status == 202)
            #expect(try await server.publish(#"{"topic":"news.eu","event":"a","data":1}"#, credential: users).status == 202)
            let denied = try await server.publish(#"[{"user":"u","event":"a","data":1},{"topic":"sports","event":"a","data":1}]"#, credential: users)
            #expect(denied.status == 403)
            #expect(denied.pointers == ["/1"])
            let subscriberOnly = try await TestServer.token(sub: "alice")
            #expect(try await server.publish(#"{"user":"u","event":"a","data":1}"#, credential: subscriberOnly).status == 403)
            #expect(try await stored(server).count == 2)
        }
    }

    @Test func aVerifiedTokenStillExpires() async throws {
        let clock = TestClock()
        try await TestServer.run(clock: clock) { server in
            let token = try await TestServer.token(sub: "svc", publish: .all(true), expiresIn: 3600)
            // The first publish verifies the token; the second finds it verified.
            #expect(try await server.publish(#"{"user":"u","event":"a","data":1}"#, credential: token).status == 202)
            #expect(try await server.publish(#"{"user":"u","event":"a","data":2}"#, credential: token).status == 202)
            clock.skip(.seconds(3590))
            #expect(try await server.publish(#"{"user":"u","event":"a","data":3}"#, credential: token).status == 202)
            // Past exp but within --jwt-leeway (30 s), then past both.
            clock.skip(.seconds(11))
            #expect(try await server.publish(#"{"user":"u","event":"a","data":4}"#, credential: token).status == 202)
            clock.skip(.seconds(30))
            #expect(try await server.publish(#"{"user":"u","event":"a","data":5}"#, credential: token).status == 401)
            #expect(try await stored(server).map(\.data) == ["1", "2", "3", "4"])
        }
    }

    @Test func unknownCredentialsAre401() async throws {
        try await TestServer.run { server in
            #expect(try await server.request(.POST, "/events", headers: [("Content-Type", "application/json")], body: "{}").status == 401)
            // The scheme is case-insensitive and surrounding spaces are ignored.
            let spaced = try await server.request(
                .POST, "/events", headers: [("Authorization", "bearer   \(TestServer.publishKey)  "), ("Content-Type", "application/json")],
                body: #"{"user":"u","event":"a","data":1}"#)
            #expect(spaced.status == 202)
            #expect(try await server.request(.POST, "/events", headers: [("Authorization", "Bearertoken"), ("Content-Type", "application/json")], body: "{}").status == 401)
            #expect(try await server.publish(#"{"user":"u","event":"a","data":1}"#, credential: "wrong-key-0123456789").status == 401)
            let forged = try await TestServer.token(sub: "svc", publish: .all(true), secret: "not-the-secret-0123456789-0123456789")
            let reply = try await server.publish(#"{"user":"u","event":"a","data":1}"#, credential: forged)
            #expect(reply.status == 401)
            #expect(reply.headers["Content-Type"].first == "application/problem+json")
            #expect(!reply.body.contains(forged))
        }
    }

    @Test func everyErrorCodeIsAProblemAndStoresNothing() async throws {
        try await TestServer.run({ $0.maxBody = 2_000; $0.maxEventBytes = 100 }) { server in
            // 415: not JSON
            let text = try await server.publish(#"{"user":"u","event":"a","data":1}"#, contentType: "text/plain")
            #expect(text.status == 415)
            for notJSON in ["application/jsonx", "application/xml", "json", "application/+json"] {
                #expect(try await server.publish(#"{"user":"u","event":"a","data":1}"#, contentType: notJSON).status == 415, "\(notJSON)")
            }
            // 400: malformed JSON
            let malformed = try await server.publish(#"{"user":"u","event":"a","data":1"#)
            #expect(malformed.status == 400)
            #expect(malformed.json["status"] as? Int == 400)
            let badUTF8 = try await server.request(.POST, "/events", headers: [("Authorization", "Bearer \(TestServer.publishKey)"), ("Content-Type", "application/json")], bytes: Array(#"{"user":"u","event":"a","data":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8))
            #expect(badUTF8.status == 400)
            // 413: body over --max-body
            let huge = try await server.publish(#"{"user":"u","event":"a","data":""# + String(repeating: "x", count: 3_000) + #""}"#)
            #expect(huge.status == 413)
            // 413: data over --max-event-bytes, with a pointer
            let bigData = try await server.publish(#"[{"user":"u","event":"a","data":1},{"user":"u","event":"a","data":""# + String(repeating: "x", count: 200) + #""}]"#)
            #expect(bigData.status == 413)
            #expect(bigData.pointers == ["/1/data"])
            // 422: invalid fields, with pointers
            let invalid = try await server.publish(#"{"user":"bad id","event":"bad\nevent","data":1}"#)
            #expect(invalid.status == 422)
            #expect(invalid.headers["Content-Type"].first == "application/problem+json")
            #expect(Set(invalid.pointers) == ["/user", "/event"])
            let noTarget = try await server.publish(#"{"event":"a","data":1}"#)
            #expect(noTarget.status == 422)
            let nulKey = try await server.publish(#"{"user":"u","event":"a","data":1,"idempotency_key":"a\u0000b"}"#)
            #expect(nulKey.status == 422)
            #expect(nulKey.pointers == ["/idempotency_key"])
            #expect(try await stored(server).isEmpty)
            #expect(try await server.gateway.store.lastIssuedID() == server.gateway.store.historyStart)
        }
    }

    @Test func oneBadItemRejectsTheWholeBatch() async throws {
        try await TestServer.run { server in
            var items = (0..<50).map { #"{"user":"u","event":"ok","data":\#($0)}"# }
            items[37] = #"{"user":"u","event":"ok"}"#
            let reply = try await server.publish("[" + items.joined(separator: ",") + "]")
            #expect(reply.status == 422)
            #expect(reply.pointers == ["/37/data"])
            #expect(try await stored(server).isEmpty)
        }
    }

    @Test func idempotencyKeyReturnsTheFirstId() async throws {
        try await TestServer.run { server in
            let body = #"{"user":"u","event":"a","data":1,"idempotency_key":"order-7-shipped"}"#
            let first = try await server.publish(body)
            let second = try await server.publish(body)
            #expect(first.status == 202)
            #expect(second.status == 202)
            #expect(first.json["id"] as? String == second.json["id"] as? String)
            // Another publisher has its own key space.
            let other = try await server.publish(body, credential: try await TestServer.token(sub: "svc", publish: .all(true)))
            #expect(other.json["id"] as? String != first.json["id"] as? String)
            #expect(try await stored(server).count == 2)
        }
    }

    /// A 202 means stored: when it arrives, the event is in the store (what a resuming stream
    /// replays), and a live subscriber gets it with the id the 202 gave, in order. Not that the 202
    /// comes first: the store hands an event to the bus as it stores it, so the live frame often
    /// reaches the subscriber before the 202 reaches the publisher (nothing orders the two
    /// connections, and the contract asks for no order).
    @Test func publishedEventsAreStoredWhenThe202ArrivesAndReachSubscribers() async throws {
        try await TestServer.run { server in
            let stream = try await server.subscribe(token: try await TestServer.token(sub: "u"))
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            let big = String(repeating: "é", count: 20_000)
            var answered: [String] = []
            for n in 0..<10 {
                // Single events over several TCP segments, and batches.
                let reply = n % 2 == 0
                    ? try await server.publish(#"{"user":"u","event":"a","data":{"n":\#(n),"big":"\#(big)"}}"#)
                    : try await server.publish(#"[{"user":"u","event":"b","data":\#(n)},{"users":["u","v"],"event":"c","data":\#(n)}]"#)
                #expect(reply.status == 202)
                let ids = try (reply.json["ids"] as? [String]) ?? [#require(reply.json["id"] as? String)]
                let stored: [String?] = try await stored(server).suffix(ids.count).map(\.id)
                #expect(stored == ids, "stored when the 202 arrived")
                answered += ids
            }
            let events = try await stream.events(answered.count)
            #expect(events.map(\.id) == answered)
            let types: [String] = (0..<10).flatMap { $0 % 2 == 0 ? ["a"] : ["b", "c"] }
            #expect(events.map(\.type) == types)
            #expect(events.filter { $0.type == "a" }.allSatisfy { $0.data.count > 20_000 })
        }
    }
}
