import Logging
import Metrics
import Synchronization
import TidingsCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Events in PostgreSQL: `tidings.events`.
///
/// `publish` returns after COMMIT; the listener, not the store, delivers to the bus.
///
/// **Group commit.** Concurrent publish requests share one transaction and one COMMIT (one WAL
/// flush): a request that finds one of the pool's connections free starts a transaction at
/// once, alone; requests that arrive while every connection is in a publish transaction wait
/// and go together in the next one (``GroupCommitQueue``). A group takes one range of ids
/// (`tidings.take_event_ids`) and is one multi-row INSERT. Each request keeps its own answer:
/// if the group's transaction fails for anything but a lost connection (the database rejected
/// one request's data, say), nothing of it was stored and each request runs again alone, so
/// one request's bad input never fails another. A request once queued is carried out even if
/// its task is cancelled.
///
/// Idempotency keys are per (publisher, key) and claimed with `INSERT … ON CONFLICT` in the
/// transaction that stores the event, so of two concurrent publishes with one key exactly one
/// stores its event (the other waits for it and returns its id). Within a group, requests are
/// taken in arrival order, exactly as if they had run one after the other.
///
/// Retention: an event is gone once it is older than `retention`, even before it is pruned.
/// "Gone" is a prefix of the id order: `cut` is the highest id that is pruned or in the run of
/// expired events that follows, and every id at or below it counts as gone.
///
/// Metrics: `tidings_events_published_total` (events stored) and
/// `tidings_publish_transactions_total` (publish transactions committed; events per commit is
/// the first divided by the second).
public final class PostgresEventStore: EventStore {
    /// Most one group transaction takes: 4,096 events or 8 MiB of data (a single larger request
    /// still runs, alone).
    static let groupLimit = GroupCommitSize(events: 4_096, bytes: 8 << 20)

    private let pool: ConnectionPool
    private let retention: Duration
    private let published: Counter
    private let transactions: Counter
    private let logger: Logger
    private let queue: Mutex<GroupCommitQueue<Waiter>>
    /// How long to ask while the server still reports a lost COMMIT's transaction in progress.
    let commitOutcomeWait: Duration = .seconds(5)

    /// Publish transactions that run at once: two (fewer with a smaller pool). Fewer, larger
    /// groups cost the database less per event than more, smaller ones: with 64 publishers on
    /// this 2-core machine, 4 in flight stored about 6k events/s, 2 about 8k, 1 between 8.5k and
    /// 11k (`tidings bench users --publish-connections 64`, fsync on). The second one keeps a
    /// large batch, or a transaction waiting on another gateway's idempotency key, from holding
    /// every other publish back.
    static func transactionsInFlight(poolSize: Int) -> Int {
        max(1, min(2, poolSize))
    }

    init(
        pool: ConnectionPool,
        retention: Duration,
        metricsFactory: any MetricsFactory,
        logger: Logger,
        groupLimit: GroupCommitSize = PostgresEventStore.groupLimit
    ) {
        self.pool = pool
        self.retention = retention
        self.published = Counter(label: "tidings_events_published_total", factory: metricsFactory)
        self.transactions = Counter(label: "tidings_publish_transactions_total", factory: metricsFactory)
        self.logger = logger
        self.queue = Mutex(GroupCommitQueue(maxInFlight: Self.transactionsInFlight(poolSize: pool.size), limit: groupLimit))
    }

    /// A request waiting for its group's outcome.
    struct Waiter: Sendable {
        var request: PublishEntry
        var answer: @Sendable (Result<[EventID], any Error>) -> Void
    }

    public func publish(_ events: [NewEvent], publisher: String) async throws -> [EventID] {
        let result = await withCheckedContinuation { (answer: CheckedContinuation<Result<[EventID], any Error>, Never>) in
            publish(events, publisher: publisher) { answer.resume(returning: $0) }
        }
        return try result.get()
    }

    /// `completion` runs on a pool thread (or, for no events, at once): whoever awaits the
    /// answer — a task, an event loop — is woken once, by the thread that committed.
    public func publish(
        _ events: [NewEvent], publisher: String,
        completion: @escaping @Sendable (Result<[EventID], any Error>) -> Void
    ) {
        guard !events.isEmpty else {
            completion(.success([]))
            return
        }
        let request = PublishEntry(events: events, publisher: publisher)
        let size = GroupCommitSize(events: events.count, bytes: request.dataBytes)
        let group = queue.withLock { $0.enqueue(Waiter(request: request, answer: completion), size: size) }
        if let group { startSlot(with: group) }
    }

