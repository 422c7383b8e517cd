import Foundation
import NIOPosix
import Testing
import TidingsCore
import TidingsTestSupport

@testable import TidingsPostgres

/// A group-commit slot that has committed keeps the next transaction open for `linger`, so that
/// the next publish is one round trip: what that open transaction may and may not do.
@Suite(.enabled(if: TestDatabase.isConfigured, "TIDINGS_TEST_DATABASE_URL is not set"))
struct OpenTransactionTests {
    /// The pool's transactions that wait, open, for the next publish: pid and transaction id.
    static func openTransactions(_ url: String) async throws -> [(pid: String, xid: String)] {
        try await SQL.run(
            url,
            """
            SELECT pid::text, backend_xid::text FROM pg_stat_activity
            WHERE datname = current_database() AND state = 'idle in transaction' AND backend_xid IS NOT NULL
            """
        ).rows.map { (try $0.string(0), try $0.string(1)) }
    }

    @Test func theNextPublishRunsInTheTransactionOpenedAfterTheLast() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url, configure: { $0.poolSize = 4; $0.publishLinger = .seconds(60) }) { backend, _ in
                let store = try #require(backend.store as? PostgresEventStore)
                let first = try await store.publish([newEvent("user:a")], publisher: "p")
                try await eventually("a transaction open for the next publish") {
                    try await Self.openTransactions(url).count == 1 && store.parkedTransactions == 1
                }
                let xid = try await Self.openTransactions(url)[0].xid
                #expect(store.groupCommitState == (queued: 0, inFlight: 0))  // parked, no slot runs
                let second = try await store.publish([newEvent("user:a"), newEvent("topic:t")], publisher: "p")
                #expect(second == [first[0] + 1, first[0] + 2])
                // Both rows were inserted by the transaction that was waiting.
                #expect(try await SQL.value(url, "SELECT string_agg(DISTINCT xmin::text, ',') FROM tidings.events WHERE id > $1::bigint", ["\(first[0])"]) == xid)
            }
        }
    }

    /// The one statement of a publish in an open transaction draws its ids itself (migration
    /// 0006): under the order lock, which its transaction holds until it ends (the listener
    /// waits for that lock's holders at a hole), and in the events' order.
    @Test func theOneStatementHoldsTheOrderLockAndGivesIdsInTheEventsOrder() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let (transactionID, ids, holders) = try await NIOThreadPool.singleton.runIfActive {
                () throws -> (String, [EventID], [String]) in
                let connection = try PGConnection.connect(ConnectionParameters(url: url), logger: TestDatabase.logger)
                let other = try PGConnection.connect(ConnectionParameters(url: url), logger: TestDatabase.logger)
                defer {
                    connection.close()
                    other.close()
                }
                _ = try other.query("SELECT nextval('tidings.events_id_seq')")  // ids need not start at 1
                let open = try PostgresEventStore.open(on: connection, floor: 0)
                let answers = try connection.pipeline([
                    PGConnection.Statement(
                        sql: PostgresEventStore.takeAndInsertSQL,
                        parameters: [
                            PGArray.text(["user:a", "user:b topic:t", "user:c"]), PGArray.text(["one", "two", "three"]),
                            PGArray.text(["1", "2", "3"]),
                        ],
                        prepared: true)
                ])
                let ids = try PostgresEventStore.ids(fromArray: try answers[0].single().string(0), count: 3)
                // Before COMMIT the order lock's holders are this transaction.
                let holders = try other.query(
                    """
                    SELECT x.transactionid::text FROM pg_locks AS a JOIN pg_locks AS x USING (virtualtransaction)
                    WHERE a.locktype = 'advisory' AND a.granted
                        AND a.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND a.classid = \(OrderLock.classID) AND a.objid = \(OrderLock.objectID)
                        AND a.objsubid = 1 AND x.locktype = 'transactionid' AND x.mode = 'ExclusiveLock'
                    """
                ).rows.map { try $0.string(0) }
                _ = try connection.execute("COMMIT")
                #expect(try other.query(OrderLock.heldSQL).single().bool(0) == false)
                return (open.transactionID, ids, holders)
            }
            #expect(holders == [String(UInt64(transactionID)! & 0xFFFF_FFFF)])
            #expect(ids == [2, 3, 4])
            let rows = try await SQL.run(url, "SELECT id::text, event, array_to_string(targets, ' '), data::text FROM tidings.events ORDER BY id")
                .rows.map { [try $0.string(0), try $0.string(1), try $0.string(2), try $0.string(3)] }
            #expect(rows == [["2", "one", "user:a", "1"], ["3", "two", "user:b topic:t", "2"], ["4", "three", "user:c", "3"]])
        }
    }

    @Test func anOpenTransactionIsRolledBackAfterItsLingerAndTheConnectionKept() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url, configure: { $0.poolSize = 4; $0.publishLinger = .milliseconds(100) }) { backend, _ in
                let store = try #require(backend.store as? PostgresEventStore)
                let pidBefore = try await store.publish([newEvent("user:a")], publisher: "p")
                #expect(pidBefore == [1])
                try await eventually("the open transaction rolled back") {
                    try await Self.openTransactions(url).isEmpty && store.parkedTransactions == 0
                        && store.groupCommitState == (queued: 0, inFlight: 0)
                }
                // Nothing of it stays: the next publish begins afresh and takes the next id.
                #expect(try await store.publish([newEvent("user:a")], publisher: "p") == [2])
                #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.events") == "2")
            }
        }
    }

    @Test func aTerminatedOpenTransactionCostsAFreshConnectionNotTheRequest() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url, configure: { $0.poolSize = 4; $0.publishLinger = .seconds(60) }) { backend, _ in
                let store = try #require(backend.store as? PostgresEventStore)
                _ = try await store.publish([newEvent("user:a")], publisher: "p")
                try await eventually("a transaction open for the next publish") { try await Self.openTransactions(url).count == 1 }
                let pid = try await Self.openTransactions(url)[0].pid
                #expect(try await SQL.value(url, "SELECT pg_terminate_backend($1::int)::text", [pid]) == "true")
                try await eventually("the backend gone") {
                    try await SQL.value(url, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int", [pid]) == "0"
                }
                #expect(try await store.publish([newEvent("user:a", "after")], publisher: "p") == [2])
                #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.events WHERE event = 'after'") == "1")
            }
        }
    }

    @Test func aDatabaseThatEndsIdleTransactionsCostsTheNextRequestNothing() async throws {
        try await TestDatabase.with { (url: String) async throws in
            // The database's own setting, which the pool's sessions inherit.
            try await SQL.run(
                url,
                "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET idle_in_transaction_session_timeout = ''50ms''', current_database()); END $$")
            try await withBackend(url, configure: { $0.poolSize = 4; $0.publishLinger = .seconds(60) }) { backend, _ in
                let store = try #require(backend.store as? PostgresEventStore)
                for n in 1...3 {
                    #expect(try await store.publish([newEvent("user:a", "n", data: "\(n)")], publisher: "p") == [EventID(n)])
                    // The server ends the open transaction while it is parked.
                    try await eventually("the open transaction ended by the server") {
                        let open = try await Self.openTransactions(url)
                        return store.parkedTransactions == 1 && open.isEmpty
                    }
                }
                #expect(try await SQL.value(url, "SELECT string_agg(data::text, ',' ORDER BY id) FROM tidings.events") == "1,2,3")
            }
        }
    }

    @Test func aLostCommitInAnOpenTransactionIsAnsweredWithTheIDsItStored() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let (host, port) = try #require(CuttingProxy.hostAndPort(of: url))
            let proxy = try CuttingProxy(targetHost: host, targetPort: port)
            defer { proxy.stop() }
            let proxied = CuttingProxy.url(through: proxy, for: url)
            try await withBackend(proxied, configure: { $0.poolSize = 4; $0.publishLinger = .seconds(60) }) { backend, _ in
                let store = try #require(backend.store as? PostgresEventStore)
                // Committed, answer lost. The ids came in the round trip that was lost: they are
                // found by the transaction's own rows.
                _ = try await store.publish([newEvent("user:a")], publisher: "p")
                try await eventually("a transaction open for the next publish") { try await Self.openTransactions(url).count == 1 }
                proxy.arm(.afterCommit)
                let ids = try await store.publish(
                    [newEvent("user:a", "lost", data: "1"), newEvent("user:b", "lost", data: "2")], publisher: "p")
                #expect(proxy.cutCount == 1)
                let stored = try await SQL.run(url, "SELECT id, data::text FROM tidings.events WHERE event = 'lost' ORDER BY id").rows
                    .map { (try $0.int64(0), try $0.string(1)) }
                #expect(stored.map(\.0) == ids && stored.map(\.1) == ["1", "2"])
                // Never committed: the error, and nothing stored.
                _ = try await store.publish([newEvent("user:a")], publisher: "p")
                try await eventually("a transaction open for the next publish") { try await Self.openTransactions(url).count == 1 }
                proxy.arm(.insteadOfCommit)
                await #expect(throws: PostgresError.self) {
                    try await store.publish([newEvent("user:a", "aborted")], publisher: "p")
                }
                #expect(proxy.cutCount == 2)
                #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.events WHERE event = 'aborted'") == "0")
            }
        }
    }

    @Test func aParkedTransactionHoldsBackNeitherDeliveryNorAPoolThreadAndEndsWithThePool() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url, configure: { configuration in
                // One connection, and nothing else of the backend's that would take it meanwhile.
                configuration.poolSize = 1
                configuration.presenceInterval = .seconds(3600)
                configuration.pruneInterval = .seconds(3600)
                configuration.publishLinger = .seconds(600)
                configuration.orderWait = .seconds(600)
            }) { backend, bus in
                let store = try #require(backend.store as? PostgresEventStore)
                // The pruner's and the presence reporter's first runs (at start) may take the
                // parked transaction's connection: publish until one stays parked.
                var published: [EventID] = []
                try await eventually("a transaction parked for the next publish") {
                    if store.parkedTransactions == 1, try await Self.openTransactions(url).count == 1 { return true }
                    published += try await store.publish([newEvent("user:a")], publisher: "p")
                    return false
                }
                // Another publisher stores an event after it: delivered without waiting for the
                // parked transaction (it took no event id, so no listener waits for it; a wait
                // would last `orderWait`, ten minutes).
                let other = try #require(Int64(try await SQL.value(url, "SELECT tidings.publish('user:a', 'other', '{}')") ?? ""))
                #expect(other == published.last! + 1)
                try await eventually("the other publisher's event delivered") { bus.lastDelivered == other }
                // No pool thread waits with it: the pool's only thread serves a replay, on the
                // parked transaction's connection (rolled back), not on a connection more.
                let sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                #expect(try await SQL.value(url, sessions) == "2")  // the listener and the parked one
                let replayed = try await store.replay(targets: [Target("user:a")!], after: 0, through: other, limit: 100)
                #expect(replayed.events.map(\.id) == published + [other])
                #expect(store.parkedTransactions == 0)
                #expect(try await SQL.value(url, sessions) == "2")
                #expect(try await Self.openTransactions(url).isEmpty)
                // Parked again for the shutdown.
                _ = try await store.publish([newEvent("user:a")], publisher: "p")
                try await eventually("a transaction parked again") {
                    try await Self.openTransactions(url).count == 1 && store.parkedTransactions == 1
                }
            }
            // The pool's shutdown rolled it back (ten minutes before its linger would have).
            try await eventually("no transaction left open") { try await Self.openTransactions(url).isEmpty }
        }
    }
}
