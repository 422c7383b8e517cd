import AsyncAlgorithms
import Logging
import NIOCore
import ServiceLifecycle
import TidingsCore

/// One timer for all streams: keep-alive comments for idle streams, and the end of streams
/// whose token expired. A per-connection timer would cost a task wake-up per stream per tick.
/// On graceful shutdown it ends every stream (streams have no task of their own to be told) and
/// waits up to 2 s for them to close.
struct BusTicker: Service {
    let bus: EventBus
    let keepAlive: Duration
    /// Ticks check deadlines at `clock.deadlineNow()`.
    let clock: any WallClock

    /// A quarter of the keep-alive interval, between 20 ms and 1 s.
    var interval: Duration {
        min(.seconds(1), max(.milliseconds(20), keepAlive / 4))
    }

    func run() async throws {
        let keepAlive = TimeAmount.milliseconds(self.keepAlive.milliseconds)
        let ticks = AsyncTimerSequence(interval: interval, clock: .continuous).cancelOnGracefulShutdown()
        for await _ in ticks {
            bus.tick(now: clock.deadlineNow(), keepAlive: keepAlive)
        }
        // Streams have no task of their own: end them, and give their event loops a moment to
        // write the last chunk before the process may exit.
        bus.shutdown()
        let deadline = ContinuousClock.now + .seconds(2)
        while bus.subscriptionCount > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}
