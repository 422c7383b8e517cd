import Foundation
import Metrics
import MetricsTestKit
import NIOPosix
import Testing
import TidingsCore
import TidingsTestSupport

@testable import TidingsPostgres

/// Group commit: concurrent REST publishes share one transaction and one COMMIT, each request
/// keeping its own all-or-nothing answer and exact idempotency.
@Suite(.enabled(if: TestDatabase.isConfigured, "TIDINGS_TEST_DATABASE_URL is not set"))
struct GroupCommitTests {
    @Test func concurrentPublishesShareTransactionsAndEachGetsItsOwnIds() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let metrics = TestMetrics()
            try await withBackend(url, metrics: metrics) { backend, _ in
                let store = backend.store
                // 64 requests at once: most of one event, every eighth a batch of three.
                let requests = (0..<64).map { n in
                    (0..<(n % 8 == 0 ? 3 : 1)).map { part in newEvent("user:\(n)", "n", data: #"{"n":\#(n),"part":\#(part)}"#) }
                }
                let results = try await withThrowingTaskGroup(of: (Int, [EventID]).self) { group in
                    for (n, events) in requests.enumerated() {
                        group.addTask { (n, try await store.publish(events, publisher: "p")) }
                    }
                    return try await group.reduce(into: [Int: [EventID]]()) { $0[$1.0] = $1.1 }
                }
                let eventCount = requests.map(\.count).reduce(0, +)
                let allIDs = results.values.flatMap { $0 }
                #expect(Set(allIDs).count == eventCount)
                for (n, ids) in results {
                    #expect(ids.count == requests[n].count)
                    #expect(ids == ids.sorted())
                }
                // Each id holds its own request's event.
                let rows = try await SQL.run(url, "SELECT id, data::text FROM tidings.events")
                var stored: [EventID: String] = [:]
                for row in rows.rows { stored[try row.int64(0)] = try row.string(1) }
                #expect(stored.count == eventCount)
                for (n, ids) in results {
                    for (part, id) in ids.enumerated() { #expect(stored[id] == #"{"n":\#(n),"part":\#(part)}"#) }
                }
                // Far fewer transactions than requests, as the database saw them (one xmin per
                // transaction) and as the metric counts them.
                let transactions = try #require(Int(try await SQL.value(url, "SELECT count(DISTINCT xmin::text) FROM tidings.events") ?? ""))
                #expect(transactions <= 32, "\(transactions) transactions for 64 requests")
                #expect(metrics.counterTotal(label: "tidings_publish_transactions_total") == transactions)
                #expect(metrics.counterTotal(label: "tidings_events_published_total") == eventCount)
            }
        }
    }

    @Test func requestsQueuedBehindBusyConnectionsGoInOneTransaction() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let metrics = TestMetrics()
            try await withBackend(url, metrics: metrics) { backend, _ in
                let store = try #require(backend.store as? PostgresEventStore)
                let requests = (0..<62).map { PublishEntry(events: [newEvent("user:\($0)", data: "\($0)")], publisher: "p") }
                let results = try await publishAsOneGroup(requests, store: store, url: url, poolSize: 2)
                let ids = try results.map { try $0.get() }
                // Arrival order is id order: the group takes ids in one range.
                #expect(ids == (0..<62).map { [EventID(3 + $0)] })
                #expect(try await SQL.value(url, "SELECT count(DISTINCT xmin::text) FROM tidings.events") == "3")
                #expect(try await SQL.value(url, "SELECT count(DISTINCT xmin::text) FROM tidings.events WHERE event <> 'filler'") == "1")
                #expect(metrics.counterTotal(label: "tidings_publish_transactions_total") == 3)
                #expect(metrics.counterTotal(label: "tidings_events_published_total") == 64)
            }
        }
    }

    @Test func aRejectedRequestFailsAloneAndTheOthersAreStoredOnce() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await SQL.run(
                url,
                """
                CREATE FUNCTION public.reject_boom() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.event = 'boom' THEN RAISE EXCEPTION 'boom is rejected'; END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER reject_boom BEFORE INSERT ON tidings.events FOR EACH ROW EXECUTE FUNCTION public.reject_boom();
                """)
            let metrics = TestMetrics()
            try await withBackend(url, metrics: metrics) { backend, _ in
                let store = try #require(backend.store as? PostgresEventStore)
                let requests = [
                    PublishEntry(events: [newEvent("user:a", data: "0", key: "k0")], publisher: "p"),
                    PublishEntry(events: [newEvent("user:a", "boom", data: "1", key: "kb")], publisher: "p"),
                    // The key of the rejected request: as if after it, so stored.
                    PublishEntry(events: [newEvent("user:a", data: "2", key: "kb")], publisher: "p"),
                    // A batch with one rejected event: nothing of it.
                    PublishEntry(events: [newEvent("user:a", data: "3", key: "kq"), newEvent("user:a", "boom", data: #""3b""#)], publisher: "q"),
                ] + (4..<10).map { PublishEntry(events: [newEvent("user:a", data: "\($0)")], publisher: "p") }
                let results = try await publishAsOneGroup(requests, store: store, url: url, poolSize: 2)
                for bad in [1, 3] {
                    #expect(throws: PostgresError.self) { try results[bad].get() }
                    if case .failure(let error as PostgresError) = results[bad] { #expect(error.sqlState == "P0001") }
                }
                var stored: [EventID: String] = [:]
                for row in try await SQL.run(url, "SELECT id, data::text FROM tidings.events WHERE event <> 'filler'").rows {
                    stored[try row.int64(0)] = try row.string(1)
                }
                let good = [0, 2, 4, 5, 6, 7, 8, 9]
                #expect(stored.count == good.count, "\(stored.sorted { $0.key < $1.key })")
                for n in good {
                    let ids = try results[n].get()
                    #expect(ids.count == 1 && stored[ids[0]] == "\(n)")
                }
                // The group ran together first: its 10 ids were taken, then rolled back. Then each
                // request alone, in arrival order.
                #expect(try results[0].get() == [13])
                let keys = try await SQL.run(url, "SELECT publisher || '/' || key, event_id FROM tidings.idempotency_keys ORDER BY 1").rows
                    .map { "\(try $0.string(0))=\(try $0.int64(1))" }
                #expect(keys == ["p/k0=\(try results[0].get()[0])", "p/kb=\(try results[2].get()[0])"])
                #expect(metrics.counterTotal(label: "tidings_publish_transactions_total") == 2 + 8)
                #expect(metrics.counterTotal(label: "tidings_events_published_total") == 2 + 8)
            }
        }
    }

    @Test func idempotencyKeysWithinAGroupActAsOneAfterAnother() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let metrics = TestMetrics()
            try await withBackend(url, metrics: metrics) { backend, _ in
                let store = try #require(backend.store as? PostgresEventStore)
                let old = try await store.publish([newEvent("user:a", data: #""old""#, key: "old")], publisher: "p")
                let requests = [
                    PublishEntry(events: [newEvent("user:a", data: "0", key: "same")], publisher: "p"),
                    PublishEntry(events: [newEvent("user:a", data: "1", key: "same")], publisher: "q"),
                    PublishEntry(events: [newEvent("user:a", data: "2", key: "same")], publisher: "p"),
                    PublishEntry(events: [newEvent("user:a", data: "3", key: "other"), newEvent("user:a", data: #""3b""#, key: "other")], publisher: "p"),
                    PublishEntry(events: [newEvent("user:a", data: "4", key: "same"), newEvent("user:a", data: #""4b""#)], publisher: "q"),
                    PublishEntry(events: [newEvent("user:a", data: "5", key: "old")], publisher: "p"),
                    PublishEntry(events: [newEvent("user:a", data: "6", key: "old")], publisher: "q"),
                    PublishEntry(events: [newEvent("user:a", data: "7", key: "same")], publisher: "p"),
                ]
                let results = try await publishAsOneGroup(requests, store: store, url: url, poolSize: 2)
                let ids = try results.map { try $0.get() }
                let pSame = ids[0][0], qSame = ids[1][0]
                #expect(pSame != qSame)
                #expect(ids[2] == [pSame] && ids[7] == [pSame])
                #expect(ids[3][0] == ids[3][1] && ids[3][0] != pSame)
                #expect(ids[4][0] == qSame && ids[4][1] > qSame)
                #expect(ids[5] == old)
                #expect(ids[6][0] != old[0])
                var stored: [EventID: String] = [:]
                for row in try await SQL.run(url, "SELECT id, data::text FROM tidings.events").rows {
                    stored[try row.int64(0)] = try row.string(1)
                }
                // old, two fillers, p/same, q/same, p/other, 4b, q/old: the first of each key stored once.
                #expect(stored.count == 8)
                #expect(stored[pSame] == "0" && stored[qSame] == "1" && stored[ids[3][0]] == "3")
                #expect(stored[ids[4][1]] == #""4b""# && stored[ids[6][0]] == "6" && stored[old[0]] == #""old""#)
                #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.idempotency_keys") == "5")
                #expect(try await SQL.value(url, "SELECT event_id FROM tidings.idempotency_keys WHERE publisher = 'q' AND key = 'same'") == "\(qSame)")
                // One transaction for the group (plus the first publish and the two fillers).
                #expect(metrics.counterTotal(label: "tidings_publish_transactions_total") == 4)
            }
        }
    }

    @Test func aLonePublishIsOneTransactionAndWaitsForNoCompany() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let metrics = TestMetrics()
            try await withBackend(url, metrics: metrics, configure: { $0.poolSize = 1 }) { backend, _ in
                let store = try #require(backend.store as? PostgresEventStore)
                let clock = ContinuousClock()
                var durations: [Duration] = []
                for n in 1...20 {
                    let start = clock.now
                    #expect(try await store.publish([newEvent("user:a")], publisher: "p") == [EventID(n)])
                    durations.append(clock.now - start)
                    #expect(metrics.counterTotal(label: "tidings_publish_transactions_total") == n)
                    #expect(store.groupCommitState == (queued: 0, inFlight: 0))  // the slot is free before the answer
                }
                #expect(try await SQL.value(url, "SELECT count(DISTINCT xmin::text) FROM tidings.events") == "20")
                // No timer collects company: the median lone publish is a few round trips and one commit.
                #expect(durations.sorted()[10] < .milliseconds(200), "\(durations)")
            }
        }
    }

    @Test func aGroupWithoutKeysIsOneRoundTripInAnOpenTransactionAndKeysAddTheirOwn() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let metrics = TestMetrics()
            let counts = try await NIOThreadPool.singleton.runIfActive { () throws -> [Int64] in
                let connection = try PGConnection.connect(ConnectionParameters(url: url), logger: TestDatabase.logger)
                defer { connection.close() }
                connection.roundTrips = Counter(label: "round_trips", factory: metrics)
                var counts: [Int64] = []
                var open: PostgresEventStore.OpenTransaction?
                func measure(_ requests: [PublishEntry]) throws {
                    let before = metrics.counterTotal(label: "round_trips")
                    let (result, next) = try PostgresEventStore.publish(
                        requests, retentionSeconds: "3600", on: connection, in: open, openNext: true)
                    counts.append(metrics.counterTotal(label: "round_trips") - before)
                    // The next transaction was opened with this one's COMMIT, above its ids: a new
                    // one each time (-1 otherwise).
                    guard let next, next.floor >= result.highestID, next != open else {
                        counts.append(-1)
                        return
                    }
                    open = next
                }
                // No open transaction yet: BEGIN with the ids, then INSERT and COMMIT pipelined
                // (the next transaction opened in the same round trip).
                try measure([PublishEntry(events: [newEvent("user:a")], publisher: "p")])
                // In the open transaction: the ids and the INSERT in one statement, and COMMIT.
                try measure((0..<3).map { _ in PublishEntry(events: [newEvent("user:a"), newEvent("topic:t")], publisher: "p") })
                // A new key: claim, ids, then INSERT, key and COMMIT pipelined.
                let keyed = newEvent("user:a", key: "k1")
                try measure([PublishEntry(events: [keyed], publisher: "p")])
                // A key used before: claim, look-up, then COMMIT alone.
                try measure([PublishEntry(events: [keyed], publisher: "p")])
                try measure([PublishEntry(events: [newEvent("user:a", key: "k2")], publisher: "p")])
                // Every statement but BEGIN and COMMIT was prepared on the session once, in the
                // round trip of its first run (the transaction id with and without ids, the
                // INSERT, the ids with the INSERT, the claim, the ids, the look-up, the keys'
                // ids), and only executed afterwards.
                let prepared = try connection.query("SELECT count(*), count(DISTINCT statement) FROM pg_prepared_statements").single()
                counts.append(contentsOf: [try prepared.int64(0), try prepared.int64(1)])
                return counts
            }
            #expect(counts == [2, 1, 3, 3, 3, 8, 8])
            #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.events") == "9")
        }
    }

    @Test func aLostCommitIsResolvedForEveryRequestOfTheGroup() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let (host, port) = try #require(CuttingProxy.hostAndPort(of: url))
            let proxy = try CuttingProxy(targetHost: host, targetPort: port)
            defer { proxy.stop() }
            let metrics = TestMetrics()
            try await withBackend(CuttingProxy.url(through: proxy, for: url), metrics: metrics, configure: { $0.poolSize = 1 }) { backend, _ in
                let store = try #require(backend.store as? PostgresEventStore)
                // Committed, answer lost: every request gets its ids.
                let committed = (0..<5).map { PublishEntry(events: [newEvent("user:a", "committed", data: "\($0)")], publisher: "p") }
                let ids = try await publishAsOneGroup(committed, store: store, url: url, poolSize: 1, fillersFail: true) {
                    proxy.arm(.afterCommit)
                }.map { try $0.get() }
                #expect(proxy.cutCount == 1)
                var stored: [EventID: String] = [:]
                for row in try await SQL.run(url, "SELECT id, data::text FROM tidings.events WHERE event = 'committed'").rows {
                    stored[try row.int64(0)] = try row.string(1)
                }
                #expect(stored.count == 5)
                for (n, requestIDs) in ids.enumerated() { #expect(requestIDs.count == 1 && stored[requestIDs[0]] == "\(n)") }
                #expect(metrics.counterTotal(label: "tidings_publish_transactions_total") == 1)
                // Never committed: every request gets the error, and nothing is stored.
                let aborted = (0..<5).map { PublishEntry(events: [newEvent("user:a", "aborted", data: "\($0)")], publisher: "p") }
                let results = try await publishAsOneGroup(aborted, store: store, url: url, poolSize: 1, fillersFail: true) {
                    proxy.arm(.insteadOfCommit)
                }
                #expect(proxy.cutCount == 2)
                for result in results { #expect(throws: PostgresError.self) { try result.get() } }
                #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.events WHERE event = 'aborted'") == "0")
                #expect(metrics.counterTotal(label: "tidings_publish_transactions_total") == 1)
            }
        }
    }
}

/// Publishes `requests` so that they reach the database as one group: first `poolSize` filler
/// requests (one `filler` event to `user:filler` each, the next ids) take every transaction
/// slot and are held at their INSERT by a trigger waiting on an advisory lock the test holds;
/// then `requests` arrive one after the other and wait; then the lock goes, the fillers commit
/// and the first slot free takes everything waiting. (Only the fillers are held: a lock on the
/// whole table would also hold the backend's pruner, which shares the pool.) With
/// `fillersFail` the fillers are rejected once let go (ROLLBACK, no COMMIT): the group's COMMIT
/// is the next one.
func publishAsOneGroup(
    _ requests: [PublishEntry],
    store: PostgresEventStore,
    url: String,
    poolSize: Int,
    fillersFail: Bool = false,
    whenFillersHeld: () -> Void = {}
) async throws -> [Result<[EventID], any Error>] {
    try await SQL.run(
        url,
        """
        CREATE OR REPLACE FUNCTION public.hold_fillers() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.event IN ('filler', 'filler.rejected') THEN
                PERFORM pg_advisory_lock_shared(4242);
                PERFORM pg_advisory_unlock_shared(4242);
            END IF;
            IF NEW.event = 'filler.rejected' THEN RAISE EXCEPTION 'filler rejected'; END IF;
            RETURN NEW;
        END $$;
        CREATE OR REPLACE TRIGGER hold_fillers BEFORE INSERT ON tidings.events
            FOR EACH ROW EXECUTE FUNCTION public.hold_fillers();
        """)
    let holder = try await TestConnection.open(url)
    try await holder.query("SELECT pg_advisory_lock(4242)")
    do {
        let results = try await withThrowingTaskGroup(of: (Int, Result<[EventID], any Error>).self) { tasks in
            do {
                for _ in 0..<poolSize {
                    let filler = newEvent("user:filler", fillersFail ? "filler.rejected" : "filler")
                    tasks.addTask { (-1, await captured { try await store.publish([filler], publisher: "filler") }) }
                }
                // At the INSERT, so past take_event_ids: the fillers' ids come before the group's.
                try await eventually("fillers held") {
                    try await SQL.value(
                        url,
                        """
                        SELECT count(*) FROM pg_locks
                        WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database())
                            AND locktype = 'advisory' AND objid = 4242 AND NOT granted
                        """) == "\(poolSize)"
                }
                #expect(store.groupCommitState == (queued: 0, inFlight: poolSize))
                // The fillers' own COMMITs were sent with their INSERTs (one pipeline): what the
                // caller arms now meets the group's COMMIT first.
                whenFillersHeld()
                for (index, request) in requests.enumerated() {
                    tasks.addTask { (index, await captured { try await store.publish(request.events, publisher: request.publisher) }) }
                    try await eventually("request \(index) queued") { store.groupCommitState.queued == index + 1 }
                }
            } catch {
                // Let the fillers finish: the task group waits for them.
                _ = try? await holder.query("SELECT pg_advisory_unlock(4242)")
                throw error
            }
            try await holder.query("SELECT pg_advisory_unlock(4242)")
            var results = [Result<[EventID], any Error>?](repeating: nil, count: requests.count)
            for try await (index, result) in tasks {
                if index >= 0 { results[index] = result } else if !fillersFail { _ = try result.get() }
            }
            return results.map { $0! }
        }
        await holder.close()
        return results
    } catch {
        await holder.close()
        throw error
    }
}

/// What `body` returned or threw.
func captured<T>(_ body: () async throws -> T) async -> Result<T, any Error> {
    do {
        return .success(try await body())
    } catch {
        return .failure(error)
    }
}
