import Foundation
import Logging
import Metrics
import ServiceLifecycle
import Synchronization
import TidingsCore

/// Reports this instance's open streams to the database, so that every gateway sharing it can
/// answer presence for all of them (`migrations/0004_presence.sql`).
///
/// Every `interval` it takes the bus's counts (`EventBus.presenceCounts()`) and sends, in one
/// statement, the heartbeat of its `tidings.instances` row and only the `tidings.presence` rows
/// that changed since the report before: with nothing opened or closed, one `UPDATE` of one
/// row. The first report, one after a failure (whose outcome is unknown) and one that finds
/// its instance row gone (pruned while this gateway could not report) write every row instead,
/// in one transaction. On shutdown it deletes its rows; every 30 rounds it deletes the rows of
/// instances silent for 60 of their intervals (killed ones: their rows are ignored after three).
public final class PresenceReporter: Service {
    /// This instance's id in `tidings.instances`, new at every start.
    public let instance: String
    /// How often it reports; readers count an instance as live for three of them.
    public let interval: Duration

    /// Rounds between two prunings of dead instances.
    static let pruneEvery = 30
    /// Intervals of silence after which an instance's rows are deleted.
    static let deadAfterIntervals = 60

    /// What one report wrote.
    struct Report: Sendable, Equatable {
        /// Every row was written (first report, or the previous one's outcome is unknown).
        var full: Bool
        /// `tidings.presence` rows written or deleted.
        var rows: Int
    }

    private let pool: ConnectionPool
    private let bus: EventBus
    private let logger: Logger
    /// The snapshot the database holds for this instance; `nil` when unknown.
    private let written = Mutex<PresenceSnapshot?>(nil)
    private let rowsWritten: Counter
    private let failures: Counter

    init(pool: ConnectionPool, bus: EventBus, interval: Duration, logger: Logger, metricsFactory: any MetricsFactory) {
        self.instance = UUID().uuidString.lowercased()
        self.pool = pool
        self.bus = bus
        self.interval = interval
        self.logger = logger
        self.rowsWritten = Counter(label: "tidings_presence_rows_written_total", factory: metricsFactory)
        self.failures = Counter(label: "tidings_presence_report_failures_total", factory: metricsFactory)
    }

