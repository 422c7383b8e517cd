/// Why a token was refused: the reason a client is told in the problem's `detail` and that
/// `tidings_auth_failures_total{reason}` counts. Never contains the token or a claim's value.
public struct TokenRejection: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: String, Sendable, CaseIterable {
        case expired
        case notYetValid = "not_yet_valid"
        case unknownKey = "unknown_key"
        case badSignature = "bad_signature"
        case wrongAudience = "wrong_audience"
        case wrongIssuer = "wrong_issuer"
        case missingExp = "missing_exp"
        case malformed
        case noSubject = "no_subject"
    }

    public var reason: Reason
    public var description: String

    init(_ reason: Reason, _ description: String) {
        self.reason = reason
        self.description = description
    }

    static let expired = TokenRejection(.expired, "it has expired (exp)")
    static let notYetValid = TokenRejection(.notYetValid, "it is not valid yet (nbf)")
    static let issuedInTheFuture = TokenRejection(.notYetValid, "it was issued in the future (iat)")
    static let unknownKey = TokenRejection(.unknownKey, "it is signed with an unknown key (kid)")
    static let noKey = TokenRejection(.unknownKey, "no configured key can verify it")
    static let badSignature = TokenRejection(.badSignature, "its signature does not verify")
    static let wrongAudience = TokenRejection(.wrongAudience, "it is not meant for this gateway (aud)")
    static let wrongIssuer = TokenRejection(.wrongIssuer, "it comes from another issuer (iss)")
    static let missingExp = TokenRejection(.missingExp, "it has no exp claim, which this gateway requires (--jwt-require-exp)")
    static let malformed = TokenRejection(.malformed, "it is not a well-formed JWT")
}
