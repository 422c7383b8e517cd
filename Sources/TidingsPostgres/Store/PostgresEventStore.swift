import Metrics
import TidingsCore

/// Events in PostgreSQL: `tidings.events`.
///
/// `publish` stores a request in one transaction and returns after COMMIT; the listener, not the
/// store, delivers to the bus. A batch is one multi-row INSERT. Idempotency keys are claimed with
/// `INSERT … ON CONFLICT` in the same transaction, so of two concurrent publishes with one key
/// exactly one stores its event (the other waits for it and returns its id).
///
/// Retention: an event is gone once it is older than `retention`, even before it is pruned.
/// "Gone" is a prefix of the id order: `cut` is the highest id that is pruned or in the run of
/// expired events that follows, and every id at or below it counts as gone.
public final class PostgresEventStore: EventStore {
    private let pool: ConnectionPool
    private let retention: Duration
    private let published: Counter
    /// How long to ask while the server still reports a lost COMMIT's transaction in progress.
    let commitOutcomeWait: Duration = .seconds(5)

    init(pool: ConnectionPool, retention: Duration, metricsFactory: any MetricsFactory) {
        self.pool = pool
        self.retention = retention
        self.published = Counter(label: "tidings_events_published_total", factory: metricsFactory)
    }

    public func publish(_ events: [NewEvent], publisher: String) async throws -> [EventID] {
        guard !events.isEmpty else { return [] }
        let retentionSeconds = String(retention.seconds)
        let result: PublishResult
        do {
            do {
                result = try await publishOnce(events, publisher: publisher, retentionSeconds: retentionSeconds)
            } catch is LostBeforeTransaction {
                // The connection died before the transaction began (the server restarted since it
                // was last used): nothing was sent, so one retry on a fresh connection is safe.
                result = try await publishOnce(events, publisher: publisher, retentionSeconds: retentionSeconds)
            }
        } catch let lost as LostAtCommit {
            result = try await outcome(of: lost)
        }
        let ids = result.ids
        let stored = result.stored
        if stored > 0 { published.increment(by: stored) }
        return ids
    }

    /// `BEGIN` with a synchronous commit (an asynchronous one lost in a crash would re-issue ids
    /// that listeners already delivered), taking the transaction id before any event id (see
    /// DeliveryOrder). Returns the transaction id, to ask for the outcome if COMMIT is lost.
    private static func begin(on connection: PGConnection) throws -> String {
        let failure: PostgresError
        do {
            return try connection.execute(
                "BEGIN; SET LOCAL synchronous_commit = on; SELECT pg_current_xact_id()::text"
            ).single(orMore: false).string(0)
        } catch {
            failure = error
        }
        if failure.isConnectionError { throw LostBeforeTransaction(underlying: failure) }
        throw failure
    }

    private struct PublishResult: Sendable {
        var ids: [EventID]
        var stored: Int
    }

    private func publishOnce(_ events: [NewEvent], publisher: String, retentionSeconds: String) async throws -> PublishResult {
        try await pool.withConnection { (connection: PGConnection) throws -> PublishResult in
            let (ids, stored) = try Self.publish(events, publisher: publisher, retentionSeconds: retentionSeconds, on: connection)
            return PublishResult(ids: ids, stored: stored)
        }
    }

    /// The connection was lost while COMMIT was on its way: the transaction may have committed.
    /// A fresh connection asks the server (`pg_xact_status`): the ids if it committed, "nothing
    /// stored" if it aborted, ``CommitOutcomeUnknownError`` if that cannot be known.
    private func outcome(of lost: LostAtCommit) async throws -> PublishResult {
        let clock = ContinuousClock()
        let deadline = clock.now + commitOutcomeWait
        while true {
            let status: String?
            do {
                status = try await pool.withConnection { connection in
                    try connection.query("SELECT pg_xact_status($1::xid8)", [lost.transactionID]).single(orMore: false)
                        .optionalString(0)
                }
            } catch {
                throw CommitOutcomeUnknownError()
            }
            switch status {
            case "committed":
                return PublishResult(ids: lost.ids, stored: lost.stored)
            case "aborted":
                throw lost.underlying
            case "in progress" where clock.now < deadline:
                // The server has not noticed the lost connection yet.
                try await Task.sleep(for: .milliseconds(20))
            default:
                throw CommitOutcomeUnknownError()
            }
        }
    }

