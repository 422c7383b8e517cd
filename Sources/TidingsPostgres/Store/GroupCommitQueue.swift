/// Which publish requests share a transaction: group commit's state, a plain value whose every
/// change returns what to do next (the store does it after releasing its lock).
///
/// Requests wait in arrival order. While fewer than `maxInFlight` transactions run, a new one
/// starts and takes everything that waits, up to `limit` (at least one request, whatever its
/// size). When a transaction ends and requests wait, its slot runs them next at once. There is
/// no timer: a request that finds a slot free starts at once — alone, since nothing waits while
/// a slot is free — so a lone publisher's latency stays one commit, and requests share a
/// transaction only when they would have waited anyway.
struct GroupCommitQueue<Element> {
    typealias Size = GroupCommitSize

    /// Most transactions running at once.
    let maxInFlight: Int
    /// Most one transaction takes; a single larger request still runs, alone.
    let limit: Size

    private var waiting: [(element: Element, size: Size)] = []
    /// The first entry of `waiting` still waiting (taken ones are dropped in bulk).
    private var head = 0
    /// Transactions running.
    private(set) var inFlight = 0

    init(maxInFlight: Int, limit: Size) {
        precondition(maxInFlight >= 1, "group commit needs at least one transaction slot")
        self.maxInFlight = maxInFlight
        self.limit = limit
    }

    /// Requests waiting for a transaction.
    var queued: Int { waiting.count - head }

    /// A request arrives. Returns the group a new transaction runs now (the request itself), or
    /// nil when every slot is busy and the request waits.
    mutating func enqueue(_ element: Element, size: Size) -> [Element]? {
        add(element, size: size)
        guard inFlight < maxInFlight else { return nil }
        inFlight += 1
        return takeGroup()
    }

    /// A request arrives for a slot that is running (one waiting for work, say): it waits for
    /// that slot's ``next()``.
    mutating func add(_ element: Element, size: Size) {
        waiting.append((element, size))
    }

    /// A transaction ended. Returns the group its slot runs next, or nil when nothing waits and
    /// the slot is free.
    mutating func finished() -> [Element]? {
        if let group = next() { return group }
        stop()
        return nil
    }

    /// The group a running slot runs next, or nil when nothing waits (the slot stays running:
    /// it waits for work, or ``stop()``s).
    mutating func next() -> [Element]? {
        precondition(inFlight > 0, "only a running slot takes work")
        return queued > 0 ? takeGroup() : nil
    }

    /// A running slot stops: it is free.
    mutating func stop() {
        precondition(inFlight > 0, "a transaction ended that never started")
        inFlight -= 1
    }

    /// The oldest waiting requests, as many as fit in `limit`, at least one.
    private mutating func takeGroup() -> [Element] {
        var group: [Element] = []
        var size = Size.zero
        while head < waiting.count {
            let next = waiting[head]
            if !group.isEmpty, !(size + next.size).fits(in: limit) { break }
            group.append(next.element)
            size = size + next.size
            head += 1
        }
        if head == waiting.count {
            waiting.removeAll(keepingCapacity: true)
            head = 0
        } else if head * 2 >= waiting.count {
            waiting.removeFirst(head)
            head = 0
        }
        return group
    }
}

extension GroupCommitQueue: Sendable where Element: Sendable {}

/// How big a request or a group is.
struct GroupCommitSize: Sendable, Equatable {
    var events: Int
    var bytes: Int

    static let zero = GroupCommitSize(events: 0, bytes: 0)

    static func + (a: GroupCommitSize, b: GroupCommitSize) -> GroupCommitSize {
        GroupCommitSize(events: a.events + b.events, bytes: a.bytes + b.bytes)
    }

    func fits(in limit: GroupCommitSize) -> Bool {
        events <= limit.events && bytes <= limit.bytes
    }
}
