import Logging
import NIOCore
import ServiceLifecycle

/// Deletes what retention no longer keeps: events at or below the retention cut, idempotency
/// keys older than the retention, expired tickets. Runs every `interval`, in batches, on one
/// gateway at a time (`pg_try_advisory_lock`); the others skip that round.
public final class RetentionPruner: Service {
    /// Advisory lock key held while pruning.
    static let lockKey: Int64 = 0x7469_6469_6e67_7302

    private let pool: ConnectionPool
    private let retention: Duration
    private let interval: Duration
    private let batchSize: Int
    private let logger: Logger

    init(pool: ConnectionPool, retention: Duration, interval: Duration, batchSize: Int = 5_000, logger: Logger) {
        self.pool = pool
        self.retention = retention
        self.interval = interval
        self.batchSize = batchSize
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                try await pruneOnce()
            } catch {
                logger.warning("Pruning failed", metadata: [PostgresLogKey.error: "\(error)"])
            }
            do {
                try await cancelWhenGracefulShutdown { [interval] in try await Task.sleep(for: interval) }
            } catch {
                return
            }
        }
    }

    /// What one round deleted.
    struct Pruned: Sendable, Equatable {
        var events = 0
        var keys = 0
        var tickets = 0
        /// False when another gateway held the lock.
        var ran = false
    }

    /// SQL for the highest id of the expired run of events right after `after` (0 when the first
    /// event after it is within retention). `created_at` is not indexed: the primary key is
    /// walked from `after` to the first event within retention, so a round reads what it is
    /// about to delete and one row more. Ids and creation times rise together (an id is taken
    /// just before its row is written), so this is the events older than retention, give or take
    /// the commits of one moment.
    static func expiredPrefixEnd(after: String, retentionSeconds: String) -> String {
        """
        (SELECT coalesce(max(x.id), 0) FROM tidings.events AS x
         WHERE x.id > \(after) AND x.id < coalesce(
            (SELECT min(l.id) FROM tidings.events AS l
             WHERE l.id > \(after) AND l.created_at >= now() - \(retentionSeconds)::float8 * interval '1 second'),
            9223372036854775807))
        """
    }

    /// One pruning round.
    @discardableResult
    func pruneOnce() async throws -> Pruned {
        let retentionSeconds = String(retention.seconds)
        let batchSize = batchSize
        let batch = String(batchSize)
        let lock = String(Self.lockKey)
        let pruned = try await pool.withConnection { connection -> Pruned in
            guard try connection.query("SELECT pg_try_advisory_lock($1)", [lock]).single().bool(0) else {
                return Pruned()
            }
            defer { _ = try? connection.query("SELECT pg_advisory_unlock($1)", [lock]) }
            var pruned = Pruned(ran: true)
            let cut = try connection.query(
                """
                SELECT greatest(p.value, \(Self.expiredPrefixEnd(after: "p.value", retentionSeconds: "$1")))
                FROM tidings.state AS p WHERE p.name = 'pruned_through'
                """,
                [retentionSeconds]
            ).single().int64(0)
            // Record the cut first: replay already treats everything at or below it as gone.
            try connection.query(
                "UPDATE tidings.state SET value = $1 WHERE name = 'pruned_through' AND value < $1", [String(cut)])
            while true {
                let deleted = try connection.query(
                    """
                    DELETE FROM tidings.events WHERE id IN (
                        SELECT id FROM tidings.events WHERE id <= $1 ORDER BY id LIMIT $2::int)
                    """,
                    [String(cut), batch]
                ).affected
                pruned.events += deleted
                if deleted < batchSize { break }
            }
            while true {
                let deleted = try connection.query(
                    """
                    DELETE FROM tidings.idempotency_keys WHERE ctid = ANY (ARRAY(
                        SELECT ctid FROM tidings.idempotency_keys
                        WHERE created_at < now() - $1::float8 * interval '1 second' LIMIT $2::int))
                    """,
                    [retentionSeconds, batch]
                ).affected
                pruned.keys += deleted
                if deleted < batchSize { break }
            }
            pruned.tickets = try connection.query(
                "DELETE FROM tidings.tickets WHERE expires_at <= clock_timestamp()"
            ).affected
            return pruned
        }
        if pruned.events + pruned.keys + pruned.tickets > 0 {
            logger.info(
                "Pruned expired rows",
                metadata: [
                    PostgresLogKey.count: "\(pruned.events)",
                    "tidings.pruned.keys": "\(pruned.keys)",
                    "tidings.pruned.tickets": "\(pruned.tickets)",
                ])
        }
        return pruned
    }
}
