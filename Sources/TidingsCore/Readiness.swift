/// Whether a component can serve now, and why not.
public struct Readiness: Sendable, Equatable {
    public var isReady: Bool
    /// Why it is not ready (`listener_disconnected`, `catching_up`, …).
    public var reason: String?

    public init(isReady: Bool, reason: String? = nil) {
        self.isReady = isReady
        self.reason = reason
    }

    public static let ready = Readiness(isReady: true)
}

/// Something `/readyz` asks.
public protocol ReadinessSource: Sendable {
    func readiness() -> Readiness
}
