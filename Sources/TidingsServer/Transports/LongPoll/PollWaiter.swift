import NIOCore
import Synchronization
import TidingsCore

/// Stands in for a stream's writer while a long poll waits: the bus's wake-up (events queued,
/// a keep-alive tick, the end of the stream) completes the poll's promise on its event loop —
/// no task of its own, only the request's.
final class PollWaiter: SubscriptionDriver, Sendable {
    private let loop: any EventLoop
    private let state = Mutex<State>(State())

    private struct State {
        var promise: EventLoopPromise<Void>?
        /// Woken while nobody waited: the next wait returns at once.
        var woken = false
        var clientGone = false
    }

    /// The client closed its side of the connection (``ClientGoneHandler``): stop waiting.
    var clientGone: Bool { state.withLock { $0.clientGone } }

    /// Ends the wait: the client has gone.
    func clientLeft() {
        state.withLock { $0.clientGone = true }
        _ = schedule()
    }

    init(loop: any EventLoop) {
        self.loop = loop
    }

    func schedule() -> (any DrainKick)? {
        let promise = state.withLock { state -> EventLoopPromise<Void>? in
            guard let promise = state.promise else {
                state.woken = true
                return nil
            }
            state.promise = nil
            return promise
        }
        promise?.succeed(())
        return nil
    }

    /// Returns when woken, or at `deadline`.
    func wait(until deadline: NIODeadline) async throws {
        let promise = loop.makePromise(of: Void.self)
        let woken = state.withLock { state -> Bool in
            if state.woken {
                state.woken = false
                return true
            }
            state.promise = promise
            return false
        }
        if woken {
            promise.succeed(())
            return
        }
        let timeout = loop.scheduleTask(deadline: deadline) { [weak self] in
            let pending = self?.state.withLock { state -> EventLoopPromise<Void>? in
                defer { state.promise = nil }
                return state.promise
            }
            pending?.succeed(())
        }
        try await promise.futureResult.get()
        timeout.cancel()
    }
}