    public func run() async throws {
        logger.debug(
            "Presence reporting started",
            metadata: [PostgresLogKey.instance: "\(instance)", PostgresLogKey.interval: "\(interval.seconds)"])
        let clock = ContinuousClock()
        var next = clock.now
        var round = 0
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await reportOnce()
            } catch {
                failures.increment()
                logger.warning("Presence report failed", metadata: [PostgresLogKey.instance: "\(instance)", PostgresLogKey.error: "\(error)"])
            }
            if round % Self.pruneEvery == 0 {
                do {
                    try await pruneDead()
                } catch {
                    logger.warning("Pruning dead instances failed", metadata: [PostgresLogKey.error: "\(error)"])
                }
            }
            round += 1
            // On schedule, without a burst of reports after a slow one.
            next = max(next + interval, clock.now)
            do {
                try await cancelWhenGracefulShutdown { [next] in try await Task.sleep(until: next, clock: clock) }
            } catch {
                break
            }
        }
        do {
            try await withdraw()
        } catch {
            // Its rows stop counting three intervals after its last report.
            logger.warning("Withdrawing presence failed", metadata: [PostgresLogKey.instance: "\(instance)", PostgresLogKey.error: "\(error)"])
        }
    }

    /// Reports once. One at a time: `run` does, or a test while the service does not run.
    @discardableResult
    func reportOnce() async throws -> Report {
        let current = PresenceSnapshot(bus.presenceCounts())
        let previous = written.withLock { $0 }
        let (instance, seconds) = (instance, String(interval.seconds))
        let report: Report
        do {
            report = try await pool.withConnection { connection -> Report in
                if let previous {
                    let changes = current.changes(since: previous)
                    if try Self.writeChanges(changes, instance: instance, seconds: seconds, on: connection) {
                        return Report(full: false, rows: changes.count)
                    }
                }
                let all = current.all
                try Self.writeAll(all, instance: instance, seconds: seconds, on: connection)
                return Report(full: true, rows: all.count)
            }
        } catch {
            written.withLock { $0 = nil }
            throw error
        }
        written.withLock { $0 = current }
        rowsWritten.increment(by: Int64(report.rows))
        if report.full, previous != nil {
            logger.info(
                "Presence instance row was gone (pruned while this gateway was silent): reported every row again",
                metadata: [PostgresLogKey.instance: "\(instance)", PostgresLogKey.count: "\(report.rows)"])
        }
        return report
    }

    /// The heartbeat and the changed rows, in one statement. False when the instance row is
    /// gone (nothing was written then).
    private static func writeChanges(
        _ changes: PresenceSnapshot.Changes, instance: String, seconds: String, on connection: PGConnection
    ) throws -> Bool {
        let updated = try connection.query(
            """
            WITH heartbeat AS (
                UPDATE tidings.instances
                SET reported_at = clock_timestamp(), report_interval = $2::float8 * interval '1 second'
                WHERE instance = $1::uuid
                RETURNING instance
            ), removed AS (
                DELETE FROM tidings.presence AS p
                USING heartbeat AS h, unnest($3::text[], $4::text[]) AS x(target, user_id)
                WHERE p.instance = h.instance AND p.target = x.target AND p.user_id = x.user_id
            ), changed AS (
                INSERT INTO tidings.presence (instance, target, user_id, connections)
                SELECT h.instance, x.target, x.user_id, x.connections
                FROM heartbeat AS h, unnest($5::text[], $6::text[], $7::int[]) AS x(target, user_id, connections)
                ON CONFLICT (instance, target, user_id) DO UPDATE SET connections = EXCLUDED.connections
            )
            SELECT count(*) FROM heartbeat
            """,
            [
                instance, seconds,
                PGArray.text(changes.removals.lazy.map(\.target)), PGArray.text(changes.removals.lazy.map(\.user)),
                PGArray.text(changes.upserts.lazy.map { $0.key.target }), PGArray.text(changes.upserts.lazy.map { $0.key.user }),
                PGArray.int64(changes.upserts.lazy.map { Int64($0.connections) }),
            ]
        ).single().int64(0)
        return updated == 1
    }

    /// The instance row (created if needed) and every row, replacing whatever was there.
    private static func writeAll(
        _ all: PresenceSnapshot.Changes, instance: String, seconds: String, on connection: PGConnection
    ) throws {
        try connection.transaction {
            try connection.query(
                """
                INSERT INTO tidings.instances (instance, reported_at, report_interval)
                VALUES ($1::uuid, clock_timestamp(), $2::float8 * interval '1 second')
                ON CONFLICT (instance) DO UPDATE
                SET reported_at = EXCLUDED.reported_at, report_interval = EXCLUDED.report_interval
                """,
                [instance, seconds])
            try connection.query("DELETE FROM tidings.presence WHERE instance = $1::uuid", [instance])
            guard !all.upserts.isEmpty else { return }
            try connection.query(
                """
                INSERT INTO tidings.presence (instance, target, user_id, connections)
                SELECT $1::uuid, x.target, x.user_id, x.connections
                FROM unnest($2::text[], $3::text[], $4::int[]) AS x(target, user_id, connections)
                """,
                [
                    instance,
                    PGArray.text(all.upserts.lazy.map { $0.key.target }), PGArray.text(all.upserts.lazy.map { $0.key.user }),
                    PGArray.int64(all.upserts.lazy.map { Int64($0.connections) }),
                ])
        }
    }

    /// Deletes this instance's rows (graceful shutdown): its streams stop counting at once.
    func withdraw() async throws {
        let instance = instance
        written.withLock { $0 = nil }
        _ = try await pool.withConnection { connection in
            try connection.query("DELETE FROM tidings.instances WHERE instance = $1::uuid", [instance])
        }
        logger.debug("Presence withdrawn", metadata: [PostgresLogKey.instance: "\(instance)"])
    }

    /// Deletes the rows of instances silent for `deadAfterIntervals` of their intervals.
    @discardableResult
    func pruneDead() async throws -> Int {
        let pruned = try await pool.withConnection { connection in
            try connection.query(
                "DELETE FROM tidings.instances WHERE reported_at < clock_timestamp() - $1::int * report_interval",
                [String(Self.deadAfterIntervals)]
            ).affected
        }
        if pruned > 0 {
            logger.info("Pruned the presence of dead instances", metadata: [PostgresLogKey.count: "\(pruned)"])
        }
        return pruned
    }
}
