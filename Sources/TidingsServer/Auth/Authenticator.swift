import Crypto
public import Foundation
import JWTKit
public import Logging
public import Metrics
public import ServiceLifecycle
import Synchronization
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
    /// A token failed a check: which one is in the rejection.
    case rejected(TokenRejection)
    case notAPublisher

    public var description: String {
        switch self {
        case .missing: "no credential was given"
        case .invalid(let reason): "the token is not valid: \(reason)"
        case .rejected(let rejection): "the token is not valid: \(rejection.description)"
        case .notAPublisher: "the credential may not publish"
        }
    }
}

/// Verifies tokens (HS256, RS256/ES256 public keys, a JWKS file or URLs) and static publish keys.
public final class Authenticator: Sendable {
    private let keys: TokenKeys
    /// The key sets of `--jwks-url`; `nil` without one.
    private let remote: RemoteKeySets?
    private let rules: TokenRules
    /// Each `--publish-key`'s SHA-256 and the publisher id derived from it, made once.
    private let publishKeys: [(digest: SHA256Digest, id: String)]
    /// Tokens already verified, by their exact text (signature included), so a publisher or a
    /// reconnecting dashboard does not pay for signature verification on every request. Expiry
    /// is checked again on every use; the cache is bounded, starts over when full and when the
    /// key set changes (a key removed from a JWKS no longer admits its tokens).
    private let verified = Mutex<(generation: Int, claims: [String: TidingsClaims])>((0, [:]))
    static let verifiedCacheLimit = 10_000
    /// `tidings_auth_failures_total{reason}`.
    private let failures: [TokenRejection.Reason: Counter]

    /// Tokens expire by this clock.
    let clock: any WallClock

    /// The shortest time between two JWKS fetches asked for by tokens with unknown `kid`s.
    public static let jwksMinimumInterval: Duration = .seconds(10)

    /// Builds the key set; with `--jwks-url` fetches every URL first.
    ///
    /// - Throws: `DependencyUnavailable` when a JWKS URL cannot be fetched.
    public init(
        configuration: TidingsConfiguration, clock: any WallClock = SystemClock(), logger: Logger = Logger(label: "tidings"),
        metricsFactory: any MetricsFactory = MetricsSystem.factory
    ) async throws {
        let keys = try await TokenKeys(configuration: configuration)
        self.keys = keys
        if configuration.jwksURLs.isEmpty {
            remote = nil
        } else {
            let remote = RemoteKeySets(
                urls: configuration.jwksURLs, keys: keys, refreshInterval: configuration.jwksRefresh,
                minimumInterval: Self.jwksMinimumInterval, clock: clock, logger: logger, metricsFactory: metricsFactory)
            try await remote.start()
            self.remote = remote
        }
        self.clock = clock
        self.rules = TokenRules(configuration: configuration)
        self.publishKeys = configuration.publishKeys.map { key in
            let digest = SHA256.hash(data: Data(key.utf8))
            return (digest, "key:" + digest.prefix(8).map { String(format: "%02x", $0) }.joined())
        }
        var failures: [TokenRejection.Reason: Counter] = [:]
        for reason in TokenRejection.Reason.allCases {
            failures[reason] = Counter(label: "tidings_auth_failures_total", dimensions: [("reason", reason.rawValue)], factory: metricsFactory)
        }
        self.failures = failures
    }

    /// The service that refreshes the `--jwks-url` key sets; `nil` without one.
    public var keyRefresher: (any Service)? {
        remote.map { JWKSRefresher(keySets: $0, clock: clock) }
    }

    /// Verifies a token's signature, time claims, issuer, audience and subject.
    public func verify(token: String) async throws(AuthError) -> TidingsClaims {
        do {
            return try await check(token: token)
        } catch {
            failures[error.reason]?.increment()
            throw .rejected(error)
        }
    }

