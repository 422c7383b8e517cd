/// Where events are kept: the memory store or PostgreSQL.
///
/// The store assigns ids and keeps history for replay; getting live events to the bus is the
/// store's business too (the memory store delivers as it appends, the PostgreSQL store through
/// its listener), always in id order.
public protocol EventStore: Sendable {
    /// Stores events atomically (all or none) and returns their ids in order. An event whose
    /// idempotency key this publisher already used within retention is not stored again: its
    /// first id is returned.
    func publish(_ events: [NewEvent], publisher: String) async throws -> [EventID]

    /// `publish` for a caller that must not suspend (an event loop): `completion` is called
    /// once, with the ids or the error `publish` would throw, on whichever thread finished the
    /// work — possibly before this returns.
    func publish(
        _ events: [NewEvent], publisher: String,
        completion: @escaping @Sendable (Result<[EventID], any Error>) -> Void)

    /// Retained events of any of `targets` with `after < id <= through`, in id order, at most
    /// `limit` of them, and what history has lost.
    func replay(targets: Set<Target>, after: EventID, through: EventID, limit: Int) async throws -> ReplayPage

    /// Ids at or below it are from before this store's history, which it cannot account for
    /// (memory mode: ids of an earlier process); 0 when the store knows every id it issued.
    var historyStart: EventID { get }

    /// The highest id issued so far (also to a transaction that is still open or rolled back).
    func lastIssuedID() async throws -> EventID
}

/// One page of replay.
public struct ReplayPage: Sendable {
    /// Matching events in id order.
    public var events: [Event]
    /// The highest id that is gone (pruned or expired), 0 if none. Only exact when above the
    /// page's `after`: a store may report any lower value when nothing after it is gone.
    public var cut: EventID
    /// The oldest retained id, if any event is retained.
    public var oldestRetained: EventID?

    public init(events: [Event], cut: EventID, oldestRetained: EventID?) {
        self.events = events
        self.cut = cut
        self.oldestRetained = oldestRetained
    }

    /// True when events after `resumePoint` may be gone: the stream starts with `tidings.reset`.
    public func hasGap(after resumePoint: EventID) -> Bool {
        resumePoint < cut
    }

    /// The id a `history_expired` reset carries before the stream's horizon caps it: the oldest
    /// retained id minus one (so a reconnect does not repeat the reset), or the cut when nothing
    /// is retained.
    public var resetID: EventID {
        if let oldestRetained { return oldestRetained - 1 }
        return cut
    }
}

/// The connection to the store was lost while a publish committed, and whether it committed
/// cannot be known: the events may or may not be stored. A retry with the same idempotency
/// keys is safe; one without them may store the events twice.
public struct CommitOutcomeUnknownError: Error, Sendable, CustomStringConvertible {
    public init() {}

    public var description: String { "the outcome of a publish's COMMIT cannot be known" }
}
