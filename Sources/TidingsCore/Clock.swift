public import Foundation
public import NIOCore

/// Wall-clock time, injected so that retention and expiry are testable.
public protocol WallClock: Sendable {
    func now() -> Date
    /// The monotonic time that goes with `now()`: what stream deadlines (a token's expiry,
    /// keep-alives) are checked against. `NIODeadline.now()` unless a test moves the clock.
    func deadlineNow() -> NIODeadline
}

extension WallClock {
    public func deadlineNow() -> NIODeadline { .now() }
}

/// The system's wall clock.
public struct SystemClock: WallClock {
    public init() {}
    public func now() -> Date { Date() }
}
