import Foundation
import Testing
import TidingsCore

@testable import TidingsPostgres

/// PostgresEventStore, RetentionPruner and PostgresTicketStore against a real PostgreSQL.
@Suite(.enabled(if: TestDatabase.isConfigured, "TIDINGS_TEST_DATABASE_URL is not set"))
struct StoreTests {
    @Test func batchIsOneTransactionWithIdsInArrayOrder() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["user:1", "topic:a"])
                defer { probe.close() }
                let batch = (0..<1000).map { newEvent($0 % 2 == 0 ? "user:1" : "topic:a", "n", data: #"{"n":\#($0)}"#) }
                let ids = try await backend.store.publish(batch, publisher: "p")
                #expect(ids == Array(1...1000))
                let events = try await probe.waitFor(count: 1000)
                #expect(events.map(\.id) == ids)
                #expect(events[999].data == #"{"n":999}"#)
                // A batch with one bad event stores nothing.
                var bad = [newEvent("user:1"), newEvent("user:1")]
                bad[1].data = "{not json"
                await #expect(throws: PostgresError.self) { try await backend.store.publish(bad, publisher: "p") }
                #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.events") == "1000")
                // The pool recovered from the failed transaction.
                let next = try await backend.store.publish([newEvent("user:1")], publisher: "p")
                #expect(next.count == 1 && next[0] > 1000)
            }
        }
    }

    @Test func idempotencyKeysReturnTheFirstIdAndStoreNothing() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url) { backend, _ in
                let store = backend.store
                let first = try await store.publish([newEvent("user:1", key: "k1")], publisher: "alice")
                let again = try await store.publish([newEvent("user:1", data: #"{"other":1}"#, key: "k1")], publisher: "alice")
                #expect(again == first)
                let otherPublisher = try await store.publish([newEvent("user:1", key: "k1")], publisher: "bob")
                #expect(otherPublisher != first)
                // Within one batch: a repeated key and a known key.
                let batch = try await store.publish(
                    [newEvent("user:1", key: "k2"), newEvent("user:1", key: "k2"), newEvent("user:1", key: "k1"), newEvent("user:1")],
                    publisher: "alice")
                #expect(batch[0] == batch[1])
                #expect(batch[2] == first[0])
                #expect(batch[3] > batch[0])
                #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.events") == "4")
                // A key older than the retention is free again.
                try await SQL.run(url, "UPDATE tidings.idempotency_keys SET created_at = now() - interval '2 days' WHERE key = 'k1' AND publisher = 'alice'")
                let expired = try await store.publish([newEvent("user:1", key: "k1")], publisher: "alice")
                #expect(expired != first)
                #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.events") == "5")
            }
        }
    }

    @Test func concurrentDuplicatesStoreOnce() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url, configure: { $0.poolSize = 4 }) { backend, _ in
                let store = backend.store
                let results = try await withThrowingTaskGroup(of: [EventID].self) { group in
                    for n in 0..<12 {
                        group.addTask {
                            try await store.publish([newEvent("user:1", key: "same"), newEvent("user:2", key: "k\(n % 3)")], publisher: "p")
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                #expect(Set(results.map { $0[0] }).count == 1)
                #expect(Set(results.map { $0[1] }).count == 3)
                #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.events") == "4")
            }
        }
    }

    @Test func replayPagesByTargetAndReportsCutAndOldestRetained() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url) { backend, _ in
                let store = backend.store
                var mine: [EventID] = []
                for n in 0..<10 {
                    let ids = try await store.publish([newEvent(n % 2 == 0 ? "user:1" : "topic:x", data: "\(n)")], publisher: "p")
                    if n % 2 == 0 { mine += ids }
                }
                let empty = try await store.replay(targets: [.user("1")], after: 0, through: 20, limit: 3)
                #expect(empty.events.map(\.id) == Array(mine.prefix(3)))
                #expect(empty.cut == 0 && empty.oldestRetained == 1)
                let next = try await store.replay(targets: [.user("1")], after: mine[2], through: 20, limit: 3)
                #expect(next.events.compactMap(\.id) == Array(mine.suffix(2)))
                let bounded = try await store.replay(targets: [.user("1"), .topic("x")], after: 2, through: 5, limit: 100)
                #expect(bounded.events.compactMap(\.id) == [3, 4, 5])
                #expect(bounded.events[0].data == "2")
                // Events 1…3 expire: gone from replay before they are pruned.
                try await SQL.run(url, "UPDATE tidings.events SET created_at = now() - interval '2 days' WHERE id <= 3")
                let expired = try await store.replay(targets: [.user("1")], after: 0, through: 20, limit: 100)
                #expect(expired.cut == 3)
                #expect(expired.oldestRetained == 4)
                #expect(expired.events.compactMap(\.id) == [5, 7, 9])
                #expect(expired.hasGap(after: 0))
                #expect(!expired.hasGap(after: 3))
                // Asked from a resume point, the store looks for expired ids after it only.
                let straddling = try await store.replay(targets: [.user("1")], after: 2, through: 20, limit: 100)
                #expect(straddling.cut == 3 && straddling.oldestRetained == 4 && straddling.hasGap(after: 2))
                let past = try await store.replay(targets: [.user("1")], after: 3, through: 20, limit: 100)
                #expect(!past.hasGap(after: 3))
                #expect(past.events.compactMap(\.id) == [5, 7, 9])
            }
        }
    }

    @Test func prunerDeletesExpiredEventsKeysAndTickets() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url) { backend, _ in
                for n in 0..<12 {
                    _ = try await backend.store.publish([newEvent("user:1", key: "k\(n)")], publisher: "p")
                }
                _ = try await backend.tickets.issue(TicketGrant(user: "1", topics: [], tokenExpiresAt: nil), ttl: .seconds(60))
                _ = try await backend.tickets.issue(TicketGrant(user: "2", topics: [], tokenExpiresAt: nil), ttl: .seconds(60))
                try await SQL.run(url, "UPDATE tidings.events SET created_at = now() - interval '2 days' WHERE id <= 7")
                try await SQL.run(url, "UPDATE tidings.idempotency_keys SET created_at = now() - interval '2 days' WHERE event_id <= 5")
                try await SQL.run(url, "UPDATE tidings.tickets SET expires_at = now() - interval '1 second' WHERE subject = '1'")
                let pruner = RetentionPruner(pool: backend.pool, retention: .seconds(86_400), interval: .seconds(60), batchSize: 3, logger: TestDatabase.logger)
                let pruned = try await pruner.pruneOnce()
                #expect(pruned == RetentionPruner.Pruned(events: 7, keys: 5, tickets: 1, ran: true))
                #expect(try await SQL.value(url, "SELECT min(id) FROM tidings.events") == "8")
                #expect(try await SQL.value(url, "SELECT value FROM tidings.state WHERE name = 'pruned_through'") == "7")
                let page = try await backend.store.replay(targets: [.user("1")], after: 0, through: 100, limit: 100)
                #expect(page.cut == 7 && page.oldestRetained == 8)
                #expect(try await pruner.pruneOnce() == RetentionPruner.Pruned(ran: true))
                // Another gateway holding the lock: this round is skipped.
                let other = try await TestConnection.open(url)
                try await other.query("SELECT pg_advisory_lock($1)", [String(RetentionPruner.lockKey)])
                #expect(try await pruner.pruneOnce() == RetentionPruner.Pruned(ran: false))
                await other.close()
            }
        }
    }

    @Test func ticketsAreSingleUseAcrossGatewaysAndExpire() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url) { backendA, _ in
                try await withBackend(url) { backendB, _ in
                    let expiry = Date(timeIntervalSince1970: 2_000_000_000)
                    let grant = TicketGrant(user: "42", topics: ["news.*", "ops", #"we"ird\"#], tokenExpiresAt: expiry)
                    // Ten minutes: on a machine busy with the parallel suites, 30 s between issue
                    // and redeem was seen once. Expiry is tested below by moving expires_at.
                    let ticket = try await backendA.tickets.issue(grant, ttl: .seconds(600))
                    #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.tickets WHERE digest = convert_to($1, 'UTF8')", [ticket]) == "0")
                    async let first = backendA.tickets.redeem(ticket)
                    async let second = backendB.tickets.redeem(ticket)
                    let results = try await [first, second]
                    #expect(results.compactMap { $0 } == [grant])
                    #expect(try await backendB.tickets.redeem(ticket) == nil)
                    #expect(try await backendA.tickets.redeem("unknown") == nil)
                    let noExpiry = TicketGrant(user: "7", topics: [], tokenExpiresAt: nil)
                    let short = try await backendA.tickets.issue(noExpiry, ttl: .seconds(30))
                    try await SQL.run(url, "UPDATE tidings.tickets SET expires_at = now() - interval '1 second'")
                    #expect(try await backendB.tickets.redeem(short) == nil)
                    let fresh = try await backendA.tickets.issue(noExpiry, ttl: .seconds(600))
                    #expect(try await backendB.tickets.redeem(fresh) == noExpiry)
                }
            }
        }
    }
}
