import Foundation
import NIOCore
import Synchronization
import TidingsCore

/// The real time plus whatever the test skipped: ticket and token expiry without waiting for
/// it. Wall-clock and monotonic time skip together, so a token's `exp` and the stream deadline
/// made from it agree. (The gateway turns a token's `exp` into a stream deadline from the real
/// time: open a stream before skipping, not after.)
final class TestClock: WallClock {
    private let skipped = Mutex<Duration>(.zero)

    func now() -> Date {
        Date().addingTimeInterval(skipped.withLock { $0 }.timeInterval)
    }

    func deadlineNow() -> NIODeadline {
        let (seconds, attoseconds) = skipped.withLock { $0 }.components
        return .now() + .seconds(seconds) + .nanoseconds(attoseconds / 1_000_000_000)
    }

    func skip(_ duration: Duration) {
        skipped.withLock { $0 += duration }
    }
}
