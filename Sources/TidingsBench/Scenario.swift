/// The load scenarios of `tidings bench`.
public enum Scenario: String, Sendable, CaseIterable, Codable {
    /// N subscribers on one topic, a publisher at a fixed rate.
    case fanout
    /// Point-to-point: many users, publishers flat out.
    case users
    /// N idle streams: server memory per connection.
    case idle
    /// Reconnect with Last-Event-ID after M missed events.
    case replay
    /// Minutes of churn, slow clients and resumes: memory and descriptors come back, every
    /// stream holds every event once, in order.
    case soak
}
