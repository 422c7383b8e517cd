import Foundation
import NIOPosix
import Testing
import TidingsCore

@testable import TidingsPostgres

/// The roles of migration 0002, tried as the non-superusers that use them, and the checks a
/// gateway makes at start.
@Suite(.enabled(if: TestDatabase.isConfigured, "TIDINGS_TEST_DATABASE_URL is not set"))
struct PrivilegesTests {
    /// Runs `body` with a new login role (granted `roles`) and the database URL as that role;
    /// drops the role afterwards (roles are the cluster's, not the database's).
    private func withRole<T>(
        _ url: String, granted roles: [String], _ body: (_ role: String, _ url: String) async throws -> T
    ) async throws -> T {
        let role = "tidings_test_role_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        try await SQL.run(url, "CREATE ROLE \(role) LOGIN" + roles.map { "; GRANT \($0) TO \(role)" }.joined())
        let roleURL = url.replacingOccurrences(of: "://postgres@", with: "://\(role)@")
        do {
            let value = try await body(role, roleURL)
            try await dropRole(role, url)
            return value
        } catch {
            try? await dropRole(role, url)
            throw error
        }
    }

    private func dropRole(_ role: String, _ url: String) async throws {
        try await SQL.run(url, "DROP OWNED BY \(role); DROP ROLE \(role)")
    }

    /// The SQLSTATE a statement fails with as `url`'s role.
    private func failure(_ url: String, _ sql: String) async -> String? {
        do {
            try await SQL.run(url, sql)
            return nil
        } catch let error as PostgresError {
            return error.sqlState
        } catch {
            return "\(error)"
        }
    }