    /// `verify(token:)` without counting a refusal.
    private func check(token: String) async throws(TokenRejection) -> TidingsClaims {
        let generation = keys.snapshot.generation
        if let cached = verified.withLock({ $0.generation == generation ? $0.claims[token] : nil }) {
            if hasExpired(cached) {
                verified.withLock { _ = $0.claims.removeValue(forKey: token) }
                throw .expired
            }
            return cached
        }
        let (claims, keyGeneration) = try await verifyUncached(token: token)
        verified.withLock { cache in
            if cache.generation != keyGeneration || cache.claims.count >= Self.verifiedCacheLimit {
                cache = (keyGeneration, [:])
            }
            cache.claims[token] = claims
        }
        return claims
    }

    /// The token's `exp` and the leeway have passed (by `clock`).
    private func hasExpired(_ claims: TidingsClaims) -> Bool {
        guard let exp = claims.exp else { return false }
        return exp.value.addingTimeInterval(rules.leeway) <= clock.now()
    }

    private func verifyUncached(token: String) async throws(TokenRejection) -> (TidingsClaims, Int) {
        let header: JWTHeader
        do {
            header = try DefaultJWTParser().parse(Array(token.utf8), as: TokenPayload.self).header
        } catch {
            throw .malformed
        }
        let kid = header.kid
        var snapshot = keys.snapshot
        if let kid, !snapshot.kids.contains(kid) {
            if let remote {
                await remote.refreshForUnknownKey()
                snapshot = keys.snapshot
            }
            guard snapshot.kids.contains(kid) || snapshot.fixedAlgorithms.contains(header.alg ?? "") else { throw .unknownKey }
        }
        let known = kid.map { snapshot.kids.contains($0) } ?? false
        if !known, snapshot.fixedKeys[header.alg ?? ""] == nil, snapshot.kids.isEmpty { throw .badSignature }
        let payload: TokenPayload
        do {
            // Without a kid the set knows (none, or one for the secret or public key), every key
            // is tried; each verifies with its own algorithm whatever the header's `alg` says.
            // A token with no known kid is verified by the fixed key of its header's `alg` alone
            // (found by fuzzing: `{"alg":"none"}` over an HMAC of the secret was accepted); with
            // no such key and no key set, nothing can verify it.
            if !known, let fixed = snapshot.fixedKeys[header.alg ?? ""] {
                payload = try await fixed.verify(token, as: TokenPayload.self, iteratingKeys: true)
            } else {
                payload = try await snapshot.collection.verify(token, as: TokenPayload.self, iteratingKeys: !known)
            }
        } catch let error as JWTError {
            throw Self.rejection(error)
        } catch {
            throw TokenRejection(.badSignature, "it could not be verified")
        }
        return (try rules.claims(of: payload, now: clock.now()), snapshot.generation)
    }

    /// A subscriber identity from a token. A stream ends at the token's `exp`, so a token past its
    /// `exp` opens none, even within the leeway (its stream would end at once and be reopened).
    public func subscriber(token: String) async throws(AuthError) -> Subscriber {
        let claims = try await verify(token: token)
        if let exp = claims.exp?.value, exp <= clock.now() {
            failures[.expired]?.increment()
            throw .rejected(.expired)
        }
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
            claims = try await check(token: credential)
        } catch {
            // A static key may contain dots: it is checked after the token fails.
            if let key = publishKey(credential) { return key }
            failures[error.reason]?.increment()
            throw .rejected(error)
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
        let generation = keys.snapshot.generation
        guard let claims = verified.withLock({ $0.generation == generation ? $0.claims[credential] : nil }), !hasExpired(claims) else {
            return nil
        }
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

    private static func rejection(_ error: JWTError) -> TokenRejection {
        switch error.errorType {
        case .signatureVerificationFailed: .badSignature
        case .malformedToken: .malformed
        case .unknownKID, .missingKIDHeader: .unknownKey
        case .noKeyProvided: .noKey
        default: TokenRejection(.badSignature, "it could not be verified")
        }
    }
}
