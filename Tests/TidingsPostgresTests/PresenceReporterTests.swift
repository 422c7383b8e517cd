import Testing
import TidingsCore

@testable import TidingsPostgres

/// What the reporter writes: the difference between two snapshots of the bus.
@Suite struct PresenceSnapshotTests {
    private typealias Key = PresenceSnapshot.Key

    @Test func aSnapshotHasOneRowPerTargetAndUserWithStreams() {
        let snapshot = PresenceSnapshot([
            .user("42"): ["42": 2],
            .topic("news.eu"): ["42": 1, "7": 3],
            .topic("empty"): ["7": 0],
        ])
        #expect(snapshot.rows == [
            Key(target: "user:42", user: "42"): 2,
            Key(target: "topic:news.eu", user: "42"): 1,
            Key(target: "topic:news.eu", user: "7"): 3,
        ])
    }

    @Test func changesAreTheRowsAddedChangedAndGoneInKeyOrder() {
        let before = PresenceSnapshot([.user("42"): ["42": 2], .user("7"): ["7": 1], .topic("t"): ["42": 1, "7": 1]])
        let after = PresenceSnapshot([.user("42"): ["42": 2], .user("9"): ["9": 1], .topic("t"): ["42": 2, "9": 1]])
        let changes = after.changes(since: before)
        #expect(changes.upserts.map { $0.key } == [
            Key(target: "topic:t", user: "42"), Key(target: "topic:t", user: "9"), Key(target: "user:9", user: "9"),
        ])
        #expect(changes.upserts.map { $0.connections } == [2, 1, 1])
        #expect(changes.removals == [Key(target: "topic:t", user: "7"), Key(target: "user:7", user: "7")])
        #expect(changes.count == 5)
        #expect(after.changes(since: after).isEmpty)
        #expect(after.all.upserts.count == 4)
        #expect(after.all.removals.isEmpty)
    }
}

/// The reporter against a real database, driven one report at a time (its service not run).
@Suite(.enabled(if: TestDatabase.isConfigured, "TIDINGS_TEST_DATABASE_URL is not set"))
struct PresenceReporterTests {
    /// A started backend whose services do not run: the test calls the reporter itself.
    private func withReporter<T>(
        _ url: String, interval: Duration = .seconds(2), _ body: (PresenceReporter, any PresenceSource, EventBus) async throws -> T
    ) async throws -> T {
        let bus = EventBus()
        var configuration = PostgresConfiguration(url: url, poolSize: 2)
        configuration.presenceInterval = interval
        let backend = try await PostgresBackend.start(configuration: configuration, bus: bus, logger: TestDatabase.logger)
        do {
            let value = try await body(backend.reporter, backend.presence, bus)
            await backend.shutdown()
            return value
        } catch {
            await backend.shutdown()
            throw error
        }
    }

    private func rows(_ url: String) async throws -> [String] {
        try await SQL.run(url, "SELECT target, user_id, connections FROM tidings.presence ORDER BY target, user_id")
            .rows.map { "\(try $0.string(0)) \(try $0.string(1)) \(try $0.string(2))" }
    }

