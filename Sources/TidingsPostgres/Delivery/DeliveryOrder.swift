import NIOCore
import TidingsCore

/// Decides which stored events the listener may deliver, so that the bus sees ids in order with
/// no gap: a plain state machine fed with what each read saw, returning what to do.
///
/// Ids come from a sequence but transactions commit out of id order: T1 takes 10, T2 takes 11
/// and commits first. 11 must wait while 10 may still commit. The rule that makes this
/// decidable: a publisher takes its transaction id *before* its event id
/// (`pg_current_xact_id()` then `nextval`), so whoever holds an id at or below a visible one got
/// its transaction id before that read's snapshot was taken.
///
/// - Rows that continue contiguously from `lastDelivered` are delivered.
/// - At a hole (a missing id below a visible one) the listener reads again, this time also
///   listing the *publishers* in progress — `needsHoleRead`. A publisher holds a shared
///   transaction-level advisory lock (`tidings.take_event_ids`, `tidings.publish`) from before
///   it takes its first event id until its transaction ends; the read lists the transaction ids
///   of the holders (from `pg_locks`; reading it assigns no transaction id and writes nothing).
///   Whatever can still fill a hole up to the highest id of that read belongs to one of them:
///   it took the lock before its event id, so before that read, and is still open.
///   Transactions that never took an event id — a forgotten `psql` session, a report, a
///   transaction of another database — are never waited for. The listener waits until a later
///   snapshot shows all of them ended; that same read's rows are then final: holes at or below
///   that highest id are permanent (rolled back) and are passed over (`advance`).
/// - The wait is bounded by `orderWait`. After it the hole is treated as permanent and reported
///   (`expired`): an event that commits later is kept and replayable by id, but was not
///   delivered live. The candidates still open then are *abandoned*: later holes do not wait
///   for them again (only one `orderWait` per stuck publisher, not one per hole) until they end.
///
/// The "ended" check and the rows it settles always come from one statement, so one snapshot:
/// the commit log can say "committed" a moment before a new snapshot shows the rows.
struct DeliveryOrder: Sendable {
    /// A wait for the transactions that may fill holes at or below `through`.
    struct Wait: Sendable, Equatable {
        var through: EventID
        var candidates: Set<UInt64>
        var started: NIODeadline
        var deadline: NIODeadline

        /// True when every candidate had ended in `snapshot`.
        func hasEnded(in snapshot: PGSnapshot) -> Bool {
            candidates.allSatisfy(snapshot.hasEnded)
        }
    }

    /// What to do with one row or hole, in order.
    enum Step<Row: Sendable>: Sendable {
        /// Deliver the row (its id is the next one).
        case deliver(Row)
        /// Ids up to this one will never be delivered: advance the bus horizon.
        case advance(to: EventID)
    }

    enum Status: Sendable, Equatable {
        /// Nothing blocks delivery.
        case idle
        /// A hole blocks delivery; read again soon.
        case waiting
        /// A hole blocks delivery and no wait covers it: read again at once with a transaction id.
        case needsHoleRead
    }

    /// A hole given up on after `orderWait`.
    struct Expired: Sendable, Equatable {
        var from: EventID
        var through: EventID
        var waited: TimeAmount
    }

    struct Outcome<Row: Sendable>: Sendable {
        var steps: [Step<Row>] = []
        var status: Status = .idle
        var expired: Expired?
    }

    private(set) var lastDelivered: EventID
    /// Every hole at or below it is permanent.
    private(set) var settledThrough: EventID
    private(set) var wait: Wait?
    /// Publishers a wait gave up on and that had not ended by the last read: not waited for again.
    private(set) var abandoned: Set<UInt64> = []
    let orderWait: TimeAmount

    init(lastDelivered: EventID, orderWait: TimeAmount) {
        self.lastDelivered = lastDelivered
        self.settledThrough = lastDelivered
        self.orderWait = orderWait
    }

    /// Ids up to `id` are gone for good (pruned): delivery goes on after it.
    mutating func pass(through id: EventID) {
        guard id > lastDelivered else { return }
        lastDelivered = id
        settledThrough = max(settledThrough, id)
        if let wait, wait.through <= id { self.wait = nil }
    }

    /// True when a read is worth doing while a wait is pending: every candidate had ended in
    /// `snapshot` (taken by a cheap probe that reads no rows), or the wait expired. Always true
    /// without a wait.
    func mayRead(snapshot: PGSnapshot, now: NIODeadline) -> Bool {
        guard let wait else { return true }
        return now >= wait.deadline || wait.hasEnded(in: snapshot)
    }

    /// Processes one read: `rows` in id order (all after `lastDelivered` as of the read), the
    /// read's snapshot, and for a hole read the transactions in progress after its snapshot.
    mutating func process<Row: Sendable>(
        rows: [Row],
        id: (Row) -> EventID,
        snapshot: PGSnapshot,
        inProgress: Set<UInt64>?,
        now: NIODeadline
    ) -> Outcome<Row> {
        var outcome = Outcome<Row>()
        if !abandoned.isEmpty {
            abandoned = abandoned.filter { !snapshot.hasEnded($0) }
        }
        if let wait {
            if wait.hasEnded(in: snapshot) {
                settledThrough = max(settledThrough, wait.through)
                self.wait = nil
            } else if now >= wait.deadline {
                outcome.expired = Expired(from: lastDelivered + 1, through: wait.through, waited: now - wait.started)
                settledThrough = max(settledThrough, wait.through)
                abandoned.formUnion(wait.candidates.filter { !snapshot.hasEnded($0) })
                self.wait = nil
            }
        }
        var blocked = false
        var highest = lastDelivered
        for row in rows {
            let rowID = id(row)
            guard rowID > lastDelivered else { continue }
            highest = max(highest, rowID)
            if blocked { continue }
            if rowID == lastDelivered + 1 {
                outcome.steps.append(.deliver(row))
                lastDelivered = rowID
            } else if rowID - 1 <= settledThrough {
                outcome.steps.append(.advance(to: rowID - 1))
                outcome.steps.append(.deliver(row))
                lastDelivered = rowID
            } else {
                blocked = true
            }
        }
        if let wait, lastDelivered >= wait.through {
            self.wait = nil
        }
        guard blocked else { return outcome }
        if wait != nil {
            outcome.status = .waiting
        } else if let inProgress {
            wait = Wait(
                through: highest, candidates: inProgress.subtracting(abandoned), started: now, deadline: now + orderWait)
            outcome.status = .waiting
        } else {
            outcome.status = .needsHoleRead
        }
        return outcome
    }
}
