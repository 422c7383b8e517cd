import AsyncHTTPClient
import Foundation
import NIOHTTP1
import Testing
import TidingsCore
import TidingsServer
import TidingsTestSupport

/// The gateway in PostgreSQL mode, over loopback HTTP, against a real PostgreSQL.
@Suite("PostgreSQL mode over HTTP", .enabled(if: GatewayDatabase.isConfigured, "needs TIDINGS_TEST_DATABASE_URL (make test sets it)"))
struct PostgresGatewayTests {
    private func postgres(_ url: String) -> (inout TidingsConfiguration) -> Void {
        { $0.databaseURL = url; $0.maxEventBytes = 256 << 10 }
    }

    @Test func restPublishIsStoredThenStreamedAndReplayedFromTheDatabase() async throws {
        try await GatewayDatabase.with { url in
            try await TestServer.run(postgres(url)) { server in
                try await eventually("ready") { try await server.request(.GET, "/readyz").status == 200 }
                let token = try await TestServer.token(sub: "42")
                let live = try await server.subscribe(token: token)
                try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
                let big = String(repeating: "x", count: 100_000)
                let reply = try await server.publish(#"[{"user":"42","event":"a","data":{"n":1}},{"user":"42","event":"b","data":"\#(big)"}]"#)
                #expect(reply.status == 202)
                let ids = try #require(reply.json["ids"] as? [String])
                let events = try await live.events(2)
                #expect(events.map(\.id) == ids.map(Optional.some))
                #expect(events[0].data == #"{"n":1}"#)
                #expect(events[1].data == "\"\(big)\"")
                let replay = try await server.subscribe(token: token, headers: [("Last-Event-ID", "0")])
                #expect(try await replay.events(2).map(\.id) == ids.map(Optional.some))
                // A bad request stores nothing in the database either.
                #expect(try await server.publish(#"[{"user":"42","event":"ok","data":1},{"user":"bad id","event":"x","data":1}]"#).status == 422)
                // A key PostgreSQL could never store is the client's error, not the database's.
                let nul = try await server.publish(#"{"user":"42","event":"ok","data":1,"idempotency_key":"a\u0000b"}"#)
                #expect(nul.status == 422)
                #expect(nul.pointers == ["/idempotency_key"])
                let after = try await server.subscribe(token: token, headers: [("Last-Event-ID", ids[1])])
                try await server.publish(user: "42", event: "c")
                #expect(try await after.events(1).map(\.type) == ["c"])
                // Commit to delivery, in buckets fine enough for milliseconds.
                let metrics = try await server.request(.GET, "/metrics").body
                #expect(metrics.contains(#"tidings_commit_to_delivery_seconds_bucket{le="0.05"}"#))
                #expect(metrics.contains("tidings_commit_to_delivery_seconds_count 3"))
                // What this gateway asks of the database, by connection.
                for connection in ["pool", "listener"] {
                    let line = metrics.split(separator: "\n").first { $0.hasPrefix(#"tidings_database_round_trips_total{connection="\#(connection)"}"#) }
                    #expect((line?.split(separator: " ").last.flatMap { Int($0) } ?? 0) > 0, "no round trips counted for \(connection)")
                }
            }
        }
    }

    @Test func twoGatewaysOnOneDatabaseActAsOne() async throws {
        try await GatewayDatabase.with { url in
            try await TestServer.run(postgres(url)) { a in
                try await TestServer.run(postgres(url)) { b in
                    let token = try await TestServer.token(sub: "42")
                    let onA = try await a.subscribe(token: token)
                    let onB = try await b.subscribe(token: token)
                    try await eventually("subscribed") {
                        a.gateway.bus.subscriptionCount == 1 && b.gateway.bus.subscriptionCount == 1
                    }
                    var published: [String] = []
                    for n in 0..<10 {
                        published.append(try await (n % 2 == 0 ? a : b).publish(user: "42", data: "\(n)"))
                    }
                    let seenA = try await onA.events(10).map(\.id)
                    let seenB = try await onB.events(10).map(\.id)
                    #expect(seenA == published.map(Optional.some))
                    #expect(seenB == seenA)
                    // A ticket issued by one gateway is redeemed on the other, once.
                    let issued = try await a.request(.POST, "/tickets", headers: [("Authorization", "Bearer \(token)")])
                    let ticket = try #require(issued.json["ticket"] as? String)
                    #expect(try await b.subscribe(token: nil, query: "ticket=\(ticket)").status == 200)
                    #expect(try await a.subscribe(token: nil, query: "ticket=\(ticket)").status == 401)
                    // Idempotency keys are shared too.
                    let body = #"{"user":"42","event":"once","data":1,"idempotency_key":"k-1"}"#
                    let first = try await a.publish(body)
                    let second = try await b.publish(body)
                    #expect(first.json["id"] as? String == second.json["id"] as? String)
                }
            }
        }
    }

    @Test func aRestartedGatewayResumesClientsFromTheDatabase() async throws {
        try await GatewayDatabase.with { url in
            let token = try await TestServer.token(sub: "42")
            let firstIDs = try await TestServer.run(postgres(url)) { server in
                let stream = try await server.subscribe(token: token)
                try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
                var ids: [String] = []
                for n in 0..<5 { ids.append(try await server.publish(user: "42", data: "\(n)")) }
                let seen = try await stream.events(3)
                #expect(seen.map(\.id) == ids.prefix(3).map(Optional.some))
                return ids
            }
            // While no gateway runs, SQL keeps publishing.
            try await GatewayDatabase.execute(url, "SELECT tidings.publish('user:42', 'offline', '{\"n\": 5}')")
            try await TestServer.run(postgres(url)) { server in
                let resumed = try await server.subscribe(token: token, headers: [("Last-Event-ID", firstIDs[2])])
                let rest = try await resumed.events(3)
                #expect(Array(rest.map(\.id).prefix(2)) == firstIDs.suffix(2).map(Optional.some))
                #expect(rest[2].type == "offline")
                #expect(rest[2].data == #"{"n":5}"#)
                let next = try await server.publish(user: "42")
                #expect(try await resumed.nextEvent()?.id == next)
                #expect(Int(next)! > Int(rest[2].id!)!)
            }
        }
    }

    @Test func aClientResumingOnAnInstanceThatIsBehindGetsNothingTwice() async throws {
        try await GatewayDatabase.with { url in
            let publisher = try await GatewaySession.open(url)
            do {
                // A moves past a publisher left open after 200 ms; B waits for it far longer.
                try await TestServer.run({ $0.databaseURL = url; $0.orderWait = .milliseconds(200) }) { a in
                    try await TestServer.run({ $0.databaseURL = url; $0.orderWait = .seconds(600) }) { b in
                        try await eventually("ready") {
                            let readyA = try await a.request(.GET, "/readyz").status == 200
                            let readyB = try await b.request(.GET, "/readyz").status == 200
                            return readyA && readyB
                        }
                        let token = try await TestServer.token(sub: "42")
                        try await publisher.execute("BEGIN; SELECT tidings.publish('user:99', 'held', '{}')")
                        let onA = try await a.subscribe(token: token)
                        try await eventually("subscribed on A") { a.gateway.bus.subscriptionCount == 1 }
                        var ids: [String] = []
                        for n in 0..<5 { ids.append(try await a.publish(user: "42", data: "\(n)")) }
                        #expect(try await onA.events(5).map(\.id) == ids.map(Optional.some))
                        // The browser reconnects to B, which is behind what it read from A.
                        #expect(b.gateway.bus.lastDelivered < Int64(ids[0])!)
                        let onB = try await b.subscribe(token: token, headers: [("Last-Event-ID", ids[4])])
                        try await eventually("subscribed on B") { b.gateway.bus.subscriptionCount == 1 }
                        // B catches up when the publisher ends; what the client has is not sent again.
                        try await publisher.execute("ROLLBACK")
                        let last = Int64(ids[4])!
                        try await eventually("B caught up") { b.gateway.bus.lastDelivered >= last }
                        let next = try await a.publish(user: "42", data: "5")
                        let first = try await onB.nextEvent()
                        #expect(first?.id == next)
                    }
                }
            } catch {
                await publisher.close()
                throw error
            }
            await publisher.close()
        }
    }

    @Test func aResumePointAboveEverythingTheDatabaseIssuedGetsUnknownPosition() async throws {
        try await GatewayDatabase.with { url in
            try await TestServer.run(postgres(url)) { server in
                try await eventually("ready") { try await server.request(.GET, "/readyz").status == 200 }
                let token = try await TestServer.token(sub: "42")
                let ids = [try await server.publish(user: "42"), try await server.publish(user: "42")]
                try await eventually("delivered") { server.gateway.bus.lastDelivered == Int64(ids[1])! }
                // A client of another deployment, or of this database before a restore from backup.
                let stream = try await server.subscribe(token: token, headers: [("Last-Event-ID", "1000000")])
                let reset = try #require(try await stream.nextEvent())
                #expect(reset == SSEEvent(
                    id: ids[1], type: "tidings.reset",
                    data: #"{"reason":"unknown_position","last_event_id":"1000000","oldest_available":"\#(ids[0])"}"#))
                let next = try await server.publish(user: "42")
                #expect(try await stream.nextEvent()?.id == next)
            }
        }
    }

    @Test func aLostCommitIsAnsweredWithWhatTheDatabaseSaysOrOutcomeUnknown() async throws {
        try await GatewayDatabase.with { url in
            let (host, port) = try #require(CuttingProxy.hostAndPort(of: url))
            let proxy = try CuttingProxy(targetHost: host, targetPort: port)
            defer { proxy.stop() }
            try await TestServer.run(postgres(CuttingProxy.url(through: proxy, for: url))) { server in
                try await eventually("ready") { try await server.request(.GET, "/readyz").status == 200 }
                // The answer to COMMIT is lost, the transaction committed: 202 with its id.
                proxy.arm(.afterCommit)
                let committed = try await server.publish(#"{"user":"42","event":"committed","data":1}"#)
                #expect(proxy.cutCount == 1)
                #expect(committed.status == 202)
                #expect(committed.json["id"] as? String != nil)
                // COMMIT never reached the database: 503, nothing stored.
                proxy.arm(.insteadOfCommit)
                let aborted = try await server.publish(#"{"user":"42","event":"aborted","data":1}"#)
                #expect(proxy.cutCount == 2)
                #expect(aborted.status == 503)
                #expect(aborted.json["type"] as? String == "https://tidings.dev/problems/unavailable")
                // The database cannot be asked: a problem of its own that says how to retry safely.
                proxy.arm(.afterCommit)
                proxy.refuse(true)
                let unknown = try await server.publish(#"{"user":"42","event":"unknown","data":1}"#)
                proxy.refuse(false)
                #expect(unknown.status == 503)
                #expect(unknown.json["type"] as? String == "https://tidings.dev/problems/outcome-unknown")
                #expect((unknown.json["detail"] as? String)?.contains("idempotency_key") == true)
                #expect(unknown.headers["Retry-After"].first == "2")
            }
            let stored = try await GatewayDatabase.values(url, "SELECT event FROM tidings.events ORDER BY id")
            #expect(stored == ["committed", "unknown"])
        }
    }

    @Test func anUnreachableDatabaseIsExit69() async throws {
        let serve = try await CLITests.run(
            ["serve", "--port", "0", "--database-url", "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2"],
            environment: ["TIDINGS_JWT_SECRET": TestServer.secret])
        #expect(serve.status == 69, "\(serve.error)")
        let migrate = try await CLITests.run(["migrate"], environment: ["DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none?connect_timeout=2"])
        #expect(migrate.status == 69, "\(migrate.error)")
        #expect(!migrate.error.contains("password"))
    }
}
