public import NIOCore
import Synchronization

/// Why a stream ended.
public enum StreamEnd: String, Sendable, CaseIterable {
    /// The subscriber's queue passed `--max-queue` events.
    case slowConsumer = "slow_consumer"
    /// The token's `exp` passed.
    case tokenExpired = "token_expired"
    /// The gateway is shutting down.
    case shutdown
    /// The client went away.
    case clientClosed = "client_closed"
    /// A WebSocket client left two pings unanswered.
    case keepAliveTimeout = "keepalive_timeout"
    /// A WebSocket client broke the protocol (a binary or invalid frame, an oversized message).
    case protocolError = "protocol_error"
}

/// The transport a stream is carried by (for metrics and presence; the bus treats all alike).
public enum StreamTransport: String, Sendable, CaseIterable {
    case sse
    case webSocket = "ws"
    case longPoll = "poll"
}

/// One event handed to a subscriber: its id (for de-duplication at the replay seam, read without
/// touching the event) and the event, shared by every subscriber, which the stream's transport
/// encodes (once for all of its streams).
public struct Delivery: Sendable {
    public var id: EventID?
    public var event: Event

    public init(_ event: Event) {
        self.id = event.id
        self.event = event
    }
}

/// Writes a subscription's events without a task of its own (for example straight into its
/// connection on the connection's event loop).
///
/// When attached, `schedule` is called once when the subscription gets work while no drain is
/// pending — outside the subscription's lock, but possibly under the bus's, so it may take only
/// locks of its own and must not call back into the bus or the subscription. The driver later
/// calls ``Subscription/drain(into:)``.
public protocol SubscriptionDriver: AnyObject, Sendable {
    /// Queues this driver for a drain. Returns what must be kicked to run the queued drains when
    /// this call queued the first of a batch; the caller kicks it once, after queueing all the
    /// drivers it has (an event for 2,000 subscribers is one pass, not 2,000 wake-ups).
    func schedule() -> (any DrainKick)?
}

/// Starts the drains queued by ``SubscriptionDriver/schedule()``.
public protocol DrainKick: AnyObject, Sendable {
    func kick()
}

extension SubscriptionDriver {
    /// Queues this driver and starts its drain.
    func scheduleNow() {
        schedule()?.kick()
    }
}

/// One open stream's registration on the bus: a bounded queue of encoded events.
///
/// An attached ``SubscriptionDriver`` writes it (the server's stream, on its connection's event
/// loop). Publishing appends under this subscription's lock and wakes the driver only when no
/// drain is pending, so while a writer is busy (a slow socket, a burst) events coalesce into its
/// next batch.
public final class Subscription: Sendable {
    public let id: UInt64
    public let user: String
    public let transport: StreamTransport
    /// Monotonic deadline after which the stream ends (the token's expiry).
    let expiresAt: NIODeadline?
    /// When the stream joined the bus (`tidings_stream_duration_seconds`).
    let openedAt = NIODeadline.now()
    private let maxQueue: Int
    private let state: Mutex<State>
    /// Closes the connection: called when a client stopped reading (slow consumer), or when the
    /// stream ends while its writer is busy, so such a client cannot hold the connection open.
    private let interrupt: (@Sendable () -> Void)?

    struct State {
        /// The first queued event, kept in the subscription itself: a subscriber that keeps up
        /// has at most one event queued, and this spares the queue's storage (one more object
        /// to load per subscriber per event). Always older than anything in `queue`.
        var first: Delivery?
        var queue: [Delivery] = []
        /// While true the writer is replaying history; live events wait in the queue.
        var holding: Bool
        /// Events with an id at or below it never reach the stream (set at release: replayed,
        /// covered by a reset, or at or below the client's resume point).
        var floor: EventID = 0
        var lastDispatch: UInt64 = 0
        var driver: (any SubscriptionDriver)?
        /// A drain is pending on the driver.
        var scheduled = false
        /// The driver cannot write now and will drain by itself when it can: events do not ask
        /// for a drain, the end of the stream does.
        var parked = false
        var end: StreamEnd?
        /// A drain ended the stream: what is queued is still written, then the goodbye, which
        /// tells the client to reconnect after this many milliseconds.
        var drainRetry: Int?
        /// The driver was told about `end`.
        var endDrained = false
        var keepAliveDue = false
        /// Keep-alives go out every interval, not only after silence (WebSocket pings, which
        /// also tell whether the peer is still there).
        let keepAliveAlways: Bool
        var lastActivity: NIODeadline
    }

