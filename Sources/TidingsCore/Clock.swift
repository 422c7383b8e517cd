public import Foundation
public import NIOCore

/// Wall-clock time, injected so that retention and expiry are testable.
public protocol WallClock: Sendable {
    func now() -> Date
    /// The monotonic time that goes with `now()`: what stream deadlines (a token's expiry,
    /// keep-alives) are checked against. `NIODeadline.now()` unless a test moves the clock.
    func deadlineNow() -> NIODeadline
    /// Waits `duration` by this clock (timed background work such as the JWKS refresh).
    func sleep(for duration: Duration) async throws
}

extension WallClock {
    public func deadlineNow() -> NIODeadline { .now() }
    public func sleep(for duration: Duration) async throws { try await Task.sleep(for: duration) }
}

/// The system's wall clock.
public struct SystemClock: WallClock {
    public init() {}
    public func now() -> Date { Date() }
}
