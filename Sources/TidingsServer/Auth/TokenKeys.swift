import Foundation
import JWTKit
import Synchronization

/// The keys tokens are verified with: the fixed ones of the configuration (`--jwt-secret`,
/// `--jwt-public-key`, `--jwks`) and the key sets last fetched from `--jwks-url`. A new fetched
/// set replaces the whole collection at once, so a verification sees either the old keys or the
/// new ones.
final class TokenKeys: Sendable {
    /// One consistent set of keys.
    struct Snapshot: Sendable {
        let collection: JWTKeyCollection
        /// The `kid`s of every key with one.
        let kids: Set<String>
        /// The algorithms of the secret and public key, which have no `kid`: a token naming an
        /// unknown `kid` with one of these algorithms is tried with them.
        let fixedAlgorithms: Set<String>
        /// The secret and the public key, each alone, by the algorithm it verifies: a token that
        /// names no known `kid` is verified by the one key its header's `alg` names.
        let fixedKeys: [String: JWTKeyCollection]
        /// Counts the changes of the key set: a token verified with an older generation is verified again.
        let generation: Int
    }

    private enum PublicKey: Sendable {
        case rsa(Insecure.RSA.PublicKey)
        case ecdsa(ES256PublicKey)
    }

    private let secret: String?
    private let publicKey: PublicKey?
    private let fileKeys: JWKS?
    private let current: Mutex<Snapshot>

    /// The keys of `configuration` without any fetched set.
    init(configuration: TidingsConfiguration) async throws {
        secret = configuration.jwtSecret
        if let pem = configuration.jwtPublicKeyPEM {
            if pem.contains("BEGIN RSA PUBLIC KEY") || (try? Insecure.RSA.PublicKey(pem: pem)) != nil {
                publicKey = .rsa(try Insecure.RSA.PublicKey(pem: pem))
            } else {
                publicKey = .ecdsa(try ES256PublicKey(pem: pem))
            }
        } else {
            publicKey = nil
        }
        fileKeys = try configuration.jwksJSON.map { try JSONDecoder().decode(JWKS.self, from: Data($0.utf8)) }
        let fixed = Snapshot(collection: JWTKeyCollection(), kids: [], fixedAlgorithms: [], fixedKeys: [:], generation: 0)
        current = Mutex(fixed)
        let first = try await Self.makeSnapshot(secret: secret, publicKey: publicKey, sets: fileKeys.map { [$0] } ?? [], generation: 0)
        current.withLock { $0 = first }
    }

    var snapshot: Snapshot { current.withLock { $0 } }

    /// The internal kids of `--jwt-secret` and `--jwt-public-key` (a NUL no JWKS kid contains).
    private static let secretKID = JWKIdentifier(string: "\u{0}tidings-jwt-secret")
    private static let publicKeyKID = JWKIdentifier(string: "\u{0}tidings-jwt-public-key")

    /// Replaces the fetched key sets; the fixed keys stay.
    func install(fetched: [JWKS]) async throws {
        let generation = snapshot.generation + 1
        let sets = (fileKeys.map { [$0] } ?? []) + fetched
        let next = try await Self.makeSnapshot(secret: secret, publicKey: publicKey, sets: sets, generation: generation)
        current.withLock { $0 = next }
    }

    private static func makeSnapshot(secret: String?, publicKey: PublicKey?, sets: [JWKS], generation: Int) async throws -> Snapshot {
        // The secret and the public key go in under kids of their own (no token's `kid` names
        // them: they are not in `kids`): a token without a known kid is tried with each, so with
        // both configured either kind of token verifies. The first is also the default key.
        let collection = JWTKeyCollection()
        if let secret {
            await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: Self.secretKID)
        }
        switch publicKey {
        case .rsa(let key): await collection.add(rsa: key, digestAlgorithm: .sha256, kid: Self.publicKeyKID)
        case .ecdsa(let key): await collection.add(ecdsa: key, kid: Self.publicKeyKID)
        case nil: break
        }
        var kids: Set<String> = []
        var fixedKeys: [String: JWTKeyCollection] = [:]
        if let secret {
            fixedKeys["HS256"] = await JWTKeyCollection().add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: Self.secretKID)
        }
        switch publicKey {
        case .rsa(let key): fixedKeys["RS256"] = await JWTKeyCollection().add(rsa: key, digestAlgorithm: .sha256, kid: Self.publicKeyKID)
        case .ecdsa(let key): fixedKeys["ES256"] = await JWTKeyCollection().add(ecdsa: key, kid: Self.publicKeyKID)
        case nil: break
        }
        let fixedAlgorithms = Set(fixedKeys.keys)
        for set in sets {
            try await collection.add(jwks: set)
            kids.formUnion(set.keys.compactMap { $0.keyIdentifier?.string })
        }
        return Snapshot(collection: collection, kids: kids, fixedAlgorithms: fixedAlgorithms, fixedKeys: fixedKeys, generation: generation)
    }
}
