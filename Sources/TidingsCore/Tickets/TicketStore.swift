public import Foundation

/// What a one-time subscribe ticket stands for: the identity and topic rights of the token it
/// was issued for.
public struct TicketGrant: Sendable, Codable, Equatable {
    /// The user id (`sub`).
    public var user: String
    /// The token's `topics` claim: exact names or prefixes ending in `*`.
    public var topics: [String]
    /// When the token the ticket was made from expires; the stream ends then.
    public var tokenExpiresAt: Date?

    public init(user: String, topics: [String], tokenExpiresAt: Date?) {
        self.user = user
        self.topics = topics
        self.tokenExpiresAt = tokenExpiresAt
    }
}

/// Issues and redeems one-time tickets. A ticket is valid once, until its time to live ends.
public protocol TicketStore: Sendable {
    /// Stores `grant` and returns a new unguessable ticket.
    func issue(_ grant: TicketGrant, ttl: Duration) async throws -> String
    /// Returns the grant and invalidates the ticket; `nil` if unknown, used or expired.
    func redeem(_ ticket: String) async throws -> TicketGrant?
}

/// Makes ticket strings: 32 random bytes, URL-safe base64 without padding.
public enum TicketID {
    public static func make() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
