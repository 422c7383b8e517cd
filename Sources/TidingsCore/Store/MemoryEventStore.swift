import DequeModule
public import Foundation
public import Metrics
import Synchronization

/// The in-memory store: one process, history kept for `retention` and at most `maxEvents`.
///
/// Appending and delivering to the bus happen under one lock, so the bus sees ids in order.
///
/// Ids never go backwards across restarts: a store's first id is the time it was made, in
/// microseconds since 1970 (or the bus's horizon plus one, if higher), so a restarted process
/// starts above every id an earlier one issued unless that one issued more than a million ids
/// per second of its life. A resume point from before the first id is one the store cannot
/// account for (``historyStart``).
public final class MemoryEventStore: EventStore {
    public struct Configuration: Sendable {
        /// How long events are kept (`--retention`).
        public var retention: Duration
        /// Most events kept (`--memory-max-events`).
        public var maxEvents: Int

        public init(retention: Duration = .seconds(24 * 3600), maxEvents: Int = 100_000) {
            self.retention = retention
            self.maxEvents = maxEvents
        }
    }

    private struct IdempotencyKey: Hashable {
        var publisher: String
        var key: String
    }

    private struct Entry {
        var event: Event
        var idempotencyKey: IdempotencyKey?
    }

    private struct State {
        var entries: Deque<Entry> = []
        var nextID: EventID = 1
        var cut: EventID = 0
        var keys: [IdempotencyKey: EventID] = [:]
    }

    public let configuration: Configuration
    /// The id before this store's first: ids at or below it are an earlier process's.
    public let historyStart: EventID
    private let bus: EventBus
    private let clock: any WallClock
    private let state = Mutex(State())
    private let published: Counter

    public init(
        bus: EventBus,
        configuration: Configuration = .init(),
        clock: any WallClock = SystemClock(),
        metricsFactory: (any MetricsFactory)? = nil
    ) {
        self.bus = bus
        self.configuration = configuration
        self.clock = clock
        self.published = Counter(label: "tidings_events_published_total", factory: metricsFactory ?? MetricsSystem.factory)
        let start = max(bus.lastDelivered, Self.clockID(clock.now()))
        self.historyStart = start
        bus.advance(to: start)
        self.state.withLock { $0.nextID = start + 1 }
    }

    /// Microseconds since 1970 at `date` (0 before it).
    static func clockID(_ date: Date) -> EventID {
        let microseconds = (date.timeIntervalSince1970 * 1_000_000).rounded(.down)
        return microseconds > 0 ? EventID(microseconds) : 0
    }

    public func lastIssuedID() async throws -> EventID {
        state.withLock { $0.nextID - 1 }
    }

    public func publish(_ events: [NewEvent], publisher: String) async throws -> [EventID] {
        publishNow(events, publisher: publisher)
    }

    public func publish(
        _ events: [NewEvent], publisher: String,
        completion: @escaping @Sendable (Result<[EventID], any Error>) -> Void
    ) {
        completion(.success(publishNow(events, publisher: publisher)))
    }

    /// `publish` without suspension.
    public func publishNow(_ events: [NewEvent], publisher: String) -> [EventID] {
        let now = clock.now()
        var stored = 0
        let ids = state.withLock { state -> [EventID] in
            prune(&state, now: now)
            var ids: [EventID] = []
            ids.reserveCapacity(events.count)
            for new in events {
                let key = new.idempotencyKey.map { IdempotencyKey(publisher: publisher, key: $0) }
                if let key, let existing = state.keys[key] {
                    ids.append(existing)
                    continue
                }
                let id = state.nextID
                state.nextID += 1
                let event = Event(id: id, targets: new.targets, type: new.type, data: new.data, createdAt: now)
                state.entries.append(Entry(event: event, idempotencyKey: key))
                if let key { state.keys[key] = id }
                bus.deliver(event)
                ids.append(id)
                stored += 1
            }
            prune(&state, now: now)
            return ids
        }
        published.increment(by: stored)
        return ids
    }

    public func replay(targets: Set<Target>, after: EventID, through: EventID, limit: Int) async throws -> ReplayPage {
        replayNow(targets: targets, after: after, through: through, limit: limit)
    }

    /// `replay` without suspension.
    public func replayNow(targets: Set<Target>, after: EventID, through: EventID, limit: Int) -> ReplayPage {
        let now = clock.now()
        return state.withLock { state in
            prune(&state, now: now)
            var events: [Event] = []
            let entries = state.entries
            // Ids are contiguous and increasing: find the first id after the resume point.
            var low = 0
            var high = entries.count
            while low < high {
                let mid = (low + high) / 2
                if entries[mid].event.id! <= after { low = mid + 1 } else { high = mid }
            }
            var index = low
            while index < entries.count, events.count < limit {
                let event = entries[index].event
                if event.id! > through { break }
                if event.targets.contains(where: targets.contains) { events.append(event) }
                index += 1
            }
            return ReplayPage(events: events, cut: state.cut, oldestRetained: state.entries.first?.event.id)
        }
    }

    /// Number of events retained now.
    public var count: Int {
        let now = clock.now()
        return state.withLock { state in
            prune(&state, now: now)
            return state.entries.count
        }
    }

    private func prune(_ state: inout State, now: Date) {
        let oldestAllowed = now.addingTimeInterval(-configuration.retention.timeInterval)
        while let first = state.entries.first,
            state.entries.count > configuration.maxEvents || first.event.createdAt < oldestAllowed
        {
            state.entries.removeFirst()
            state.cut = first.event.id!
            if let key = first.idempotencyKey { state.keys[key] = nil }
        }
    }
}

extension Duration {
    /// The duration in seconds as a `TimeInterval`.
    public var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }
}
