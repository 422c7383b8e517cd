import Logging
import Metrics
import Dispatch
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
/// **Open transactions.** A slot that has committed parks its connection with the next
/// transaction already begun and its transaction id taken (``OpenTransaction``, opened in the
/// round trip of the COMMIT when more requests wait, or just after the answers went otherwise)
/// for up to `linger`: the next slot starts in it, and a group without keys is then one round
/// trip instead of two. After `linger` unused the transaction is rolled back and the
/// connection goes back to the pool. It holds no lock and no pool thread; a
/// database that ends it (`pg_terminate_backend`, `idle_in_transaction_session_timeout`) costs
/// the next request a fresh connection, nothing more.
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
    private let slots: Mutex<Slots>
    /// How long a slot waits with an open transaction for its next request.
    let linger: Duration
    /// The highest id this store has stored or repeated: every id a transaction opened later
    /// takes is above it.
    private let highestID = Atomic<Int64>(0)
    /// The default ``linger``: long enough for a publisher's next request, short enough that
    /// the open transaction never matters to the database (it holds back VACUUM that long).
    static let defaultLinger: Duration = .milliseconds(250)
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
        groupLimit: GroupCommitSize = PostgresEventStore.groupLimit,
        linger: Duration = PostgresEventStore.defaultLinger
    ) {
        self.pool = pool
        self.retention = retention
        self.published = Counter(label: "tidings_events_published_total", factory: metricsFactory)
        self.transactions = Counter(label: "tidings_publish_transactions_total", factory: metricsFactory)
        self.logger = logger
        self.linger = linger
        self.slots = Mutex(Slots(queue: GroupCommitQueue(maxInFlight: Self.transactionsInFlight(poolSize: pool.size), limit: groupLimit)))
        pool.beforeShutdown { [weak self] in self?.closeParked() }
        pool.reclaim { [weak self] in self?.reclaimParked() }
    }

    /// A parked transaction's connection, rolled back, for a pool user that finds no idle one
    /// (on a pool thread): a parked transaction never costs the database a connection more.
    private func reclaimParked() -> PGConnection? {
        while let open = slots.withLock({ $0.parked.isEmpty ? nil : $0.parked.removeFirst().open }) {
            if !open.connection.isBroken, (try? open.connection.execute("ROLLBACK")) != nil, !open.connection.isBroken {
                return open.connection
            }
            open.connection.close()
        }
        return nil
    }

    /// Group commit's state: the queue, and the open transactions parked for the next slot.
    struct Slots {
        var queue: GroupCommitQueue<Waiter>
        /// Open transactions no slot uses, newest last, each with the number it was parked
        /// under (its linger's timer rolls back only that one).
        var parked: [(number: UInt64, open: OpenConnection)] = []
        var parkings: UInt64 = 0
        /// Slots opening a transaction after their last group: a request that arrives
        /// meanwhile waits for one of them instead of starting a slot without one.
        var opening = 0
        /// The pool is shutting down: nothing is parked any more.
        var closing = false
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
        let waiter = Waiter(request: request, answer: completion)
        let group: [Waiter]? = slots.withLock { slots in
            guard slots.opening == 0 else {
                slots.queue.add(waiter, size: size)
                return nil
            }
            return slots.queue.enqueue(waiter, size: size)
        }
        if let group { startSlot(with: group) }
    }

    /// Requests waiting and publish transactions running (for tests). A slot opening its next
    /// transaction after its answers went is free: a request that arrives is its next group.
    var groupCommitState: (queued: Int, inFlight: Int) {
        slots.withLock { ($0.queue.queued, $0.queue.inFlight - $0.opening) }
    }

    /// Open transactions parked for the next publish (for tests).
    var parkedTransactions: Int {
        slots.withLock { $0.parked.count }
    }

    /// What a slot does after a group.
    private enum Next {
        case run([Waiter])
        /// Nothing waits: open the next transaction (unless open already), then park it.
        case open
        case stop
    }

    /// Runs groups on one transaction slot on a pool thread until nothing waits: no task and no
    /// hop between the group's transactions. The slot starts in a parked open transaction if
    /// there is one, and parks its own when it stops. The group belongs to all its requests, so
    /// no request's cancellation cuts it short. Once the pool is shut down every waiting request
    /// is answered with ``PostgresError/Code/shutDown``.
    private func startSlot(with group: [Waiter]) {
        pool.submit { [self] active in
            var open = active ? slots.withLock { $0.parked.popLast()?.open } : nil
            var group = group
            while true {
                let results: [Result<[EventID], any Error>]
                if active {
                    // More requests wait: the next transaction opens with this one's COMMIT.
                    let more = slots.withLock { $0.queue.queued > 0 }
                    results = run(group.map(\.request), open: &open, openNext: more)
                } else {
                    results = group.map { _ in .failure(PostgresError(.shutDown)) }
                }
                // The slot is free (or has its next group) before the answers go: a publisher
                // that sends its next request at once finds it free, not busy.
                let next: Next = slots.withLock { slots in
                    if let next = slots.queue.next() { return .run(next) }
                    guard active, !slots.closing, linger > .zero else {
                        slots.queue.stop()
                        return .stop
                    }
                    slots.opening += 1
                    return .open
                }
                for (waiter, result) in zip(group, results) { waiter.answer(result) }
                switch next {
                case .run(let next):
                    group = next
                case .stop:
                    close(open)
                    return
                case .open:
                    if open == nil { open = try? openTransaction() }
                    let (after, parked): ([Waiter]?, UInt64?) = slots.withLock { slots in
                        slots.opening -= 1
                        if let next = slots.queue.next() { return (next, nil) }
                        slots.queue.stop()
                        guard let opened = open, !slots.closing else { return (nil, nil) }
                        slots.parkings += 1
                        slots.parked.append((slots.parkings, opened))
                        open = nil
                        return (nil, slots.parkings)
                    }
                    if let after {
                        group = after
                        continue
                    }
                    if let parked { expire(parked, after: linger) }
                    close(open)
                    return
                }
            }
        }
    }

    /// After `delay`, rolls back the transaction parked as `number` if no slot took it.
    private func expire(_ number: UInt64, after delay: Duration) {
        let deadline = DispatchTime.now() + .nanoseconds(Int(delay.components.seconds * 1_000_000_000 + delay.components.attoseconds / 1_000_000_000))
        DispatchQueue.global().asyncAfter(deadline: deadline) { [weak self] in
            self?.pool.submit { [weak self] _ in
                guard let self else { return }
                let open = slots.withLock { slots -> OpenConnection? in
                    guard let index = slots.parked.firstIndex(where: { $0.number == number }) else { return nil }
                    return slots.parked.remove(at: index).open
                }
                close(open)
            }
        }
    }

    /// Rolls back every parked transaction and parks none from now on: the pool is shutting
    /// down. Taken from the store at once, closed on a pool thread (or, once the pool's threads
    /// are gone, on the thread that cancels its work), never on the caller's task.
    private func closeParked() {
        let parked = slots.withLock { slots in
            slots.closing = true
            defer { slots.parked.removeAll() }
            return slots.parked.map(\.open)
        }
        guard !parked.isEmpty else { return }
        pool.submit { _ in
            for open in parked {
                if !open.connection.isBroken { _ = try? open.connection.execute("ROLLBACK") }
                open.connection.close()
            }
        }
    }

    /// A pool connection in an open transaction, held by a slot or parked between groups.
    struct OpenConnection: Sendable {
        var connection: PGConnection
        var transaction: OpenTransaction
    }

    /// Opens a transaction on a pool connection for the slot's next group.
    private func openTransaction() throws -> OpenConnection {
        let connection = try pool.checkOut()
        do {
            return OpenConnection(
                connection: connection, transaction: try Self.open(on: connection, floor: highestID.load(ordering: .relaxed)))
        } catch {
            pool.checkIn(connection)
            throw error
        }
    }

    /// Rolls back the slot's open transaction, if any, and hands its connection back.
    private func close(_ open: OpenConnection?) {
        guard let open else { return }
        if !open.connection.isBroken { _ = try? open.connection.execute("ROLLBACK") }
        pool.checkIn(open.connection)
    }

    /// Each request's outcome: all in one transaction, or, when that fails for anything but the
    /// connection (some request's data was rejected), each request alone.
    private func run(_ requests: [PublishEntry], open: inout OpenConnection?, openNext: Bool) -> [Result<[EventID], any Error>] {
        do {
            return try commit(requests, open: &open, openNext: openNext).ids.map { .success($0) }
        } catch let error as PostgresError where requests.count > 1 && error.isRequestError {
            logger.notice(
                "publish group failed, its requests run one by one",
                metadata: [
                    PostgresLogKey.count: "\(requests.count)",
                    PostgresLogKey.error: "\(error)",
                    PostgresLogKey.sqlState: "\(error.sqlState ?? "")",
                ])
            var results: [Result<[EventID], any Error>] = []
            for (index, request) in requests.enumerated() {
                do {
                    results.append(.success(try commit([request], open: &open, openNext: openNext || index < requests.count - 1).ids[0]))
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
    private func commit(_ requests: [PublishEntry], open: inout OpenConnection?, openNext: Bool) throws -> GroupResult {
        let retentionSeconds = String(retention.seconds)
        let result: GroupResult
        do {
            do {
                result = try commitOnce(requests, retentionSeconds: retentionSeconds, open: &open, openNext: openNext)
            } catch is LostBeforeTransaction {
                // The connection died before the transaction began (the server restarted since it
                // was last used): nothing was sent, so one retry on a fresh connection is safe.
                result = try commitOnce(requests, retentionSeconds: retentionSeconds, open: &open, openNext: openNext)
            }
        } catch let lost as LostAtCommit {
            result = try outcome(of: lost)
        }
        transactions.increment()
        if result.stored > 0 { published.increment(by: result.stored) }
        highestID.max(result.highestID, ordering: .relaxed)
        return result
    }

    /// The group on the slot's open transaction when it has a usable one, else on a pool
    /// connection; `open` is the transaction opened for the next group, if any.
    private func commitOnce(
        _ requests: [PublishEntry], retentionSeconds: String, open: inout OpenConnection?, openNext: Bool
    ) throws -> GroupResult {
        var connection: PGConnection
        var transaction: OpenTransaction?
        if let held = open.take() {
            // Ended by the server while it waited (terminated, timed out, restarted): it has
            // something to read. Nothing was sent in it: a fresh connection takes the group.
            if pool.isUsable(held.connection) {
                (connection, transaction) = (held.connection, held.transaction)
            } else {
                held.connection.close()
                connection = try pool.checkOut()
            }
        } else {
            connection = try pool.checkOut()
        }
        do {
            let (result, next) = try Self.publish(
                requests, retentionSeconds: retentionSeconds, on: connection, in: transaction, openNext: openNext,
                floor: highestID.load(ordering: .relaxed))
            if let next {
                open = OpenConnection(connection: connection, transaction: next)
            } else {
                pool.checkIn(connection)
            }
            return result
        } catch {
            pool.checkIn(connection)
            throw error
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
                return try committedResult(of: lost)
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

    /// What a transaction whose COMMIT was lost stored, now that it is known to have committed:
    /// known before COMMIT was sent, or, for a group whose ids came in the lost round trip, its
    /// rows (those above the transaction's floor that it inserted: `xmin`).
    private func committedResult(of lost: LostAtCommit) throws -> GroupResult {
        switch lost.recovery {
        case .known(let result):
            return result
        case .search(let floor, let counts):
            guard let full = UInt64(lost.transactionID) else { throw CommitOutcomeUnknownError() }
            let ids: [EventID]
            do {
                ids = try pool.withConnectionHere { connection in
                    try connection.query(
                        "SELECT id FROM tidings.events WHERE id > $1::bigint AND xmin = $2::xid ORDER BY id",
                        [String(floor), String(full & 0xFFFF_FFFF)]
                    ).rows.map { try $0.int64(0) }
                }
            } catch {
                throw CommitOutcomeUnknownError()
            }
            let total = counts.reduce(0, +)
            guard ids.count == total else { throw CommitOutcomeUnknownError() }
            return GroupResult(ids: Self.split(ids, counts: counts), stored: total)
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
    /// How to learn what a transaction stored once it is known to have committed.
    enum Recovery: Sendable {
        /// Known before COMMIT was sent.
        case known(PostgresEventStore.GroupResult)
        /// Its rows: above `after`, inserted by the transaction, cut into runs of `counts`.
        case search(after: EventID, counts: [Int])
    }

    var underlying: PostgresError
    var transactionID: String
    var recovery: Recovery
}