    /// When a stream gets keep-alives.
    public enum KeepAlive: Sendable {
        /// After `--keepalive` without anything sent (SSE comments).
        case whenIdle
        /// Every `--keepalive` (WebSocket pings).
        case always
    }

    /// What the writer should do next.
    public enum Next: Sendable {
        /// Write these events (the buffer passed in now holds them).
        case events
        /// Nothing was sent for the keep-alive interval: send a comment.
        case keepAlive
        /// End the stream.
        case end(StreamEnd)
    }

    init(
        id: UInt64, user: String, transport: StreamTransport = .sse, expiresAt: NIODeadline?, maxQueue: Int, holding: Bool,
        keepAlive: KeepAlive = .whenIdle, interrupt: (@Sendable () -> Void)?
    ) {
        self.transport = transport
        self.interrupt = interrupt
        self.id = id
        self.user = user
        self.expiresAt = expiresAt
        self.maxQueue = maxQueue
        self.state = Mutex(State(holding: holding, keepAliveAlways: keepAlive == .always, lastActivity: .now()))
    }

    /// Hands the rest of the stream to `driver`: live delivery, keep-alives and the end (also
    /// when it already ended). The subscription keeps the driver until it is released.
    public func attach(_ driver: any SubscriptionDriver) {
        let schedule = state.withLock { state -> Bool in
            state.driver = driver
            // The preamble and the replay were just written: the silence starts now.
            state.lastActivity = .now()
            guard !state.scheduled else { return false }
            if state.end == nil {
                guard !state.holding, state.hasQueued || state.keepAliveDue else { return false }
            }
            state.scheduled = true
            return true
        }
        if schedule { driver.scheduleNow() }
    }

    /// Drops the attached driver (which references this subscription): call when it is done.
    public func detach() {
        state.withLock { $0.driver = nil }
    }

    /// For the attached driver: takes what is queued (events into `buffer`, or a keep-alive), or
    /// the end of the stream (reported once); `nil` when there is nothing to do. Clears the
    /// pending drain.
    /// - Parameter now: when the pass started (a drain pass over many streams reads the clock
    ///   once); the stream's keep-alive interval restarts from it.
    public func drain(into buffer: inout [Delivery], now: NIODeadline = .now()) -> Next? {
        let (next, again) = state.withLock { state -> (Next?, (any SubscriptionDriver)?) in
            state.scheduled = false
            state.parked = false
            if let end = state.end {
                // A drained stream writes what it had queued, then (next drain) its goodbye.
                if state.drainRetry != nil, let work = state.takeWork(into: &buffer, now: now) {
                    state.scheduled = true
                    return (work, state.driver)
                }
                if state.endDrained { return (nil, nil) }
                state.endDrained = true
                return (.end(end), nil)
            }
            return (state.takeWork(into: &buffer, now: now), nil)
        }
        again?.scheduleNow()
        return next
    }

    /// For the attached driver, when it cannot write now (its connection is not writable): takes
    /// nothing and parks the stream. Until the driver drains again (when it can write), events
    /// queue without asking for a drain — a client that stopped reading costs nothing per
    /// event — but the end of the stream asks for one at once. Queued events count against
    /// `--max-queue`.
    /// - Returns: the end of the stream, if it has ended.
    public func skipDrain() -> StreamEnd? {
        state.withLock { state in
            state.parked = true
            return state.end
        }
    }

    /// Ends the replay phase: queued live events with an id at or below `lastReplayed` are
    /// dropped (they were sent from history, or the client has them), the rest are released to
    /// the writer; later events at or below it are dropped too (an instance whose horizon is
    /// behind the client's resume point delivers them later).
    public func release(afterReplayThrough lastReplayed: EventID?) {
        state.withLock { state in
            if let lastReplayed {
                state.floor = max(state.floor, lastReplayed)
                func replayed(_ delivery: Delivery) -> Bool {
                    if let id = delivery.id { return id <= lastReplayed }
                    return false
                }
                if let first = state.first, replayed(first) { state.first = nil }
                state.queue.removeAll(where: replayed)
                if state.first == nil, !state.queue.isEmpty { state.first = state.queue.removeFirst() }
            }
            state.holding = false
        }
    }

    /// Ends the stream for `reason` (the first reason wins) and tells the writer (see
    /// ``wake(endedNow:reason:)``).
    public func finish(_ reason: StreamEnd) {
        let first = state.withLock { state -> Bool in
            guard state.end == nil else { return false }
            state.end = reason
            state.first = nil
            state.queue.removeAll()
            return true
        }
        wake(endedNow: first, reason: reason)
    }

