import CTidingsPrefetch
public import Metrics
public import NIOCore
import Synchronization

/// The in-process event bus: subscriptions keyed by target, fed in id order.
///
/// Delivery and registration share one lock, so a new subscription learns exactly which id the
/// bus had delivered when it joined (its replay horizon): every later event reaches its queue,
/// every earlier one is in the store. That is what makes the replay seam gap-free.
public final class EventBus: Sendable {
    /// Limits for subscriptions.
    public struct Limits: Sendable {
        /// Most open streams (`--max-connections`); `nil` for no limit.
        public var maxConnections: Int?
        /// Most open streams of one user (`--max-connections-per-user`); `nil` for no limit.
        public var maxConnectionsPerUser: Int?
        /// Most queued events per subscriber before it is disconnected (`--max-queue`).
        public var maxQueue: Int

        public init(maxConnections: Int? = nil, maxConnectionsPerUser: Int? = nil, maxQueue: Int = 1_000) {
            self.maxConnections = maxConnections
            self.maxConnectionsPerUser = maxConnectionsPerUser
            self.maxQueue = maxQueue
        }
    }

    /// Why a subscription was refused.
    public enum Rejection: Error, Sendable, Equatable {
        case tooManyConnections
        case tooManyConnectionsForUser
        case shuttingDown
    }

    /// The subscriptions of one target, contiguous for the fan-out loop.
    private struct Subscribers {
        var list: [Subscription] = []
        var positions: [UInt64: Int] = [:]

        var isEmpty: Bool { list.isEmpty }

        mutating func insert(_ subscription: Subscription) {
            positions[subscription.id] = list.count
            list.append(subscription)
        }

        mutating func remove(_ id: UInt64) {
            guard let position = positions.removeValue(forKey: id) else { return }
            let last = list.removeLast()
            if position < list.count {
                list[position] = last
                positions[last.id] = position
            }
        }
    }

    private struct State {
        var byTarget: [Target: Subscribers] = [:]
        /// Every open subscription with its current targets (a WebSocket changes them at run time).
        var all: [UInt64: (subscription: Subscription, targets: [Target])] = [:]
        var perUser: [String: Int] = [:]
        /// Per topic, the open streams of each user (presence, kept as streams come and go so a
        /// question never walks the subscribers).
        var topicUsers: [Target: [String: Int]] = [:]
        var lastDelivered: EventID
        var dispatch: UInt64 = 0
        var nextSubscriptionID: UInt64 = 1
        var shutDown = false

        mutating func join(_ subscription: Subscription, _ target: Target) {
            byTarget[target, default: Subscribers()].insert(subscription)
            if case .topic = target { topicUsers[target, default: [:]][subscription.user, default: 0] += 1 }
        }

        mutating func leave(_ subscription: Subscription, _ target: Target) {
            byTarget[target]?.remove(subscription.id)
            if byTarget[target]?.isEmpty == true { byTarget[target] = nil }
            guard case .topic = target, var users = topicUsers[target] else { return }
            let remaining = users[subscription.user, default: 1] - 1
            users[subscription.user] = remaining > 0 ? remaining : nil
            topicUsers[target] = users.isEmpty ? nil : users
        }
    }

    public let limits: Limits
    private let state: Mutex<State>
    private let metrics: BusMetrics

    /// - Parameters:
    ///   - lastDelivered: the highest id already delivered (replay covers everything up to it).
    public init(limits: Limits = .init(), lastDelivered: EventID = 0, metricsFactory: (any MetricsFactory)? = nil) {
        self.limits = limits
        self.state = Mutex(State(lastDelivered: lastDelivered))
        self.metrics = BusMetrics(factory: metricsFactory)
    }

    /// The highest id delivered so far.
    public var lastDelivered: EventID {
        state.withLock { $0.lastDelivered }
    }

    /// Number of open subscriptions.
    public var subscriptionCount: Int {
        state.withLock { $0.all.count }
    }

    /// Registers a stream for `targets`.
    ///
    /// - Parameter hold: queue live events without waking the writer until `release` (set it
    ///   when the stream replays history first).
    /// - Returns: the subscription and the replay horizon: the id delivered last before it joined.
    public func subscribe(
        user: String,
        targets: [Target],
        expiresAt: NIODeadline? = nil,
        hold: Bool,
        transport: StreamTransport = .sse,
        keepAlive: Subscription.KeepAlive = .whenIdle,
        interrupt: (@Sendable () -> Void)? = nil
    ) throws(Rejection) -> (subscription: Subscription, horizon: EventID) {
        let result: Result<(Subscription, EventID), Rejection> = state.withLock { state in
            if state.shutDown { return .failure(.shuttingDown) }
            if let max = limits.maxConnections, state.all.count >= max {
                return .failure(.tooManyConnections)
            }
            let userCount = state.perUser[user, default: 0]
            if let max = limits.maxConnectionsPerUser, userCount >= max {
                return .failure(.tooManyConnectionsForUser)
            }
            let id = state.nextSubscriptionID
            state.nextSubscriptionID += 1
            let subscription = Subscription(
                id: id, user: user, transport: transport, expiresAt: expiresAt, maxQueue: limits.maxQueue, holding: hold,
                keepAlive: keepAlive, interrupt: interrupt)
            state.all[id] = (subscription, targets)
            state.perUser[user] = userCount + 1
            for target in targets { state.join(subscription, target) }
            return .success((subscription, state.lastDelivered))
        }
        switch result {
        case .success(let (subscription, horizon)):
            metrics.open.increment()
            metrics.streams(subscription.transport).increment()
            return (subscription, horizon)
        case .failure(let rejection):
            throw rejection
        }
    }

