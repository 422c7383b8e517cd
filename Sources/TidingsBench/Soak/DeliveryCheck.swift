/// What one stream received, in arrival order, across all its connections (reconnects resume
/// with `Last-Event-ID`, so the whole log must read as one run of its topic's events).
public enum ReceivedEntry: Sendable, Equatable {
    /// An event with its id.
    case event(Int64)
    /// `event: tidings.reset` with its `id:`: a documented gap up to that id.
    case reset(Int64)
}

/// Checks a stream's log against the ids the gateway acknowledged for its topic: every event
/// once, in order, with no gap (a `tidings.reset` excuses the gap it announces).
public struct DeliveryCheck: Sendable {
    /// What one stream's log showed.
    public struct Verdict: Sendable, Equatable, Codable {
        public var events = 0
        /// Events missing between two received ones (not announced by a reset).
        public var missing = 0
        /// Events received a second time.
        public var duplicates = 0
        /// Events that arrived after a later one (and not before).
        public var outOfOrder = 0
        /// Ids never acknowledged for the stream's topic.
        public var unknown = 0
        /// `tidings.reset` events, and the events they excused.
        public var resets = 0
        public var excused = 0
        /// For a stream still open at the end: acknowledged events after its last one.
        public var missingAtEnd = 0

        public init() {}

        public var isClean: Bool { missing == 0 && duplicates == 0 && outOfOrder == 0 && unknown == 0 && missingAtEnd == 0 }

        public mutating func add(_ other: Verdict) {
            events += other.events
            missing += other.missing
            duplicates += other.duplicates
            outOfOrder += other.outOfOrder
            unknown += other.unknown
            resets += other.resets
            excused += other.excused
            missingAtEnd += other.missingAtEnd
        }
    }

    /// Acknowledged ids of each topic, ascending.
    private let published: [String: [Int64]]
    private let positions: [String: [Int64: Int]]

    /// `published`: every id the gateway answered `202` with, by topic (any order).
    public init(published: [String: [Int64]]) {
        var sorted: [String: [Int64]] = [:]
        var positions: [String: [Int64: Int]] = [:]
        for (topic, ids) in published {
            let list = Array(Set(ids)).sorted()
            sorted[topic] = list
            positions[topic] = Dictionary(uniqueKeysWithValues: list.enumerated().map { ($0.element, $0.offset) })
        }
        self.published = sorted
        self.positions = positions
    }

    /// `log` of a stream on `topic`. Its first event may be any (a stream without a resume
    /// point starts with live events); from there each must be the topic's next one.
    /// `survivor`: the stream was still open once publishing stopped and deliveries settled,
    /// so it must hold the topic's last event.
    public func check(topic: String, log: [ReceivedEntry], survivor: Bool) -> Verdict {
        let list = published[topic] ?? []
        let position = positions[topic] ?? [:]
        var verdict = Verdict()
        /// Position of the last event taken in order; -1 before the first.
        var last: Int?
        var seen = Set<Int64>()
        for entry in log {
            switch entry {
            case .reset(let id):
                verdict.resets += 1
                // The stream continues after `id`: the first event above it is next.
                let next = Self.firstIndex(above: id, in: list)
                if let current = last, next > current + 1 {
                    verdict.excused += next - current - 1
                    last = next - 1
                } else if last == nil {
                    last = next - 1
                }
            case .event(let id):
                verdict.events += 1
                guard let index = position[id] else {
                    verdict.unknown += 1
                    continue
                }
                defer { seen.insert(id) }
                guard let current = last else {
                    last = index
                    continue
                }
                if index == current + 1 {
                    last = index
                } else if index > current + 1 {
                    verdict.missing += index - current - 1
                    last = index
                } else if seen.contains(id) {
                    verdict.duplicates += 1
                } else {
                    verdict.outOfOrder += 1
                }
            }
        }
        if survivor {
            verdict.missingAtEnd = list.count - 1 - (last ?? -1)
        }
        return verdict
    }

    /// The position of the first id above `id` in `list` (`list.count` when none is).
    private static func firstIndex(above id: Int64, in list: [Int64]) -> Int {
        var low = 0
        var high = list.count
        while low < high {
            let middle = (low + high) / 2
            if list[middle] <= id { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