    /// Tells the writer that the stream ended: an attached driver is scheduled (its next
    /// ``drain(into:)`` reports the end; it writes the end, or cuts off a slow consumer); before
    /// a driver is attached (the request handler is still writing the preamble or the replay),
    /// the connection is closed through `interrupt` unless the client itself left.
    func wake(endedNow: Bool, reason: StreamEnd) {
        let (driven, driver) = state.withLock { state -> (Bool, (any SubscriptionDriver)?) in
            guard let attached = state.driver else { return (false, nil) }
            guard endedNow, !state.scheduled || state.parked else { return (true, nil) }
            state.scheduled = true
            state.parked = false
            return (true, attached)
        }
        if driven {
            driver?.scheduleNow()
        } else if endedNow, reason != .clientClosed {
            interrupt?()
        }
    }

    /// Ends the stream because the gateway drains (`.shutdown`): unlike ``finish(_:)`` the events
    /// already queued are still written, then a goodbye that asks the client to reconnect after
    /// `retryMilliseconds` (spread by the caller, so reconnects do not arrive all at once).
    public func finishDraining(retryMilliseconds: Int) {
        let first = state.withLock { state -> Bool in
            guard state.end == nil else { return false }
            state.end = .shutdown
            state.drainRetry = retryMilliseconds
            state.keepAliveDue = false
            return true
        }
        wake(endedNow: first, reason: .shutdown)
    }

    /// The reconnection delay the drain gave this stream's goodbye, if a drain ended it.
    public var drainRetryMilliseconds: Int? {
        state.withLock { $0.drainRetry }
    }

    /// The reason the stream ended, if it has.
    public var endReason: StreamEnd? {
        state.withLock { $0.end }
    }

    /// Fires `wakes`, kicking each distinct drain once after all drivers are queued.
    static func fire(_ wakes: [Wake]) {
        var kicks: [any DrainKick] = []
        for wake in wakes {
            switch wake {
            case .none:
                break
            case .driver(let driver):
                if let kick = driver.schedule(), !kicks.contains(where: { $0 === kick }) { kicks.append(kick) }
            }
        }
        for kick in kicks { kick.kick() }
    }

    enum Wake {
        case none
        case driver(any SubscriptionDriver)
    }

    enum EnqueueResult {
        case skipped
        case queued(Wake)
        case overflow
    }

    /// Queues an event; returns whom to wake. Called by the bus.
    func enqueue(_ delivery: Delivery, dispatch: UInt64) -> EnqueueResult {
        state.withLock { state in
            guard state.end == nil, state.lastDispatch != dispatch else { return .skipped }
            if let id = delivery.id, id <= state.floor { return .skipped }
            state.lastDispatch = dispatch
            if state.first == nil {
                state.first = delivery
            } else {
                state.queue.append(delivery)
            }
            if state.queue.count + 1 > maxQueue {
                state.end = .slowConsumer
                state.first = nil
                state.queue.removeAll()
                return .overflow
            }
            return .queued(state.wakeForWork())
        }
    }

    /// Checks expiry and keep-alive at `now`. Called by the bus, which fires the returned wakes
    /// of all streams together.
    func tick(now: NIODeadline, keepAlive: TimeAmount) -> Wake {
        if let expiresAt, now >= expiresAt {
            let ended = state.withLock { $0.end == nil }
            if ended { finish(.tokenExpired) }
            return .none
        }
        return state.withLock { state -> Wake in
            guard state.end == nil, !state.keepAliveDue, now - state.lastActivity >= keepAlive else { return .none }
            state.keepAliveDue = true
            return state.wakeForWork()
        }
    }
}

extension Subscription.State {
    /// Events are queued.
    var hasQueued: Bool { first != nil }

    /// Who must act now that there is work: the driver if no drain is pending; nobody while
    /// replay holds the queue, no driver is attached yet, or a drain is already pending.
    mutating func wakeForWork() -> Subscription.Wake {
        guard !holding, let driver, !scheduled else { return .none }
        scheduled = true
        return .driver(driver)
    }

    mutating func takeWork(into buffer: inout [Delivery], now: NIODeadline = .now()) -> Subscription.Next? {
        if !holding, let first {
            self.first = nil
            if queue.isEmpty {
                buffer.append(first)
            } else {
                swap(&queue, &buffer)
                buffer.insert(first, at: 0)
            }
            keepAliveDue = false
            if !keepAliveAlways { lastActivity = now }
            return .events
        }
        if keepAliveDue {
            keepAliveDue = false
            lastActivity = now
            return .keepAlive
        }
        return nil
    }
}