    /// The transaction of one publish request; returns the ids and how many events it stored.
    static func publish(
        _ events: [NewEvent],
        publisher: String,
        retentionSeconds: String,
        on connection: PGConnection
    ) throws -> ([EventID], Int) {
        // The first occurrence of each key in the request; later ones repeat its id.
        var firstIndexOfKey: [String: Int] = [:]
        var keys: [String] = []
        for (index, event) in events.enumerated() {
            guard let key = event.idempotencyKey, firstIndexOfKey[key] == nil else { continue }
            firstIndexOfKey[key] = index
            keys.append(key)
        }
        let transactionID = try Self.begin(on: connection)
        let (ids, stored) = try connection.inTransaction(commit: false) { () throws -> ([EventID], Int) in
            var existing: [String: EventID] = [:]
            if !keys.isEmpty {
                let claimed = try connection.query(
                    """
                    INSERT INTO tidings.idempotency_keys AS k (publisher, key)
                    SELECT $1, unnest($2::text[])
                    ON CONFLICT (publisher, key) DO UPDATE SET event_id = NULL, created_at = now()
                        WHERE k.created_at < now() - $3::float8 * interval '1 second'
                    RETURNING key
                    """,
                    [publisher, PGArray.text(keys.sorted()), retentionSeconds])  // sorted: one lock order, no deadlock
                let claimedKeys = Set(try claimed.rows.map { try $0.string(0) })
                let taken = keys.filter { !claimedKeys.contains($0) }
                if !taken.isEmpty {
                    let rows = try connection.query(
                        "SELECT key, event_id FROM tidings.idempotency_keys WHERE publisher = $1 AND key = ANY ($2::text[])",
                        [publisher, PGArray.text(taken)])
                    for row in rows.rows {
                        guard let id = try row.optionalInt64(1) else { throw PostgresError(.unexpectedResult) }
                        existing[try row.string(0)] = id
                    }
                    guard existing.count == taken.count else { throw PostgresError(.unexpectedResult) }
                }
            }
            // Which events are stored: not a repeat of a key used before or earlier in the request.
            var toStore: [Int] = []
            for (index, event) in events.enumerated() {
                if let key = event.idempotencyKey, existing[key] != nil || firstIndexOfKey[key] != index { continue }
                toStore.append(index)
            }
            var ids = [EventID](repeating: 0, count: events.count)
            if !toStore.isEmpty {
                // The order lock, then the ids (see OrderLock).
                let sequence = try connection.query(
                    "SELECT unnest(tidings.take_event_ids($1::int))", [String(toStore.count)])
                let newIDs = try sequence.rows.map { try $0.int64(0) }.sorted()
                guard newIDs.count == toStore.count else { throw PostgresError(.unexpectedResult) }
                for (offset, index) in toStore.enumerated() { ids[index] = newIDs[offset] }
                try connection.query(
                    """
                    INSERT INTO tidings.events (id, targets, event, data)
                    SELECT u.id, string_to_array(u.targets, ' '), u.event, u.data::json
                    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS u(id, targets, event, data)
                    """,
                    [
                        PGArray.int64(newIDs),
                        PGArray.text(toStore.map { events[$0].targets.map(\.description).joined(separator: " ") }),
                        PGArray.text(toStore.map { events[$0].type.rawValue }),
                        PGArray.text(toStore.map { events[$0].data }),
                    ])
            }
            for (index, event) in events.enumerated() where ids[index] == 0 {
                let key = event.idempotencyKey!
                ids[index] = existing[key] ?? ids[firstIndexOfKey[key]!]
            }
            let claimedKeys = keys.filter { existing[$0] == nil }
            if !claimedKeys.isEmpty {
                try connection.query(
                    """
                    UPDATE tidings.idempotency_keys AS k SET event_id = u.id
                    FROM unnest($2::text[], $3::bigint[]) AS u(key, id)
                    WHERE k.publisher = $1 AND k.key = u.key
                    """,
                    [publisher, PGArray.text(claimedKeys), PGArray.int64(claimedKeys.map { ids[firstIndexOfKey[$0]!] })])
            }
            return (ids, toStore.count)
        }
        do {
            try connection.execute("COMMIT")
        } catch where error.isConnectionError {
            throw LostAtCommit(underlying: error, transactionID: transactionID, ids: ids, stored: stored)
        } catch {
            if !connection.isBroken, connection.isInTransaction { _ = try? connection.execute("ROLLBACK") }
            throw error
        }
        return (ids, stored)
    }

    /// The database accounts for every id it issued.
    public var historyStart: EventID { 0 }

    public func lastIssuedID() async throws -> EventID {
        try await pool.withConnection { connection in
            try connection.query("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM tidings.events_id_seq")
                .single().int64(0)
        }
    }

    /// The page's `cut` is exact whenever it is above `after` (the only case the caller acts on):
    /// expired events at or below `after` are not looked for. The search walks the primary key
    /// from `after` to the first event within retention, so a client within retention costs two
    /// index probes, whatever the table's size or statistics.
    public func replay(targets: Set<Target>, after: EventID, through: EventID, limit: Int) async throws -> ReplayPage {
        let retentionSeconds = String(retention.seconds)
        let targetList = PGArray.text(targets.map(\.description))
        return try await pool.withConnection { connection in
            let result = try connection.query(
                """
                WITH horizon AS (
                    SELECT greatest(
                        (SELECT value FROM tidings.state WHERE name = 'pruned_through'),
                        \(RetentionPruner.expiredPrefixEnd(after: "$2::bigint", retentionSeconds: "$5"))
                    ) AS cut
                )
                SELECT h.cut, (SELECT min(id) FROM tidings.events WHERE id > h.cut), \(StoredEvent.columns)
                FROM horizon AS h
                LEFT JOIN LATERAL (
                    SELECT id, targets, event, data, created_at FROM tidings.events
                    WHERE targets && $1::text[] AND id > greatest($2::bigint, h.cut) AND id <= $3::bigint
                    ORDER BY id LIMIT $4::int
                ) AS e ON true
                ORDER BY e.id
                """,
                [targetList, String(after), String(through), String(max(0, limit)), retentionSeconds])
            let first = try result.single(orMore: true)
            let cut = try first.int64(0)
            let oldest = try first.optionalInt64(1)
            var events: [Event] = []
            for row in result.rows where !row.isNull(2) {
                if let event = try StoredEvent.decode(row, at: 2).event { events.append(event) }
            }
            return ReplayPage(events: events, cut: cut, oldestRetained: oldest)
        }
    }
}

/// The connection was lost before a publish transaction began.
struct LostBeforeTransaction: Error {
    var underlying: PostgresError
}

/// The connection was lost during COMMIT: the outcome is the server's to tell.
struct LostAtCommit: Error {
    var underlying: PostgresError
    var transactionID: String
    var ids: [EventID]
    var stored: Int
}