    /// Removes a subscription (its stream has ended).
    public func unsubscribe(_ subscription: Subscription) {
        let removed = state.withLock { Self.remove(subscription, from: &$0) }
        if removed { recordRemoval(subscription) }
    }

    private static func remove(_ subscription: Subscription, from state: inout State) -> Bool {
        guard let entry = state.all.removeValue(forKey: subscription.id) else { return false }
        let remaining = state.perUser[subscription.user, default: 1] - 1
        state.perUser[subscription.user] = remaining > 0 ? remaining : nil
        for target in entry.targets { state.leave(subscription, target) }
        return true
    }

    private func recordRemoval(_ subscription: Subscription) {
        metrics.open.decrement()
        metrics.streams(subscription.transport).decrement()
        let reason = subscription.endReason ?? .clientClosed
        // A long poll that answered is not a disconnect; one cut off (slow, shutdown, expiry) is.
        if subscription.transport != .longPoll || reason != .clientClosed { metrics.disconnects(reason).increment() }
        let open = NIODeadline.now() - subscription.openedAt
        metrics.duration(subscription.transport).record(Double(open.nanoseconds) / 1e9)
    }

    /// Changes an open subscription's targets: live events of `adding` reach it from the next
    /// event delivered on (no replay), events of `removing` stop. Its user's target stays.
    /// - Returns: the targets it has now; `nil` when it is no longer on the bus.
    @discardableResult
    public func update(_ subscription: Subscription, adding: [Target], removing: [Target]) -> [Target]? {
        state.withLock { state -> [Target]? in
            guard var entry = state.all[subscription.id] else { return nil }
            let own = Target.user(subscription.user)
            for target in removing where target != own {
                guard let position = entry.targets.firstIndex(of: target) else { continue }
                entry.targets.remove(at: position)
                state.leave(subscription, target)
            }
            for target in adding where !entry.targets.contains(target) {
                entry.targets.append(target)
                state.join(subscription, target)
            }
            state.all[subscription.id] = entry
            return entry.targets
        }
    }

    /// The targets an open subscription has now; `nil` when it is no longer on the bus.
    public func targets(of subscription: Subscription) -> [Target]? {
        state.withLock { $0.all[subscription.id]?.targets }
    }

    /// Open streams of `user` on this instance.
    public func connections(user: String) -> Int {
        state.withLock { $0.perUser[user, default: 0] }
    }

    /// Open streams subscribed to `topic` on this instance, and how many distinct users hold them.
    public func presence(topic: String) -> (connections: Int, users: Int) {
        state.withLock { state in
            guard let users = state.topicUsers[.topic(topic)] else { return (0, 0) }
            return (users.values.reduce(0, +), users.count)
        }
    }

    /// Open streams per target and user on this instance: what an instance reports to the others.
    /// A user's own target counts every stream of that user.
    public func presenceCounts() -> [Target: [String: Int]] {
        state.withLock { state in
            var counts: [Target: [String: Int]] = [:]
            for (user, count) in state.perUser { counts[.user(user)] = [user: count] }
            for (target, users) in state.topicUsers { counts[target] = users }
            return counts
        }
    }

    /// Delivers an event to every subscription of its targets, once each.
    ///
    /// Callers deliver durable events in increasing id order; an id at or below the last one
    /// delivered is dropped (never repeated). Ephemeral events (no id) are delivered as they come.
    /// - Returns: how many subscriptions received it.
    @discardableResult
    public func deliver(_ event: Event) -> Int {
        deliver(event, toEveryone: false)
    }

    /// Delivers a durable event to every open subscription, whatever its targets (the
    /// listener's `tidings.reset` when it fell behind retention), and advances the horizon to
    /// its id.
    @discardableResult
    public func broadcast(_ event: Event) -> Int {
        deliver(event, toEveryone: true)
    }

