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
}

/// One event handed to a subscriber: its id (for de-duplication at the replay seam) and frame.
public struct Delivery: Sendable {
    public var id: EventID?
    public var frame: ByteBuffer

    public init(id: EventID?, frame: ByteBuffer) {
        self.id = id
        self.frame = frame
    }
}

/// One open stream's registration on the bus: a bounded queue of encoded events and the one
/// writer task that drains it.
///
/// Publishing appends under this subscription's lock and wakes the writer only if it is idle,
/// so while a writer is busy (a slow socket, a burst) events coalesce into its next batch.
public final class Subscription: Sendable {
    public let id: UInt64
    public let user: String
    public let targets: [Target]
    /// Monotonic deadline after which the stream ends (the token's expiry).
    let expiresAt: NIODeadline?
    private let maxQueue: Int
    private let state: Mutex<State>
    /// Called when the stream ends while its writer is busy (possibly blocked on a full socket):
    /// the server closes the connection, so a client that stopped reading cannot hold it open.
    private let interrupt: (@Sendable () -> Void)?

    struct State {
        var queue: [Delivery] = []
        /// While true the writer is replaying history; live events wait in the queue.
        var holding: Bool
        var lastDispatch: UInt64 = 0
        var waiter: CheckedContinuation<Void, Never>?
        var end: StreamEnd?
        var keepAliveDue = false
        var lastActivity: NIODeadline
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
        id: UInt64, user: String, targets: [Target], expiresAt: NIODeadline?, maxQueue: Int, holding: Bool,
        interrupt: (@Sendable () -> Void)?
    ) {
        self.interrupt = interrupt
        self.id = id
        self.user = user
        self.targets = targets
        self.expiresAt = expiresAt
        self.maxQueue = maxQueue
        self.state = Mutex(State(holding: holding, lastActivity: .now()))
    }

    /// Waits for work. `buffer` must be empty; on `.events` it holds the events to write
    /// (the subscription keeps the old buffer's storage, so steady state allocates nothing).
    public func next(into buffer: inout [Delivery]) async -> Next {
        while true {
            if let ready = state.withLock({ $0.take(into: &buffer) }) {
                return ready
            }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state -> Bool in
                    if state.hasWork { return true }
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        }
    }

    /// Ends the replay phase: queued live events with an id at or below `lastReplayed` are
    /// dropped (they were sent from history), the rest are released to the writer.
    public func release(afterReplayThrough lastReplayed: EventID?) {
        state.withLock { state in
            if let lastReplayed {
                state.queue.removeAll { delivery in
                    if let id = delivery.id { return id <= lastReplayed }
                    return false
                }
            }
            state.holding = false
        }
    }

    /// Ends the stream for `reason` (the first reason wins) and wakes the writer, or interrupts
    /// it when it is busy writing.
    public func finish(_ reason: StreamEnd) {
        let (waiter, first) = state.withLock { state -> (CheckedContinuation<Void, Never>?, Bool) in
            guard state.end == nil else { return (state.waiter.take(), false) }
            state.end = reason
            state.queue.removeAll()
            return (state.waiter.take(), true)
        }
        wake(waiter, endedNow: first, reason: reason)
    }

    /// Resumes an idle writer; interrupts a busy one when the stream has just ended.
    func wake(_ waiter: CheckedContinuation<Void, Never>?, endedNow: Bool, reason: StreamEnd) {
        if let waiter {
            waiter.resume()
        } else if endedNow, reason != .clientClosed {
            interrupt?()
        }
    }

    /// The reason the stream ended, if it has.
    public var endReason: StreamEnd? {
        state.withLock { $0.end }
    }

    /// Queues an event; returns the writer to wake, if it was idle. Called by the bus.
    func enqueue(_ delivery: Delivery, dispatch: UInt64) -> EnqueueResult {
        state.withLock { state in
            guard state.end == nil, state.lastDispatch != dispatch else { return .skipped }
            state.lastDispatch = dispatch
            state.queue.append(delivery)
            if state.queue.count > maxQueue {
                state.end = .slowConsumer
                state.queue.removeAll()
                return .overflow(state.waiter.take())
            }
            if state.holding { return .queued(nil) }
            return .queued(state.waiter.take())
        }
    }

    enum EnqueueResult {
        case skipped
        case queued(CheckedContinuation<Void, Never>?)
        case overflow(CheckedContinuation<Void, Never>?)
    }

    /// Checks expiry and keep-alive at `now`. Called by the bus.
    /// - Returns: true when the token expired now.
    func tick(now: NIODeadline, keepAlive: TimeAmount) -> Bool {
        if let expiresAt, now >= expiresAt {
            let ended = state.withLock { $0.end == nil }
            if ended { finish(.tokenExpired) }
            return ended
        }
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard state.end == nil, !state.keepAliveDue, now - state.lastActivity >= keepAlive else { return nil }
            state.keepAliveDue = true
            return state.waiter.take()
        }
        waiter?.resume()
        return false
    }
}

extension Subscription.State {
    var hasWork: Bool {
        end != nil || keepAliveDue || (!holding && !queue.isEmpty)
    }

    mutating func take(into buffer: inout [Delivery]) -> Subscription.Next? {
        if let end { return .end(end) }
        if !holding, !queue.isEmpty {
            swap(&queue, &buffer)
            keepAliveDue = false
            lastActivity = .now()
            return .events
        }
        if keepAliveDue {
            keepAliveDue = false
            lastActivity = .now()
            return .keepAlive
        }
        return nil
    }
}
