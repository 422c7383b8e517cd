import Crypto
public import Foundation
import Synchronization
import JWTKit
public import TidingsCore

/// A subscriber: whose stream, which topics it may add, and when its token expires.
public struct Subscriber: Sendable {
    public var user: String
    public var topicPatterns: [String]
    public var expiresAt: Date?
    /// What the token may also publish (its `publish` claim), for a WebSocket's `publish`
    /// messages; `nil` for none (and for a ticket).
    public var publisher: Publisher? = nil

    /// True when the token's `topics` claim allows `topic`.
    public func mayRead(topic: String) -> Bool {
        topicPatterns.contains { TargetPattern($0).matches(topic) }
    }
}

/// A publisher: a namespace for its idempotency keys and what it may publish to.
public struct Publisher: Sendable {
    public enum Rights: Sendable {
        case everywhere
        case patterns([TargetPattern])
    }

    /// `jwt:<sub>` or `key:<first 16 hex digits of the key's SHA-256>`: never the secret itself.
    public var id: String
    public var rights: Rights
    /// When the token expires; `nil` for a static key.
    public var expiresAt: Date? = nil

    public func mayPublish(to target: Target) -> Bool {
        switch rights {
        case .everywhere: true
        case .patterns(let patterns): patterns.anyMatches(target.description)
        }
    }
}

/// Why a credential was refused. The description is safe to show and to log: it never
/// contains the token.
public enum AuthError: Error, Sendable, Equatable, CustomStringConvertible {
    case missing
    case invalid(String)
    case notAPublisher

    public var description: String {
        switch self {
        case .missing: "no credential was given"
        case .invalid(let reason): "the token is not valid: \(reason)"
        case .notAPublisher: "the credential may not publish"
        }
    }
}

/// Verifies tokens (HS256, RS256/ES256 public keys, a JWKS) and static publish keys.
public final class Authenticator: Sendable {
    private let keys: JWTKeyCollection
    private let issuer: String?
    private let audience: String?
    /// Each `--publish-key`'s SHA-256 and the publisher id derived from it, made once.
    private let publishKeys: [(digest: SHA256Digest, id: String)]
    /// Tokens already verified, by their exact text (signature included), so a publisher or a
    /// reconnecting dashboard does not pay for signature verification on every request. Expiry
    /// is checked again on every use; the cache is bounded and starts over when full.
    private let verified = Mutex<[String: TidingsClaims]>([:])
    static let verifiedCacheLimit = 10_000

    /// Tokens expire by this clock.
    let clock: any WallClock

    public init(configuration: TidingsConfiguration, clock: any WallClock = SystemClock()) async throws {
        let keys = JWTKeyCollection()
        if let secret = configuration.jwtSecret {
            await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        }
        if let pem = configuration.jwtPublicKeyPEM {
            if pem.contains("BEGIN RSA PUBLIC KEY") || (try? Insecure.RSA.PublicKey(pem: pem)) != nil {
                await keys.add(rsa: try Insecure.RSA.PublicKey(pem: pem), digestAlgorithm: .sha256)
            } else {
                await keys.add(ecdsa: try ES256PublicKey(pem: pem))
            }
        }
        if let jwks = configuration.jwksJSON {
            try await keys.add(jwksJSON: jwks)
        }
        self.keys = keys
        self.clock = clock
        self.issuer = configuration.jwtIssuer
        self.audience = configuration.jwtAudience
        self.publishKeys = configuration.publishKeys.map { key in
            let digest = SHA256.hash(data: Data(key.utf8))
            return (digest, "key:" + digest.prefix(8).map { String(format: "%02x", $0) }.joined())
        }
    }

    /// Verifies a token's signature, expiry, issuer and audience.
    public func verify(token: String) async throws(AuthError) -> TidingsClaims {
        if let cached = verified.withLock({ $0[token] }) {
            if hasExpired(cached) {
                verified.withLock { _ = $0.removeValue(forKey: token) }
                throw .invalid(Self.expired)
            }
            return cached
        }
        let claims = try await verifyUncached(token: token)
        verified.withLock { cache in
            if cache.count >= Self.verifiedCacheLimit { cache.removeAll(keepingCapacity: true) }
            cache[token] = claims
        }
        return claims
    }

