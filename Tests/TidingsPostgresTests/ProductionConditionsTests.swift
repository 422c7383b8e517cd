import Foundation
import MetricsTestKit
import NIOCore
import NIOPosix
import Synchronization
import Testing
import TidingsCore
import TidingsTestSupport

@testable import TidingsPostgres

/// Exactly once and in order under what production brings: unrelated long transactions,
/// publishers left open, a DBA's locks, a listener behind retention, a lost COMMIT.
@Suite(.enabled(if: TestDatabase.isConfigured, "TIDINGS_TEST_DATABASE_URL is not set"))
struct ProductionConditionsTests {
    @Test(arguments: [true, false])
    func anUnrelatedOpenTransactionNeverHoldsDelivery(inAnotherDatabase: Bool) async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await TestDatabase.with(migrated: false) { (otherURL: String) async throws in
                // A forgotten session holding a transaction id, on a table Tidings never touches.
                let forgotten = try await TestConnection.open(inAnotherDatabase ? otherURL : url)
                try await forgotten.execute("CREATE TABLE unrelated (x int); BEGIN; INSERT INTO unrelated VALUES (1)")
                do {
                    // An order wait far longer than the test: waiting for that session would time it out.
                    try await withBackend(url, configure: { $0.orderWait = .seconds(600) }) { backend, bus in
                        let probe = try await readyProbe(backend, bus, ["user:u"])
                        defer { probe.close() }
                        for round in 0..<2 {
                            try await SQL.run(url, "BEGIN; SELECT tidings.publish('user:u', 'rolled.back', '{}'); ROLLBACK")
                            try await SQL.run(url, "SELECT tidings.publish('user:u', 'kept', $1::jsonb)", ["\(round)"])
                            let events = try await probe.waitFor(count: round + 1)
                            #expect(events.map(\.type) == Array(repeating: "kept", count: round + 1))
                        }
                        #expect(probe.ids == [2, 4])
                    }
                } catch {
                    await forgotten.close()
                    throw error
                }
                _ = try await forgotten.execute("ROLLBACK")
                await forgotten.close()
            }
        }
    }

    @Test func aPublisherLeftOpenHoldsDeliveryForOneOrderWaitNotOnePerHole() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let metrics = TestMetrics()
            try await withBackend(url, metrics: metrics, configure: { $0.orderWait = .milliseconds(300) }) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["user:u"])
                defer { probe.close() }
                let open = try await TestConnection.open(url)
                defer { Task { await open.close() } }
                try await open.execute("BEGIN; SELECT tidings.publish('user:u', 'held', '{}')")  // id 1, left open
                try await SQL.run(url, "SELECT tidings.publish('user:u', 'b', '{}')")  // 2: waits for 1
                #expect(try await probe.waitFor(count: 1).map(\.type) == ["b"])
                #expect(metrics.counterTotal(label: "tidings_order_wait_expired_total") == 1)
                // A later hole (a rollback) does not wait for the abandoned publisher again.
                try await SQL.run(url, "BEGIN; SELECT tidings.publish('user:u', 'rolled.back', '{}'); ROLLBACK")  // 3
                try await SQL.run(url, "SELECT tidings.publish('user:u', 'd', '{}')")  // 4
                #expect(try await probe.waitFor(count: 2).map(\.type) == ["b", "d"])
                #expect(metrics.counterTotal(label: "tidings_order_wait_expired_total") == 1)
                _ = try await open.execute("ROLLBACK")
            }
        }
    }

    @Test func aListenerBehindRetentionSendsLiveSubscribersAReset() async throws {
        try await TestDatabase.with { (url: String) async throws in
            // Poll mode with an interval longer than the test: the listener reads only when it
            // (re)connects.
            try await withBackend(url, configure: { $0.wakeup = .poll; $0.pollInterval = .seconds(3600) }) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["user:u"])
                defer { probe.close() }
                try await SQL.run(url, "SELECT tidings.publish('user:u', 'old', '{}')")
                try await SQL.run(url, "SELECT tidings.publish('user:u', 'old', '{}')")
                // The pruner's work (RetentionPruner): record the cut, delete what is at or below it.
                try await SQL.run(url, "UPDATE tidings.state SET value = 2 WHERE name = 'pruned_through'")
                try await SQL.run(url, "DELETE FROM tidings.events WHERE id <= 2")
                try await SQL.run(url, "SELECT tidings.publish('user:u', 'new', '{}')")
                let pid = try #require(backend.listener.backendPID)
                try await SQL.run(url, "SELECT pg_terminate_backend($1)", [String(pid)])
                let events = try await probe.waitFor(count: 2)
                #expect(events == [
                    Received(id: 2, type: "tidings.reset", data: #"{"reason":"history_expired","last_event_id":"0","oldest_available":"3"}"#),
                    Received(id: 3, type: "new", data: "{}"),
                ])
            }
        }
    }

    @Test func aLockOnTheStateTableNeverHoldsLiveDelivery() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url, configure: { $0.horizonWriteInterval = .zero }) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["user:u"])
                defer { probe.close() }
                let dba = try await TestConnection.open(url)
                defer { Task { await dba.close() } }
                try await dba.execute("BEGIN; LOCK TABLE tidings.state IN ACCESS EXCLUSIVE MODE")
                for n in 0..<3 {
                    try await SQL.run(url, "SELECT tidings.publish('user:u', 'while.locked', $1::jsonb)", ["\(n)"])
                    try await probe.waitFor(count: n + 1)
                }
                #expect(backend.readiness().isReady)
                _ = try await dba.execute("ROLLBACK")
            }
        }
    }

    @Test func aStalledListenerIsNotReadyAndItsLagGrows() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let metrics = TestMetrics()
            try await withBackend(url, metrics: metrics, configure: { $0.wakeup = .poll; $0.pollInterval = .milliseconds(20) }) { backend, bus in
                try await eventually("ready") { backend.readiness().isReady }
                let dba = try await TestConnection.open(url)
                defer { Task { await dba.close() } }
                try await dba.execute("BEGIN; LOCK TABLE tidings.events IN ACCESS EXCLUSIVE MODE")
                try await eventually("not ready while stalled") {
                    backend.readiness() == Readiness(isReady: false, reason: "listener_stalled")
                }
                try await eventually("lag shows the stall") {
                    backend.listener.deliveryLag > .milliseconds(500)
                        && (try? metrics.expectGauge("tidings_delivery_lag_seconds").lastValue).flatMap { $0 }.map { $0 > 0.5 } == true
                }
                _ = try await dba.execute("ROLLBACK")
                try await eventually("ready again") { backend.readiness().isReady }
                try await eventually("no lag") { backend.listener.deliveryLag == .zero }
                // And it delivers.
                let probe = try BusProbe(bus: bus, targets: [Target("user:u")!])
                defer { probe.close() }
                try await SQL.run(url, "SELECT tidings.publish('user:u', 'after', '{}')")
                try await probe.waitFor(count: 1)
            }
        }
    }

    @Test func gatewayPublishesCommitSynchronouslyWhateverTheDatabaseDefault() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let database = String(url.split(separator: "/").last!)
            try await SQL.run(url, "ALTER DATABASE \(database) SET synchronous_commit = off")
            try await SQL.run(
                url,
                """
                CREATE TABLE seen (setting text);
                CREATE FUNCTION record_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO public.seen VALUES (current_setting('synchronous_commit')); RETURN NULL; END $$;
                CREATE TRIGGER record AFTER INSERT ON tidings.events FOR EACH STATEMENT EXECUTE FUNCTION record_commit_mode();
                """)
            try await withBackend(url) { backend, _ in
                _ = try await backend.store.publish([newEvent("user:u")], publisher: "p")
            }
            // A DBA's own SQL keeps the database's setting.
            try await SQL.run(url, "SELECT tidings.publish('user:u', 'sql', '{}')")
            let modes = try await SQL.run(url, "SELECT setting FROM seen").rows.map { try $0.string(0) }
            #expect(modes == ["on", "off"])
        }
    }

    @Test func aResetNeverCarriesAnIdAboveTheStreamsHorizon() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url) { backend, _ in
                for _ in 0..<5 { try await SQL.run(url, "SELECT tidings.publish('user:u', 'e', '{}')") }
                try await SQL.run(url, "UPDATE tidings.state SET value = 2 WHERE name = 'pruned_through'")
                try await SQL.run(url, "DELETE FROM tidings.events WHERE id <= 2")
                // An instance whose horizon is 1 (behind the pruner): the reset says 1, not 2, so
                // a reconnect from it still gets anything that may yet appear above 1.
                var sent: [Received] = []
                let outcome = try await Replay.run(store: backend.store, targets: [Target("user:u")!], after: 0, through: 1) {
                    sent += $0.map { Received(id: $0.id, type: $0.type.rawValue, data: $0.data) }
                }
                #expect(sent == [
                    Received(id: 1, type: "tidings.reset", data: #"{"reason":"history_expired","last_event_id":"0","oldest_available":"3"}"#)
                ])
                #expect(outcome.floor == 1)
            }
        }
    }

    // MARK: - A lost COMMIT

    @Test func aCommitWhoseAnswerIsLostIsAskedAboutNotGuessed() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let (host, port) = try #require(CuttingProxy.hostAndPort(of: url))
            let proxy = try CuttingProxy(targetHost: host, targetPort: port)
            defer { proxy.stop() }
            try await withBackend(CuttingProxy.url(through: proxy, for: url)) { backend, _ in
                // Committed, answer lost: the ids, as if nothing happened.
                proxy.arm(.afterCommit)
                let ids = try await backend.store.publish([newEvent("user:u", "committed")], publisher: "p")
                #expect(proxy.cutCount == 1)
                #expect(try await SQL.value(url, "SELECT string_agg(id::text, ',') FROM tidings.events WHERE event = 'committed'") == "\(ids[0])")
                // Never committed: "nothing stored", and nothing is.
                proxy.arm(.insteadOfCommit)
                await #expect(throws: PostgresError.self) {
                    _ = try await backend.store.publish([newEvent("user:u", "aborted")], publisher: "p")
                }
                #expect(proxy.cutCount == 2)
                #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.events WHERE event = 'aborted'") == "0")
                // Committed or not cannot be known (the database cannot be asked): its own error.
                proxy.arm(.afterCommit)
                proxy.refuse(true)
                await #expect(throws: CommitOutcomeUnknownError.self) {
                    _ = try await backend.store.publish([newEvent("user:u", "unknown")], publisher: "p")
                }
                proxy.refuse(false)
            }
        }
    }

    // MARK: - Connections

    @Test func everyConnectionSpeaksUTF8WhateverItIsToldAndClosesOffTheCooperativePool() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let encoding = try await NIOThreadPool.singleton.runIfActive {
                let connection = try PGConnection.connect(
                    ConnectionParameters(url: url, overrides: [("client_encoding", "LATIN1")]), logger: TestDatabase.logger)
                defer { connection.close() }
                return try connection.query("SHOW client_encoding").single().string(0)
            }
            #expect(encoding == "UTF8")
            // The pool closes its connections when the backend shuts down.
            try await withBackend(url) { backend, _ in
                _ = try await backend.store.publish([newEvent("user:u")], publisher: "p")
            }
            #expect(PGConnection.closedInTask.load(ordering: .sequentiallyConsistent) == 0)
        }
    }
}