    /// Requests waiting and publish transactions running (for tests).
    var groupCommitState: (queued: Int, inFlight: Int) {
        queue.withLock { ($0.queued, $0.inFlight) }
    }

    /// Runs groups on one transaction slot until nothing waits, on a pool thread: no task and
    /// no hop between the group's transactions. The group belongs to all its requests, so no
    /// request's cancellation cuts it short. Once the pool is shut down every waiting request
    /// is answered with ``PostgresError/Code/shutDown``.
    private func startSlot(with group: [Waiter]) {
        pool.submit { [self] active in
            var group = group
            while true {
                let results = active
                    ? run(group.map(\.request))
                    : group.map { _ in .failure(PostgresError(.shutDown)) }
                // The slot is free (or has its next group) before the answers go: a publisher
                // that sends its next request at once finds it free, not busy.
                let next = queue.withLock { $0.finished() }
                for (waiter, result) in zip(group, results) { waiter.answer(result) }
                guard let next else { return }
                group = next
            }
        }
    }

    /// Each request's outcome: all in one transaction, or, when that fails for anything but the
    /// connection (some request's data was rejected), each request alone.
    private func run(_ requests: [PublishEntry]) -> [Result<[EventID], any Error>] {
        do {
            return try commit(requests).ids.map { .success($0) }
        } catch let error as PostgresError where requests.count > 1 && error.isRequestError {
            logger.notice(
                "publish group failed, its requests run one by one",
                metadata: [
                    PostgresLogKey.count: "\(requests.count)",
                    PostgresLogKey.error: "\(error)",
                    PostgresLogKey.sqlState: "\(error.sqlState ?? "")",
                ])
            var results: [Result<[EventID], any Error>] = []
            for request in requests {
                do {
                    results.append(.success(try commit([request]).ids[0]))
                } catch {
                    results.append(.failure(error))
                }
            }
            return results
        } catch {
            return requests.map { _ in .failure(error) }
        }
    }

    /// One transaction for `requests`, with the lost-connection cases handled: lost before it
    /// began, one retry; lost at COMMIT, the server is asked.
    private func commit(_ requests: [PublishEntry]) throws -> GroupResult {
        let retentionSeconds = String(retention.seconds)
        let result: GroupResult
        do {
            do {
                result = try commitOnce(requests, retentionSeconds: retentionSeconds)
            } catch is LostBeforeTransaction {
                // The connection died before the transaction began (the server restarted since it
                // was last used): nothing was sent, so one retry on a fresh connection is safe.
                result = try commitOnce(requests, retentionSeconds: retentionSeconds)
            }
        } catch let lost as LostAtCommit {
            result = try outcome(of: lost)
        }
        transactions.increment()
        if result.stored > 0 { published.increment(by: result.stored) }
        return result
    }

    private func commitOnce(_ requests: [PublishEntry], retentionSeconds: String) throws -> GroupResult {
        try pool.withConnectionHere { connection in
            try Self.publish(requests, retentionSeconds: retentionSeconds, on: connection)
        }
    }

    /// The connection was lost while COMMIT was on its way: the transaction may have committed.
    /// A fresh connection asks the server (`pg_xact_status`): the ids if it committed, "nothing
    /// stored" if it aborted, ``CommitOutcomeUnknownError`` if that cannot be known — the same
    /// answer for every request of the group. Blocks its pool thread while it asks again.
    private func outcome(of lost: LostAtCommit) throws -> GroupResult {
        let clock = ContinuousClock()
        let deadline = clock.now + commitOutcomeWait
        while true {
            let status: String?
            do {
                status = try pool.withConnectionHere { connection in
                    try connection.query("SELECT pg_xact_status($1::xid8)", [lost.transactionID]).single(orMore: false)
                        .optionalString(0)
                }
            } catch {
                throw CommitOutcomeUnknownError()
            }
            switch status {
            case "committed":
                return lost.result
            case "aborted":
                throw lost.underlying
            case "in progress" where clock.now < deadline:
                // The server has not noticed the lost connection yet.
                usleep(20_000)
            default:
                throw CommitOutcomeUnknownError()
            }
        }
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
    /// What the transaction stored, if it committed.
    var result: PostgresEventStore.GroupResult
}