    private func deliver(_ event: Event, toEveryone: Bool) -> Int {
        var kicks: [any DrainKick] = []
        var overflowed: [Subscription] = []
        let delivered = state.withLock { state -> Int in
            if let id = event.id {
                guard id > state.lastDelivered else { return -1 }
                state.lastDelivered = id
            }
            state.dispatch &+= 1
            let dispatch = state.dispatch
            let delivery = Delivery(event)
            var count = 0
            func fanOut(to subscriptions: [Subscription]) {
                // Subscriptions are not in cache any more between events: ask for a few ahead.
                let ahead = 4
                let total = subscriptions.count
                for index in 0..<total {
                    if index + ahead < total {
                        // The reference's bits, read without retaining (a retain would load the object).
                        let next = subscriptions.withUnsafeBytes {
                            $0.load(fromByteOffset: (index + ahead) * MemoryLayout<Subscription>.stride, as: UnsafeRawPointer.self)
                        }
                        tidings_prefetch(next, 4)
                    }
                    let subscription = subscriptions[index]
                    switch subscription.enqueue(delivery, dispatch: dispatch) {
                    case .skipped:
                        break
                    case .queued(let toWake):
                        count += 1
                        switch toWake {
                        case .none:
                            break
                        case .driver(let driver):
                            // Queued right away (a leaf lock), while the driver is in cache; the
                            // drains start after the bus lock is released.
                            if let kick = driver.schedule(), !kicks.contains(where: { $0 === kick }) { kicks.append(kick) }
                        }
                    case .overflow:
                        overflowed.append(subscription)
                    }
                }
            }
            if toEveryone {
                fanOut(to: state.all.values.map(\.subscription))
            } else {
                for target in event.targets {
                    guard let subscriptions = state.byTarget[target]?.list else { continue }
                    fanOut(to: subscriptions)
                }
            }
            // A slow subscriber leaves the bus at once: its slot is free for its reconnect.
            for subscription in overflowed { _ = Self.remove(subscription, from: &state) }
            return count
        }
        for kick in kicks { kick.kick() }
        for subscription in overflowed {
            recordRemoval(subscription)
            subscription.wake(endedNow: true, reason: .slowConsumer)
        }
        if delivered < 0 {
            metrics.outOfOrder.increment()
            return 0
        }
        metrics.delivered.increment(by: Int64(delivered))
        if !overflowed.isEmpty { metrics.slowConsumers.increment(by: Int64(overflowed.count)) }
        return delivered
    }

    /// Advances the delivery horizon without an event (ids that will never be delivered, such as
    /// a rolled-back transaction's).
    public func advance(to id: EventID) {
        state.withLock { state in
            if id > state.lastDelivered { state.lastDelivered = id }
        }
    }

    /// Sends keep-alives to streams idle for `keepAlive` and ends streams whose token expired.
    public func tick(now: NIODeadline = .now(), keepAlive: TimeAmount) {
        let subscriptions = state.withLock { $0.all.values.map(\.subscription) }
        Subscription.fire(subscriptions.map { $0.tick(now: now, keepAlive: keepAlive) })
    }

    /// Refuses new streams (they are answered `503`) and returns the open ones, for a drain to
    /// end them one by one; ``shutdown()`` then ends whatever is left.
    public func refuseNew() -> [Subscription] {
        state.withLock { state in
            state.shutDown = true
            return state.all.values.map(\.subscription)
        }
    }

    /// Ends every stream and refuses new ones.
    public func shutdown() {
        let subscriptions = state.withLock { state -> [Subscription] in
            state.shutDown = true
            return state.all.values.map(\.subscription)
        }
        for subscription in subscriptions { subscription.finish(.shutdown) }
    }
}

/// The bus's metrics, created once.
struct BusMetrics: Sendable {
    let open: Meter
    let delivered: Counter
    let outOfOrder: Counter
    let slowConsumers: Counter
    private let disconnectCounters: [StreamEnd: Counter]
    private let streamMeters: [StreamTransport: Meter]
    private let durations: [StreamTransport: Recorder]

    init(factory: (any MetricsFactory)?) {
        let factory = factory ?? MetricsSystem.factory
        open = Meter(label: "tidings_connections_open", factory: factory)
        delivered = Counter(label: "tidings_events_delivered_total", factory: factory)
        outOfOrder = Counter(label: "tidings_events_dropped_out_of_order_total", factory: factory)
        slowConsumers = Counter(label: "tidings_slow_consumers_total", factory: factory)
        var disconnects: [StreamEnd: Counter] = [:]
        for reason in StreamEnd.allCases {
            disconnects[reason] = Counter(
                label: "tidings_disconnects_total", dimensions: [("reason", reason.rawValue)], factory: factory)
        }
        disconnectCounters = disconnects
        var streams: [StreamTransport: Meter] = [:]
        for transport in StreamTransport.allCases {
            streams[transport] = Meter(
                label: "tidings_streams_open", dimensions: [("transport", transport.rawValue)], factory: factory)
        }
        streamMeters = streams
        var durations: [StreamTransport: Recorder] = [:]
        for transport in StreamTransport.allCases {
            durations[transport] = Recorder(
                label: "tidings_stream_duration_seconds", dimensions: [("transport", transport.rawValue)], aggregate: true,
                factory: factory)
        }
        self.durations = durations
    }

    /// `tidings_stream_duration_seconds`: how long a stream of `transport` was open, in seconds.
    func duration(_ transport: StreamTransport) -> Recorder {
        durations[transport]!
    }

    func streams(_ transport: StreamTransport) -> Meter {
        streamMeters[transport]!
    }

    func disconnects(_ reason: StreamEnd) -> Counter {
        disconnectCounters[reason]!
    }
}
