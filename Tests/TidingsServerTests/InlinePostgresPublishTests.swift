import Foundation
import ServiceLifecycle
import Synchronization
import Testing
import TidingsCore
@testable import TidingsServer

/// `POST /events` answered by the event loop in PostgreSQL mode: the events go from the event
/// loop to group commit, and the thread that committed hands the answer back.
@Suite("Inline publish path, PostgreSQL", .enabled(if: GatewayDatabase.isConfigured, "needs TIDINGS_TEST_DATABASE_URL (make test sets it)"))
struct InlinePostgresPublishTests {
    private func request(_ body: String, extra: String = "") -> String {
        "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(TestServer.publishKey)\r\nContent-Type: application/json\r\n"
            + extra + "Content-Length: \(body.utf8.count)\r\n\r\n" + body
    }

    private func statuses(_ text: String) -> [Int] {
        text.components(separatedBy: "HTTP/1.1 ").dropFirst().compactMap { Int($0.prefix(3)) }
    }

    /// Each response of the text: its status line and header lines (lowercased names, `date`
    /// left out, sorted), and its body.
    private func responses(_ text: String) -> [(head: [String], body: String)] {
        text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { response in
            let parts = response.components(separatedBy: "\r\n\r\n")
            let lines = parts[0].components(separatedBy: "\r\n")
            let fields = lines.dropFirst().map { line -> String in
                let pair = line.split(separator: ":", maxSplits: 1)
                return pair[0].lowercased() + ":" + pair[1].trimmingCharacters(in: .whitespaces)
            }
            return ([lines[0]] + fields.filter { !$0.hasPrefix("date:") }.sorted(), parts.dropFirst().joined())
        }
    }