    @Test func anApplicationRoleWithTidingsPublisherPublishesOnlyThroughTheFunctions() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withRole(url, granted: ["tidings_publisher"]) { (role: String, app: String) async throws in
                try await SQL.run(url, "CREATE TABLE orders (id serial PRIMARY KEY, user_id int, status text); ALTER TABLE orders OWNER TO \(role)")
                // Publishing, directly and from the application's own trigger.
                #expect(try await SQL.value(app, "SELECT tidings.publish('user:1', 'direct', '{}')") == "1")
                #expect(try await SQL.value(app, "SELECT tidings.publish(ARRAY['user:1', 'topic:t'], 'direct', '{}')") == "2")
                try await SQL.run(
                    app,
                    """
                    CREATE TRIGGER orders_tidings AFTER INSERT OR UPDATE OR DELETE ON orders
                        FOR EACH ROW EXECUTE FUNCTION tidings.row_event('user_id', 'order')
                    """)
                try await SQL.run(app, "INSERT INTO orders (user_id, status) VALUES (7, 'new')")
                // Whoever writes the table fires the trigger; writers need no Tidings right.
                try await withRole(url, granted: []) { (writer: String, writerURL: String) async throws in
                    try await SQL.run(app, "GRANT INSERT ON orders TO \(writer); GRANT USAGE ON SEQUENCE orders_id_seq TO \(writer)")
                    try await SQL.run(writerURL, "INSERT INTO orders (user_id, status) VALUES (8, 'new')")
                    #expect(await failure(writerURL, "SELECT tidings.publish('user:1', 'direct', '{}')") == "42501")
                }
                // Everything else is refused: ids outside the protocol, the sequence, the tables.
                let insufficient = "42501"
                #expect(await failure(app, "INSERT INTO tidings.events (id, targets, event, data) VALUES (9223372036854775000, '{user:1}', 'x', '{}')") == insufficient)
                #expect(await failure(app, "SELECT nextval('tidings.events_id_seq')") == insufficient)
                #expect(await failure(app, "ALTER SEQUENCE tidings.events_id_seq CACHE 20") == insufficient)
                #expect(await failure(app, "SELECT tidings.take_event_ids(1)") == insufficient)
                #expect(await failure(app, "SELECT tidings.publish_json('{user:1}', 'x', '{}')") == insufficient)
                #expect(await failure(app, "SELECT * FROM tidings.tickets") == insufficient)
                #expect(await failure(app, "SELECT * FROM tidings.events") == insufficient)
                #expect(await failure(app, "UPDATE tidings.state SET value = 1000000 WHERE name = 'settled_through'") == insufficient)
                #expect(await failure(app, "DELETE FROM tidings.idempotency_keys") == insufficient)
                #expect(await failure(app, "SELECT * FROM tidings.presence") == insufficient)
                #expect(await failure(app, "DELETE FROM tidings.instances") == insufficient)
                let rows = try await SQL.run(url, "SELECT id, event, array_to_string(targets, ' ') FROM tidings.events ORDER BY id")
                    .rows.map { "\(try $0.int64(0)) \(try $0.string(1)) \(try $0.string(2))" }
                #expect(rows == ["1 direct user:1", "2 direct user:1 topic:t", "3 order.created user:7", "4 order.created user:8"])
            }
        }
    }

    @Test func aRoleWithoutGrantsCanDoNothingAndAReaderOnlyRead() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await SQL.run(url, "SELECT tidings.publish('user:1', 'e', '{}')")
            try await withRole(url, granted: []) { (_: String, nobody: String) async throws in
                #expect(await failure(nobody, "SELECT tidings.publish('user:1', 'e', '{}')") == "42501")
                #expect(await failure(nobody, "SELECT count(*) FROM tidings.events") == "42501")
            }
            try await withRole(url, granted: ["tidings_reader"]) { (_: String, reader: String) async throws in
                #expect(try await SQL.value(reader, "SELECT count(*) FROM tidings.events") == "1")
                #expect(try await SQL.value(reader, "SELECT value FROM tidings.state WHERE name = 'settled_through'") != nil)
                #expect(await failure(reader, "SELECT * FROM tidings.tickets") == "42501")
                #expect(await failure(reader, "SELECT * FROM tidings.idempotency_keys") == "42501")
                #expect(await failure(reader, "SELECT tidings.publish('user:1', 'e', '{}')") == "42501")
            }
        }
    }

    @Test func aGatewayRunsAsARoleWithOnlyTidingsGateway() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withRole(url, granted: ["tidings_gateway"]) { (_: String, gateway: String) async throws in
                try await withBackend(gateway, configure: {
                    $0.presenceInterval = .milliseconds(100)
                    $0.publishLinger = .seconds(60)
                }) { backend, bus in
                    let probe = try await readyProbe(backend, bus, ["user:u"])
                    defer { probe.close() }
                    let ids = try await backend.store.publish(
                        [newEvent("user:u", key: "k"), newEvent("user:u")], publisher: "p")
                    #expect(try await backend.store.publish([newEvent("user:u", key: "k")], publisher: "p") == [ids[0]])
                    #expect(try await probe.waitFor(count: 2).map(\.id) == ids)
                    let page = try await backend.store.replay(targets: [Target("user:u")!], after: 0, through: ids[1], limit: 10)
                    #expect(page.events.map(\.id) == ids)
                    #expect(try await backend.store.lastIssuedID() == ids[1])
                    // In the transaction the slot parked, the ids are drawn by the gateway's own
                    // statement, not take_event_ids (migration 0006).
                    let store = try #require(backend.store as? PostgresEventStore)
                    try await eventually("a parked transaction") { store.parkedTransactions == 1 }
                    let more = try await backend.store.publish([newEvent("user:u"), newEvent("user:u")], publisher: "p")
                    #expect(more == [ids[1] + 1, ids[1] + 2])
                    #expect(try await probe.waitFor(count: 4).map(\.id) == ids + more)
                    let ticket = try await backend.tickets.issue(
                        TicketGrant(user: "u", topics: [], tokenExpiresAt: nil), ttl: .seconds(30))
                    #expect(try await backend.tickets.redeem(ticket)?.user == "u")
                    let pruned = try await backend.pruner.pruneOnce()
                    #expect(pruned.ran)
                    // Presence: the reporter's rows, the sums, pruning dead instances.
                    try await eventually("presence reported") { try await backend.presence.user("probe").connections == 1 }
                    #expect(try await backend.reporter.pruneDead() == 0)
                }
                // Stopping, it deleted its presence.
                #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.instances") == "0")
                // It cannot change the order rules either.
                #expect(await failure(gateway, "ALTER SEQUENCE tidings.events_id_seq CACHE 20") == "42501")
            }
        }
    }

    @Test func aGatewayRefusesAnAlteredSequenceAndANewerSchema() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await SQL.run(url, "ALTER SEQUENCE tidings.events_id_seq CACHE 20")
            let cached = await #expect(throws: MigrationError.self) { try await withBackend(url) { _, _ in } }
            #expect(cached?.description.contains("tidings.events_id_seq has INCREMENT 1 and CACHE 20") == true)
            try await SQL.run(url, "ALTER SEQUENCE tidings.events_id_seq CACHE 1")
            try await withBackend(url) { _, _ in }

            try await SQL.run(url, "INSERT INTO tidings.schema_migrations (name, checksum) VALUES ('9999_from_the_future.sql', 'x')")
            let newer = await #expect(throws: MigrationError.self) { try await withBackend(url) { _, _ in } }
            #expect(newer?.description.contains("migrated by a newer Tidings") == true)
            #expect(newer?.description.contains("9999_from_the_future.sql") == true)
            await #expect(throws: MigrationError.self) { try await Migrator(url: url, logger: TestDatabase.logger).migrate() }
        }
    }
}
