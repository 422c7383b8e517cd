import Foundation
import JWTKit
import TidingsCore

/// What a verified token must say and where its claims are: the time claims with their leeway,
/// issuer, audience, and the paths of the subject, topics and publish claims.
struct TokenRules: Sendable {
    var subjectClaim = "sub"
    var topicsClaim = "topics"
    var publishClaim = "publish"
    var issuer: String?
    var audience: String?
    /// Allowed clock skew for `exp`, `nbf` and `iat`.
    var leeway: TimeInterval = 30
    var requireExp = true

    init(configuration: TidingsConfiguration) {
        subjectClaim = configuration.jwtSubjectClaim
        topicsClaim = configuration.jwtTopicsClaim
        publishClaim = configuration.jwtPublishClaim
        issuer = configuration.jwtIssuer
        audience = configuration.jwtAudience
        leeway = configuration.jwtLeeway.timeInterval
        requireExp = configuration.jwtRequireExp
    }

    /// The claims Tidings works with, read from a payload whose signature was verified.
    func claims(of payload: TokenPayload, now: Date) throws(TokenRejection) -> TidingsClaims {
        let claims = payload.claims
        let exp = try time(claims, "exp")
        if let exp {
            if exp.addingTimeInterval(leeway) <= now { throw .expired }
        } else if requireExp {
            throw .missingExp
        }
        if let nbf = try time(claims, "nbf"), nbf > now.addingTimeInterval(leeway) { throw .notYetValid }
        if let iat = try time(claims, "iat"), iat > now.addingTimeInterval(leeway) { throw .issuedInTheFuture }
        let iss = claims.value(at: "iss")
        if let issuer {
            // Byte for byte: Swift's `==` treats canonically equivalent text (a Kelvin sign for
            // `K`) as equal, and a name is its bytes.
            guard case .string(let value) = iss, value.utf8.elementsEqual(issuer.utf8) else { throw .wrongIssuer }
        }
        let aud: [String]?
        switch claims.value(at: "aud") {
        case nil, .null: aud = nil
        case .string(let value): aud = [value]
        case .array(let values):
            aud = values.compactMap { if case .string(let value) = $0 { value } else { nil } }
        default: throw TokenRejection(.malformed, "its aud claim must be a string or a list of strings")
        }
        if let audience, !(aud ?? []).contains(where: { $0.utf8.elementsEqual(audience.utf8) }) { throw .wrongAudience }

        let subject = try self.subject(claims)
        let topics: [String]?
        switch claims.value(at: topicsClaim[...]) {
        case nil, .null: topics = nil
        case let value?:
            guard let list = value.strings else {
                throw TokenRejection(.malformed, "its topics claim (\(topicsClaim)) must be a list of strings or a space-separated string")
            }
            topics = list
        }
        let publish: PublishClaim?
        switch claims.value(at: publishClaim[...]) {
        case nil, .null: publish = nil
        case .bool(let flag): publish = .all(flag)
        case let value?:
            guard let list = value.strings else {
                throw TokenRejection(
                    .malformed, "its publish claim (\(publishClaim)) must be true, a list of target patterns or a space-separated string")
            }
            publish = .patterns(list)
        }
        var result = TidingsClaims(sub: subject, exp: exp.map { ExpirationClaim(value: $0) }, topics: topics, publish: publish)
        if case .string(let value) = iss { result.iss = IssuerClaim(value: value) }
        result.aud = aud.map { AudienceClaim(value: $0) }
        return result
    }

    /// The user id: a string, or a whole number read as its decimal digits.
    private func subject(_ claims: ClaimValue) throws(TokenRejection) -> String {
        let text: String
        switch claims.value(at: subjectClaim[...]) {
        case nil, .null: throw TokenRejection(.noSubject, "it has no subject (\(subjectClaim))")
        case .string(let value): text = value
        case .integer(let value): text = String(value)
        default: throw TokenRejection(.noSubject, "its subject (\(subjectClaim)) must be a string or a whole number")
        }
        guard Target.isValidName(text) else {
            throw TokenRejection(.noSubject, "its subject (\(subjectClaim)) must be 1–128 characters of [A-Za-z0-9._@:-]")
        }
        return text
    }

    /// A NumericDate claim; `nil` when absent.
    private func time(_ claims: ClaimValue, _ name: Substring) throws(TokenRejection) -> Date? {
        switch claims.value(at: name) {
        case nil, .null: return nil
        case let value?:
            guard let seconds = value.seconds, seconds.isFinite else {
                throw TokenRejection(.malformed, "its \(name) claim must be a number of seconds since 1970")
            }
            return Date(timeIntervalSince1970: seconds)
        }
    }
}