    private func ids(_ text: String) -> [Int] {
        text.components(separatedBy: #"{"id":""#).dropFirst().compactMap { Int($0.prefix { $0 != "\"" }) }
    }

    /// Publishes a probe on `connection` (answered by the event loop), then has another session
    /// claim the idempotency key `k` of the publish key's publisher and keep its transaction open:
    /// a publish with that key waits for the session (``waitForTheBlockedPublish(_:)``) until it
    /// rolls back.
    private func blockKey(on connection: RawConnection, server: TestServer, url: String) async throws -> GatewaySession {
        try await connection.send(request(#"{"user":"u","event":"probe","data":0,"idempotency_key":"probe"}"#))
        try await eventually("the probe's answer") { statuses(connection.text) == [202] }
        #expect(server.gateway.inlinePublishes.load(ordering: .relaxed) == 1, "answered by the event loop")
        let publisher = try #require(try await GatewayDatabase.values(url, "SELECT publisher FROM tidings.idempotency_keys").first)
        let blocker = try await GatewaySession.open(url)
        try await blocker.execute("BEGIN; INSERT INTO tidings.idempotency_keys (publisher, key) VALUES ('\(publisher)', 'k')")
        return blocker
    }

    private func waitForTheBlockedPublish(_ url: String) async throws {
        try await eventually("a publish waits for the key") {
            try await GatewayDatabase.values(
                url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            ) == ["1"]
        }
    }

    @Test func aConnectionsPublishesAreStoredInOrderAndARouterRequestWaitsItsTurn() async throws {
        try await GatewayDatabase.with { url in
            try await TestServer.run({ $0.databaseURL = url }) { server in
                let connection = try await RawConnection.connect(port: server.port)
                defer { connection.close() }
                // The first publish waits for the key; the second publish, the router's request
                // and the third publish behind it must wait their turn.
                let blocker = try await blockKey(on: connection, server: server, url: url)
                try await connection.send(
                    request(#"{"user":"u","event":"a","data":1,"idempotency_key":"k"}"#)
                        + request(#"{"user":"u","event":"b","data":2}"#)
                        + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                        + request(#"{"user":"u","event":"c","data":3}"#))
                try await waitForTheBlockedPublish(url)
                #expect(statuses(connection.text) == [202], "nothing answered before the first publish")
                #expect(try await GatewayDatabase.values(url, "SELECT count(*) FROM tidings.events WHERE event = 'b'") == ["0"])
                try await blocker.execute("ROLLBACK")
                await blocker.close()

                try await eventually("every answer") { statuses(connection.text).count == 5 }
                #expect(statuses(connection.text) == [202, 202, 202, 200, 202])
                let answered = ids(connection.text)
                #expect(answered.count == 4)
                #expect(answered == answered.sorted() && Set(answered).count == 4, "ids in request order: \(answered)")
                let stored = try await GatewayDatabase.values(url, "SELECT event FROM tidings.events ORDER BY id")
                #expect(stored == ["probe", "a", "b", "c"])
                #expect(server.gateway.inlinePublishes.load(ordering: .relaxed) >= 3)
            }
        }
    }

    @Test func aShutdownLetsThePublishWithTheStoreBeAnsweredFirst() async throws {
        try await GatewayDatabase.with { url in
            try await TestServer.run({ $0.databaseURL = url }) { server in
                let connection = try await RawConnection.connect(port: server.port)
                defer { connection.close() }
                let blocker = try await blockKey(on: connection, server: server, url: url)
                try await connection.send(request(#"{"user":"u","event":"late","data":1,"idempotency_key":"k"}"#))
                try await waitForTheBlockedPublish(url)
                // Shutting down: the server stops taking connections, then tells the open ones
                // to finish. Hummingbird never saw the publish, so only the inline handler can
                // keep the connection until its answer.
                let shutdown = Task { await server.group.triggerGracefulShutdown() }
                try await eventually("new connections refused") {
                    do {
                        try await RawConnection.connect(port: server.port).close()
                        return false
                    } catch {
                        return true
                    }
                }
                try await blocker.execute("ROLLBACK")
                await blocker.close()
                try await connection.waitForClose(timeout: .seconds(10))
                #expect(statuses(connection.text) == [202, 202], "answered, then closed: \(connection.text)")
                #expect(try await GatewayDatabase.values(url, "SELECT event FROM tidings.events ORDER BY id") == ["probe", "late"])
                await shutdown.value
            }
        }
    }

    @Test func aStoreThatFailsGetsTheRoutersAnswerAndTheConnectionGoesOn() async throws {
        try await GatewayDatabase.with { url in
            try await GatewayDatabase.execute(
                url,
                """
                CREATE FUNCTION public.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN IF NEW.event = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$;
                CREATE TRIGGER refuse_poison BEFORE INSERT ON tidings.events FOR EACH ROW EXECUTE FUNCTION public.refuse_poison();
                """)
            var answers: [[(head: [String], body: String)]] = []
            for inline in [true, false] {
                let text = try await TestServer.run(inlinePublish: inline, { $0.databaseURL = url }) { server in
                    let connection = try await RawConnection.connect(port: server.port)
                    defer { connection.close() }
                    try await connection.send(
                        request(#"{"user":"u","event":"poison","data":1}"#) + request(#"{"user":"u","event":"good","data":2}"#))
                    try await eventually("two answers") { statuses(connection.text).count == 2 }
                    #expect(statuses(connection.text) == [503, 202])
                    #expect(server.gateway.inlinePublishes.load(ordering: .relaxed) == (inline ? 2 : 0))
                    return connection.text
                }
                answers.append(responses(text))
            }
            #expect(answers[0][0].head == answers[1][0].head)
            #expect(answers[0][0].body == answers[1][0].body)
            #expect(answers[0][0].body.contains("the event store is unavailable; nothing was stored"))
            #expect(answers[0][0].head.contains("retry-after:2"))
            let stored = try await GatewayDatabase.values(url, "SELECT event FROM tidings.events ORDER BY id")
            #expect(stored == ["good", "good"])
        }
    }
}
