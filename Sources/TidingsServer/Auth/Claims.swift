public import JWTKit

/// The claims Tidings works with: what `tidings token` mints, and what a verified token of any
/// shape is read into (see `TokenRules`). `sub` is the user id; `topics` lists the topics a
/// subscriber may add to its stream; `publish` lets a token publish (`true`, or a list of target
/// patterns).
public struct TidingsClaims: JWTPayload, Equatable {
    public var sub: SubjectClaim
    public var exp: ExpirationClaim?
    public var iss: IssuerClaim?
    public var aud: AudienceClaim?
    public var topics: [String]?
    public var publish: PublishClaim?

    public init(
        sub: String, exp: ExpirationClaim? = nil, iss: String? = nil, aud: String? = nil,
        topics: [String]? = nil, publish: PublishClaim? = nil
    ) {
        self.sub = SubjectClaim(value: sub)
        self.exp = exp
        self.iss = iss.map { IssuerClaim(value: $0) }
        self.aud = aud.map { AudienceClaim(value: [$0]) }
        self.topics = topics
        self.publish = publish
    }

    /// Nothing beyond the signature: `TokenRules` checks the time claims against its clock.
    public func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// The `publish` claim: `true`/`false`, or a list of target patterns (`user:*`, `topic:news.*`).
public enum PublishClaim: Codable, Sendable, Equatable {
    case all(Bool)
    case patterns([String])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let flag = try? container.decode(Bool.self) {
            self = .all(flag)
        } else {
            self = .patterns(try container.decode([String].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .all(let flag): try container.encode(flag)
        case .patterns(let patterns): try container.encode(patterns)
        }
    }
}