    private static let expired = "it has expired or a claim is invalid"

    /// The token's `exp` has passed (by `clock`).
    private func hasExpired(_ claims: TidingsClaims) -> Bool {
        guard let exp = claims.exp else { return false }
        return exp.value <= clock.now()
    }

    private func verifyUncached(token: String) async throws(AuthError) -> TidingsClaims {
        let claims: TidingsClaims
        do {
            claims = try await keys.verify(token, as: TidingsClaims.self)
        } catch let error as JWTError {
            throw .invalid(Self.reason(error))
        } catch {
            throw .invalid("it could not be verified")
        }
        if hasExpired(claims) { throw .invalid(Self.expired) }
        if let issuer, claims.iss?.value != issuer {
            throw .invalid("wrong issuer")
        }
        if let audience {
            guard let aud = claims.aud, aud.value.contains(audience) else { throw .invalid("wrong audience") }
        }
        guard Target.isValidName(claims.sub.value) else {
            throw .invalid("sub must be 1–128 characters of [A-Za-z0-9._@:-]")
        }
        return claims
    }

    /// A subscriber identity from a token.
    public func subscriber(token: String) async throws(AuthError) -> Subscriber {
        let claims = try await verify(token: token)
        return Subscriber(
            user: claims.sub.value, topicPatterns: claims.topics ?? [], expiresAt: claims.exp?.value,
            publisher: Self.publisher(claims))
    }

    /// A publisher from a static key or a token with a `publish` claim.
    public func publisher(credential: String) async throws(AuthError) -> Publisher {
        let looksLikeJWT = credential.utf8.lazy.filter { $0 == UInt8(ascii: ".") }.count == 2
        if !looksLikeJWT {
            guard let key = publishKey(credential) else { throw .invalid("it is neither a publish key nor a JWT") }
            return key
        }
        let claims: TidingsClaims
        do {
            claims = try await verify(token: credential)
        } catch {
            // A static key may contain dots: it is checked after the token fails.
            if let key = publishKey(credential) { return key }
            throw error
        }
        guard let publisher = Self.publisher(claims) else { throw .notAPublisher }
        return publisher
    }

    /// The publisher of `credential` when that is known without verifying anything: a static key
    /// (not containing dots) or a token verified before and not expired. `nil` otherwise, also for
    /// credentials that would be refused; `publisher(credential:)` gives the reason.
    public func knownPublisher(credential: String) -> Publisher? {
        let looksLikeJWT = credential.utf8.lazy.filter { $0 == UInt8(ascii: ".") }.count == 2
        guard looksLikeJWT else { return publishKey(credential) }
        guard let claims = verified.withLock({ $0[credential] }), !hasExpired(claims) else { return nil }
        return Self.publisher(claims)
    }

    private static func publisher(_ claims: TidingsClaims) -> Publisher? {
        switch claims.publish {
        case .all(true):
            Publisher(id: "jwt:\(claims.sub.value)", rights: .everywhere, expiresAt: claims.exp?.value)
        case .patterns(let patterns) where !patterns.isEmpty:
            Publisher(id: "jwt:\(claims.sub.value)", rights: .patterns(patterns.map(TargetPattern.init)), expiresAt: claims.exp?.value)
        default:
            nil
        }
    }

    /// The publisher of a static `--publish-key`, if `credential` is one.
    private func publishKey(_ credential: String) -> Publisher? {
        guard !publishKeys.isEmpty else { return nil }
        let digest = SHA256.hash(data: Data(credential.utf8))
        guard let key = publishKeys.first(where: { Self.constantTimeEqual($0.digest, digest) }) else { return nil }
        return Publisher(id: key.id, rights: .everywhere)
    }

    /// Equal bytes, compared in time that depends only on the lengths.
    static func constantTimeEqual(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }

    private static func constantTimeEqual(_ a: SHA256Digest, _ b: SHA256Digest) -> Bool {
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) { difference |= x ^ y }
        return difference == 0
    }

    private static func reason(_ error: JWTError) -> String {
        switch error.errorType {
        case .claimVerificationFailure: expired
        case .signatureVerificationFailed: "bad signature"
        case .malformedToken: "malformed token"
        case .unknownKID, .missingKIDHeader: "unknown key id"
        default: "it could not be verified"
        }
    }
}