    @Test func reportsEveryRowFirstThenOnlyWhatChanged() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withReporter(url) { reporter, presence, bus in
                let a = try bus.subscribe(user: "42", targets: [.user("42"), .topic("news.eu")], hold: false).subscription
                let b = try bus.subscribe(user: "42", targets: [.user("42")], hold: false).subscription
                #expect(try await reporter.reportOnce() == .init(full: true, rows: 2))
                #expect(try await rows(url) == ["topic:news.eu 42 1", "user:42 42 2"])
                // Nothing changed: the heartbeat alone.
                let before = try await SQL.value(url, "SELECT reported_at FROM tidings.instances")
                #expect(try await reporter.reportOnce() == .init(full: false, rows: 0))
                #expect(try await SQL.value(url, "SELECT reported_at FROM tidings.instances") != before)
                // A new user on the topic: two rows; one of 42's streams closes: one row.
                let c = try bus.subscribe(user: "7", targets: [.user("7"), .topic("news.eu")], hold: false).subscription
                bus.unsubscribe(b)
                #expect(try await reporter.reportOnce() == .init(full: false, rows: 3))
                #expect(try await rows(url) == ["topic:news.eu 42 1", "topic:news.eu 7 1", "user:42 42 1", "user:7 7 1"])
                #expect(try await presence.user("42") == UserPresence(connections: 1))
                #expect(try await presence.topic("news.eu") == TopicPresence(connections: 2, users: 2))
                // Gone altogether: rows deleted.
                bus.unsubscribe(a)
                bus.unsubscribe(c)
                #expect(try await reporter.reportOnce() == .init(full: false, rows: 4))
                #expect(try await rows(url) == [])
                #expect(try await presence.topic("news.eu") == TopicPresence(connections: 0, users: 0))
                #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.instances") == "1")
            }
        }
    }

    @Test func afterAFailedReportOrItsInstanceRowPrunedItWritesEveryRowAgain() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withReporter(url) { reporter, presence, bus in
                _ = try bus.subscribe(user: "42", targets: [.user("42"), .topic("t")], hold: false)
                try await reporter.reportOnce()
                try await SQL.run(url, "DELETE FROM tidings.instances")
                #expect(try await rows(url) == [])
                #expect(try await reporter.reportOnce() == .init(full: true, rows: 2))
                #expect(try await rows(url) == ["topic:t 42 1", "user:42 42 1"])
                #expect(try await presence.user("42") == UserPresence(connections: 1))
                // A report that fails leaves the database's rows unknown: the next writes all.
                try await SQL.run(url, "ALTER TABLE tidings.presence ADD CONSTRAINT test_one CHECK (connections < 2)")
                _ = try bus.subscribe(user: "42", targets: [.user("42")], hold: false)
                await #expect(throws: PostgresError.self) { try await reporter.reportOnce() }
                try await SQL.run(url, "ALTER TABLE tidings.presence DROP CONSTRAINT test_one")
                #expect(try await reporter.reportOnce() == .init(full: true, rows: 2))
                #expect(try await rows(url) == ["topic:t 42 1", "user:42 42 2"])
            }
        }
    }

    @Test func silentInstancesStopCountingAfterThreeIntervalsAndArePrunedAfterSixty() async throws {
        try await TestDatabase.with { (url: String) async throws in
            try await withReporter(url, interval: .seconds(10)) { reporter, presence, bus in
                _ = try bus.subscribe(user: "42", targets: [.user("42")], hold: false)
                try await reporter.reportOnce()
                #expect(try await SQL.value(url, "SELECT report_interval FROM tidings.instances") == "00:00:10")
                // Silent for 25 s (under three intervals): still counted; for 35 s: not.
                try await SQL.run(url, "UPDATE tidings.instances SET reported_at = clock_timestamp() - interval '25 s'")
                #expect(try await presence.user("42") == UserPresence(connections: 1))
                try await SQL.run(url, "UPDATE tidings.instances SET reported_at = clock_timestamp() - interval '35 s'")
                #expect(try await presence.user("42") == UserPresence(connections: 0))
                #expect(try await reporter.pruneDead() == 0)
                #expect(try await rows(url) == ["user:42 42 1"])
                // Silent for 60 intervals: pruned (its rows go with it).
                try await SQL.run(url, "UPDATE tidings.instances SET reported_at = clock_timestamp() - interval '601 s'")
                #expect(try await reporter.pruneDead() == 1)
                #expect(try await rows(url) == [])
                // Reporting again brings it back.
                #expect(try await reporter.reportOnce().full)
                #expect(try await presence.user("42") == UserPresence(connections: 1))
                // Withdrawing deletes everything of this instance at once.
                try await reporter.withdraw()
                #expect(try await rows(url) == [])
                #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.instances") == "0")
                #expect(try await presence.user("42") == UserPresence(connections: 0))
            }
        }
    }
}
