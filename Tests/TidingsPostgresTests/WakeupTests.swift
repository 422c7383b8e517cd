import Testing
import TidingsCore

@testable import TidingsPostgres

/// The adaptive wake-up (`--wakeup notify`): a listener reads without being told while events
/// flow, sleeps when there are none, and only then do publishers send `NOTIFY tidings_wakeup`
/// (one that notified serialises its commit with every other notifying one).
@Suite(.enabled(if: TestDatabase.isConfigured, "TIDINGS_TEST_DATABASE_URL is not set"))
struct WakeupTests {
    /// No safety poll within a test's lifetime: what is delivered was read because the listener
    /// was awake or was woken.
    private static func sleepy(_ configuration: inout PostgresConfiguration) {
        configuration.wakeup = .notify
        configuration.safetyPollInterval = .seconds(3600)
        configuration.sleepAfter = .milliseconds(20)
    }

    /// The server processes of this database holding the sleep lock (shared: asleep).
    private static func sleepLockHolders(_ url: String) async throws -> [Int64] {
        try await SQL.run(
            url,
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND mode = 'ShareLock' AND objid = \(UInt32(truncatingIfNeeded: SleepLock.key)) AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).rows.map { try $0.int64(0) }
    }

    @Test func aSleepingListenerHoldsTheSleepLockAndIsWokenByAPublish() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url, configure: Self.sleepy) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["user:1"])
                defer { probe.close() }
                try await eventually("the listener to fall asleep") { backend.listener.status.asleep }
                #expect(try await Self.sleepLockHolders(url) == [Int64(try #require(backend.listener.status.backendPID))])
                let id = try await SQL.value(url, "SELECT tidings.publish('user:1', 'woken', '1')")
                let events = try await probe.waitFor(count: 1)
                #expect(events.map(\.id) == [EventID(id!)])
            }
        }
    }

    /// A REST publish that finds a parked transaction takes its ids in its own statement
    /// (`PostgresEventStore.takeAndInsertSQL`), not through `tidings.take_event_ids`: that
    /// statement must wake a sleeping listener too.
    @Test func aPublishInAParkedTransactionWakesASleepingListener() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(
                url,
                configure: {
                    Self.sleepy(&$0)
                    $0.publishLinger = .seconds(3600)
                    $0.poolSize = 4  // room for the pool's other users: nothing takes the parked one
                }
            ) { backend, bus in
                let store = try #require(backend.store as? PostgresEventStore)
                let probe = try await readyProbe(backend, bus, ["user:1"])
                defer { probe.close() }
                // A transaction of its own (take_event_ids); the slot parks the next one.
                let first = try await store.publish([newEvent("user:1", "first")], publisher: "p")
                #expect(try await probe.waitFor(count: 1).map(\.id) == first)
                for round in 1...3 {
                    try await eventually("a parked transaction, the listener asleep") {
                        store.parkedTransactions == 1 && backend.listener.status.asleep
                    }
                    let ids = try await store.publish([newEvent("user:1", "woken-\(round)")], publisher: "p")
                    let events = try await probe.waitFor(count: round + 1)
                    #expect(events.last?.id == ids[0])
                    #expect(events.last?.type == "woken-\(round)")
                }
            }
        }
    }

    @Test(arguments: [PostgresConfiguration.Wakeup.notify, .poll])
    func nobodyNotifiesAnAwakeListener(wakeup: PostgresConfiguration.Wakeup) async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await SQL.run(
                url,
                """
                CREATE TABLE orders (id int PRIMARY KEY, user_id int NOT NULL, total int NOT NULL);
                INSERT INTO orders SELECT n, n, 0 FROM generate_series(1, 50) AS n;
                CREATE TRIGGER orders_tidings AFTER UPDATE ON orders
                    FOR EACH ROW EXECUTE FUNCTION tidings.row_event('user_id', 'order');
                """)
            let watcher = try await TestConnection.open(url)
            let publisher = try await TestConnection.open(url)
            defer { Task { await watcher.close(); await publisher.close() } }
            try await watcher.execute("LISTEN tidings_wakeup")
            try await withBackend(
                url,
                configure: {
                    $0.wakeup = wakeup
                    $0.pollInterval = .milliseconds(5)
                    $0.safetyPollInterval = .seconds(3600)
                    $0.sleepAfter = .seconds(3600)  // awake all along
                }
            ) { backend, bus in
                let probe = try await readyProbe(backend, bus, (1...50).map { "user:\($0)" })
                defer { probe.close() }
                for n in 1...50 {
                    try await publisher.execute("SELECT tidings.publish('user:\(n)', 'sql', '\(n)')")
                    try await publisher.execute("UPDATE orders SET total = total + 1 WHERE id = \(n)")
                    // The gateway's own publish (after the first, in a parked transaction: its
                    // statement makes the wake-up test itself).
                    _ = try await backend.store.publish([newEvent("user:\(n)", "rest")], publisher: "p")
                }
                try await publisher.execute("BEGIN; SELECT tidings.take_event_ids(3); COMMIT")
                try await probe.waitFor(count: 150)
                // Notifications are queued in commit order: once the marker is in, any that a
                // publisher sent is too.
                try await publisher.execute("NOTIFY tidings_wakeup, 'marker'")
                var received: [String] = []
                try await eventually("the marker notification") {
                    received += try await watcher.notifications()
                    return received.contains("tidings_wakeup:marker")
                }
                #expect(received == ["tidings_wakeup:marker"])
            }
        }
    }

    /// The race the order lock closes: a publisher decided not to notify (nobody slept), then
    /// the listener wants to sleep while that publisher is still open. It must stay awake, or
    /// the commit would wake nobody.
    @Test func aListenerStaysAwakeWhileAPublisherThatSawItAwakeIsOpen() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let publisher = try await TestConnection.open(url)
            defer { Task { await publisher.close() } }
            // No listener yet, so nobody sleeps: this publish sends no notification.
            try await publisher.execute("BEGIN; SELECT tidings.publish('user:1', 'late', '1')")
            try await withBackend(url, configure: Self.sleepy) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["user:1"])
                defer { probe.close() }
                // Long enough for several attempts to sleep (sleepAfter is 20 ms); a listener that
                // fell asleep stops reading.
                let reads = backend.listener.status.reads
                try await eventually("several attempts to sleep") {
                    let status = backend.listener.status
                    return status.asleep || status.reads >= reads + 40
                }
                try await publisher.execute("COMMIT")
                let events = try await probe.waitFor(count: 1)
                #expect(events.map(\.type) == ["late"])
            }
        }
    }

    @Test func aListenerKilledAsleepTakesItsSleepLockWithIt() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withBackend(url, configure: Self.sleepy) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["user:1"])
                defer { probe.close() }
                try await eventually("the listener to fall asleep") { backend.listener.status.asleep }
                let first = try #require(backend.listener.status.backendPID)
                _ = try await SQL.run(url, "SELECT pg_terminate_backend(\(first))")
                try await eventually("the listener to reconnect and fall asleep again") {
                    let status = backend.listener.status
                    return status.backendPID != nil && status.backendPID != first && status.asleep
                }
                // The killed session's lock goes with it (once its process has exited).
                let current = Int64(try #require(backend.listener.status.backendPID))
                try await eventually("only the new session holding the sleep lock") {
                    try await Self.sleepLockHolders(url) == [current]
                }
                _ = try await SQL.value(url, "SELECT tidings.publish('user:1', 'after', '1')")
                try await probe.waitFor(count: 1)
            }
        }
    }
}
