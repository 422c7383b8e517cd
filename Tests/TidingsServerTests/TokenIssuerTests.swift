import AsyncHTTPClient
import CryptoExtras
import Foundation
import Hummingbird
import JWTKit
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization
import Testing
import TidingsBench
import TidingsCore
import TidingsServer

/// Tokens shaped as identity providers and the Socket.IO setup Tidings replaces issue them:
/// keys from a JWKS URL that rotates, numeric subjects, time claims, claims at other paths.
@Suite("tokens as real issuers write them")
struct TokenIssuerTests {
    /// A gateway on a `ManualClock` that verifies tokens with the keys `provider` serves
    /// (`keys` at first); the provider stops afterwards.
    private func withProvider(
        serving keys: [IssuerKey], cacheControl: String? = nil, _ configure: @escaping (inout TidingsConfiguration) -> Void = { _ in },
        _ body: @Sendable (JWKSProvider, ManualClock, TestServer) async throws -> Void
    ) async throws {
        let provider = try await JWKSProvider.start()
        defer { provider.stop() }
        provider.serve(keys)
        provider.cacheControl = cacheControl
        let clock = ManualClock()
        try await TestServer.run(clock: clock, { $0.jwksURLs = [provider.url]; configure(&$0) }) { server in
            try await body(provider, clock, server)
        }
    }

    // MARK: - JWKS over HTTP

    @Test func aRotatedJWKSIsPickedUpWithoutARestartWhileStreamsStayOpen() async throws {
        let old = try await IssuerKey.rsa(kid: "rsa-2026-11")
        let new = try await IssuerKey.es256(kid: "ec-2026-12")
        try await withProvider(serving: [old]) { provider, clock, server in
            #expect(provider.fetches == 1, "fetched once at start")
            let before = try await server.subscribe(token: try await old.sign(["sub": "alice", "exp": .fromNow(3600)]))
            #expect(before.status == 200, "\(before.errorBody)")
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }

            // The provider rotates: the old kid goes, a new one comes. A token with the new kid
            // makes the gateway fetch at once (the last fetch is older than the minimum interval).
            provider.serve([new])
            clock.advance(Authenticator.jwksMinimumInterval)
            let after = try await server.subscribe(token: try await new.sign(["sub": "bob", "exp": .fromNow(3600)]))
            #expect(after.status == 200, "\(after.errorBody)")
            #expect(provider.fetches == 2)

            // The stream opened with the old key goes on; so does the new one.
            let first = try await server.publish(user: "alice", data: "1")
            let second = try await server.publish(user: "bob", data: "2")
            #expect(try await before.nextEvent()?.id == first)
            #expect(try await after.nextEvent()?.id == second)

            // A new request with the removed key is refused, cached verification or not, and
            // the refusal names the check without echoing the token.
            let oldToken = try await old.sign(["sub": "alice", "exp": .fromNow(3600)])
            let refused = try await server.request(.GET, "/poll", headers: [("Authorization", "Bearer \(oldToken)")])
            #expect(refused.status == 401)
            #expect((refused.json["detail"] as? String)?.contains("unknown key") == true, "\(refused.body)")
            #expect(!refused.body.contains(oldToken))
            #expect(provider.fetches == 2, "no fetch within the minimum interval")
            let metrics = try await server.request(.GET, "/metrics").body
            #expect(metrics.contains(#"tidings_auth_failures_total{reason="unknown_key"} 1"#), "\(metrics)")
            #expect(metrics.contains(#"tidings_jwks_fetches_total{result="ok"} 2"#))
            before.close()
            after.close()
        }
    }

    @Test func theLastGoodKeysKeepWorkingWhileTheProviderIsDown() async throws {
        let current = try await IssuerKey.es256(kid: "current")
        let next = try await IssuerKey.rsa(kid: "next")
        try await withProvider(serving: [current], { $0.jwksRefresh = .seconds(300) }) { provider, clock, server in
            let token = try await current.sign(["sub": "alice", "exp": .fromNow(7200)])
            provider.isDown = true
            // The background refresh comes due (five minutes by the clock) and fails.
            try await eventually("the refresher waits") { clock.sleepers == 1 }
            #expect(clock.requestedSleeps.last == .seconds(300))
            clock.advance(.seconds(300))
            try await eventually("a failed fetch") { provider.failedFetches == 1 }
            #expect(try await server.subscribe(token: token).status == 200, "cached keys keep working")
            // A token with a kid the gateway has never seen cannot be checked while the provider is down.
            let nextToken = try await next.sign(["sub": "bob", "exp": .fromNow(7200)])
            #expect(try await server.subscribe(token: nextToken).status == 401)

            // The provider comes back with both keys; the refresh after a failure comes sooner
            // than the regular interval.
            provider.isDown = false
            provider.serve([current, next])
            try await eventually("the refresher waits again") { clock.sleepers == 1 && clock.requestedSleeps.count >= 2 }
            #expect(clock.requestedSleeps.last == Authenticator.jwksMinimumInterval)
            let fetchedBefore = provider.fetches
            clock.advance(Authenticator.jwksMinimumInterval)
            try await eventually("a good fetch") { provider.fetches == fetchedBefore + 1 }
            try await eventually("the refresher waits once more") { clock.sleepers == 1 && clock.requestedSleeps.count >= 3 }
            #expect(try await server.subscribe(token: nextToken).status == 200)
            #expect(try await server.subscribe(token: token).status == 200)
            #expect(clock.requestedSleeps.last == .seconds(300), "back to the regular interval")
            let metrics = try await server.request(.GET, "/metrics").body
            #expect(metrics.contains(#"tidings_jwks_fetches_total{result="error"} 1"#), "\(metrics)")
        }
    }

    @Test func theProvidersCacheControlSetsTheRefreshInterval() async throws {
        let key = try await IssuerKey.es256(kid: "k")
        try await withProvider(serving: [key], cacheControl: "public, max-age=60") { provider, clock, _ in
            try await eventually("the refresher waits") { clock.sleepers == 1 }
            #expect(clock.requestedSleeps == [.seconds(60)])
            provider.cacheControl = "no-cache"
            clock.advance(.seconds(60))
            try await eventually("the refresh") { provider.fetches == 2 }
            // no-cache cannot make the gateway fetch more often than the minimum interval.
            try await eventually("the refresher waits again") { clock.requestedSleeps.count == 2 && clock.sleepers == 1 }
            #expect(clock.requestedSleeps.last == Authenticator.jwksMinimumInterval)
        }
    }

    @Test func keysTidingsCannotUseAreLeftOutOfAProvidersSet() async throws {
        // Keycloak publishes an encryption key beside its signing key; other sets carry key
        // types Tidings does not verify with, or keys without a kid.
        let signing = try await IssuerKey.es256(kid: "sig")
        let provider = try await JWKSProvider.start()
        defer { provider.stop() }
        provider.serve([signing], others: [
            #"{"kid":"enc","kty":"RSA","alg":"RSA-OAEP","use":"enc","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#,
            #"{"kid":"mac","kty":"oct","k":"c2VjcmV0"}"#,
            #"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
        ])
        try await TestServer.run({ $0.jwtSecret = nil; $0.jwksURLs = [provider.url] }) { server in
            let token = try await signing.sign(["sub": "alice", "exp": .fromNow(3600)])
            #expect(try await server.request(.GET, "/poll", headers: [("Authorization", "Bearer \(token)")]).status == 200)
        }
        // A set with no usable key at all is refused at start.
        provider.serve([], others: [#"{"kid":"mac","kty":"oct","k":"c2VjcmV0"}"#])
        var configuration = TidingsConfiguration()
        configuration.jwksURLs = [provider.url]
        await #expect(throws: DependencyUnavailable.self) {
            _ = try await buildApplication(configuration: configuration, logger: Logger(label: "test"))
        }
    }

    @Test func unknownKidStormsFetchAtMostOncePerInterval() async throws {
        let known = try await IssuerKey.es256(kid: "known")
        let stranger = try await IssuerKey.es256(kid: "stranger")
        try await withProvider(serving: [known]) { provider, clock, server in
            clock.advance(Authenticator.jwksMinimumInterval)
            func storm() async throws -> [Int] {
                try await withThrowingTaskGroup(of: Int.self) { group in
                    for n in 0..<40 {
                        group.addTask {
                            let token = try await stranger.sign(["sub": "u", "exp": .fromNow(3600)], kid: "made-up-\(n)")
                            return try await server.request(.GET, "/poll", headers: [("Authorization", "Bearer \(token)")]).status
                        }
                    }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
            }
            #expect(try await storm().allSatisfy { $0 == 401 })
            #expect(provider.fetches == 2, "one fetch for forty unknown kids")
            #expect(try await storm().allSatisfy { $0 == 401 })
            #expect(provider.fetches == 2, "none within the minimum interval")
            clock.advance(Authenticator.jwksMinimumInterval)
            #expect(try await storm().allSatisfy { $0 == 401 })
            #expect(provider.fetches == 3)
            let good = try await known.sign(["sub": "u", "exp": .fromNow(3600)])
            #expect(try await server.request(.GET, "/poll", headers: [("Authorization", "Bearer \(good)")]).status == 200)
        }
    }

    @Test func aJWKSURLThatCannotBeFetchedAtStartIsAnError() async throws {
        let provider = try await JWKSProvider.start()
        provider.isDown = true
        var configuration = TidingsConfiguration()
        configuration.port = 0
        configuration.jwksURLs = [provider.url]
        await #expect(throws: DependencyUnavailable.self) {
            _ = try await buildApplication(configuration: configuration, logger: Logger(label: "test"))
        }
        provider.stop()
        let closed = "http://127.0.0.1:\(try SpawnedServer.freePort())/jwks"
        let run = try await CLITests.run(["serve", "--port", "0", "--jwks-url", closed])
        #expect(run.status == 69, "\(run.error)")
        #expect(run.error.contains("--jwks-url"), "\(run.error)")
        let bad = try await CLITests.run(["serve", "--port", "0", "--jwks-url", "ftp://example"])
        #expect(bad.status == 64)
    }

    @Test func requireExpIsTurnedOffByItsEnvironmentVariable() async throws {
        let token = try await IssuerKey.hs256.sign(["sub": "a"])
        for (value, expected) in [("false", 200), ("0", 200), ("true", 401)] {
            let port = try SpawnedServer.freePort()
            let server = try await SpawnedServer.start(
                command: ["env", "TIDINGS_JWT_REQUIRE_EXP=\(value)", CLITests.executable.path, "serve", "--port", "\(port)", "--jwt-secret", TestServer.secret],
                port: port, logPath: FileManager.default.temporaryDirectory.appendingPathComponent("tidings-require-exp-\(port).log").path)
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/poll")
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            let status = try await HTTPClient.shared.execute(request, timeout: .seconds(30)).status.code
            await server.stop()
            #expect(status == expected, "TIDINGS_JWT_REQUIRE_EXP=\(value)")
        }
    }

    // MARK: - Claims

    @Test func aNumericSubjectIsReadAsItsDecimalDigits() async throws {
        try await TestServer.run { server in
            let token = try await IssuerKey.hs256.sign(["sub": .integer(42), "exp": .fromNow(3600)])
            let stream = try await server.subscribe(token: token)
            #expect(stream.status == 200, "\(stream.errorBody)")
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            let id = try await server.publish(user: "42", data: "7")
            #expect(try await stream.nextEvent()?.id == id)
            stream.close()
            // A fraction or a boolean is no user id.
            for bad: ClaimValue in [.number(4.5), .bool(true)] {
                let reply = try await server.request(
                    .GET, "/poll",
                    headers: [("Authorization", "Bearer \(try await IssuerKey.hs256.sign(["sub": bad, "exp": .fromNow(3600)]))")])
                #expect(reply.status == 401)
                #expect((reply.json["detail"] as? String)?.contains("subject (sub)") == true, "\(reply.body)")
            }
        }
    }

    @Test func timeClaimsAreCheckedWithTheLeeway() async throws {
        let clock = TestClock()
        try await TestServer.run(clock: clock) { server in
            func status(_ claims: [String: ClaimValue]) async throws -> String {
                try await Self.answer(server, claims)
            }
            let now = clock.now().timeIntervalSince1970
            let exp = ClaimValue.number(now + 3600)
            #expect(try await status(["sub": "a", "exp": exp, "nbf": .number(now + 3600)]) == "401 the token is not valid: it is not valid yet (nbf)")
            #expect(try await status(["sub": "a", "exp": exp, "nbf": .number(now + 20)]).hasPrefix("200"), "within the leeway")
            #expect(try await status(["sub": "a", "exp": exp, "iat": .number(now + 3600)]) == "401 the token is not valid: it was issued in the future (iat)")
            #expect(try await status(["sub": "a", "exp": exp, "iat": .number(now + 20)]).hasPrefix("200"))
            // A publisher's token past exp but within the leeway still publishes; a stream ends
            // at exp, so the same token opens none.
            let lateToken = try await IssuerKey.hs256.sign(["sub": "a", "exp": .number(now - 20), "publish": true])
            #expect(try await server.publish(#"{"user":"a","event":"e","data":1}"#, credential: lateToken).status == 202, "within the leeway")
            #expect(try await status(["sub": "a", "exp": .number(now - 20)]) == "401 the token is not valid: it has expired (exp)")
            let tooLate = try await IssuerKey.hs256.sign(["sub": "a", "exp": .number(now - 40), "publish": true])
            #expect(try await server.publish(#"{"user":"a","event":"e","data":1}"#, credential: tooLate).status == 401)
            #expect(try await status(["sub": "a"]).hasPrefix("401"), "no exp")
            #expect(try await status(["sub": "a", "exp": "tomorrow"]).hasPrefix("401"))
            let metrics = try await server.request(.GET, "/metrics").body
            #expect(metrics.contains(#"tidings_auth_failures_total{reason="not_yet_valid"} 2"#), "\(metrics)")
            #expect(metrics.contains(#"tidings_auth_failures_total{reason="expired"} 2"#))
            #expect(metrics.contains(#"tidings_auth_failures_total{reason="missing_exp"} 1"#))
            #expect(metrics.contains(#"tidings_auth_failures_total{reason="malformed"} 1"#))
        }
        // A gateway with --no-jwt-require-exp accepts a token without exp; a leeway of zero
        // refuses what the default would let through.
        try await TestServer.run(clock: clock, { $0.jwtRequireExp = false; $0.jwtLeeway = .zero }) { server in
            let forever = try await IssuerKey.hs256.sign(["sub": "a"])
            #expect(try await server.subscribe(token: forever).status == 200)
            let early = try await IssuerKey.hs256.sign(["sub": "a", "nbf": .number(clock.now().timeIntervalSince1970 + 20)])
            #expect(try await server.subscribe(token: early).status == 401)
        }
    }

    @Test func everyEntryPointRefusesATokenThatIsNotValidYet() async throws {
        try await TestServer.run { server in
            let early = try await IssuerKey.hs256.sign(
                ["sub": "a", "exp": .fromNow(7200), "nbf": .fromNow(3600), "topics": ["news.*"], "publish": true])
            let bearer = [("Authorization", "Bearer \(early)")]
            let stream = try await server.subscribe(token: early)
            #expect(stream.status == 401)
            #expect(stream.errorBody.contains("not valid yet"), "\(stream.errorBody)")
            stream.close()
            for (method, path) in [(HTTPMethod.GET, "/poll"), (.POST, "/tickets"), (.GET, "/presence/users/a")] {
                let reply = try await server.request(method, path, headers: bearer)
                #expect(reply.status == 401, "\(method) \(path)")
                #expect((reply.json["detail"] as? String)?.contains("not valid yet") == true, "\(path): \(reply.body)")
            }
            #expect(try await server.publish(#"{"user":"a","event":"e","data":1}"#, credential: early).status == 401)
            let connection = try await RawConnection.connect(port: server.port)
            defer { connection.close() }
            try await connection.send(
                "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer \(early)\r\n\r\n")
            try await connection.waitFor("\r\n\r\n")
            try await connection.waitForClose()
            #expect(connection.text.hasPrefix("HTTP/1.1 401"))
            #expect(connection.text.contains("not valid yet"))
        }
    }

    @Test func claimsAreReadFromTheConfiguredPaths() async throws {
        let configure: (inout TidingsConfiguration) -> Void = {
            $0.jwtSubjectClaim = "user.id"
            $0.jwtTopicsClaim = "realm_access.roles"
            $0.jwtPublishClaim = "scope"
        }
        try await TestServer.run(configure) { server in
            // Nested objects and an array: Keycloak's realm roles.
            let keycloak = try await IssuerKey.hs256.sign([
                "user": ["id": .integer(7)], "exp": .fromNow(3600),
                "realm_access": ["roles": ["offline_access", "news.*"]],
            ])
            let stream = try await server.subscribe(token: keycloak, query: "topic=news.eu")
            #expect(stream.status == 200, "\(stream.errorBody)")
            #expect(try await server.subscribe(token: keycloak, query: "topic=sports").status == 403)
            try await eventually("subscribed") { server.gateway.bus.subscriptionCount == 1 }
            let published = try await server.publish(#"{"topic":"news.eu","event":"e","data":1}"#)
            let id = try #require(published.json["id"] as? String)
            let personal = try await server.publish(user: "7", data: "2")
            #expect(try await stream.events(2).map(\.id) == [id, personal])
            stream.close()

            // A space-separated string: OAuth's scope as the publish claim.
            let service = try await IssuerKey.hs256.sign(["user": ["id": "svc"], "exp": .fromNow(3600), "scope": "openid user:* topic:news.*"])
            #expect(try await server.publish(#"{"user":"9","event":"e","data":1}"#, credential: service).status == 202)
            #expect(try await server.publish(#"{"topic":"news.eu","event":"e","data":1}"#, credential: service).status == 202)
            #expect(try await server.publish(#"{"topic":"sports","event":"e","data":1}"#, credential: service).status == 403)
            // The subject's path is the configured one: a top-level sub is not looked at.
            let flat = try await IssuerKey.hs256.sign(["sub": "alice", "exp": .fromNow(3600)])
            let reply = try await server.request(.GET, "/poll", headers: [("Authorization", "Bearer \(flat)")])
            #expect(reply.status == 401)
            #expect(reply.json["detail"] as? String == "the token is not valid: it has no subject (user.id)")
            // Roles of the wrong shape are a clear refusal, not silently nothing.
            let wrong = try await IssuerKey.hs256.sign(["user": ["id": "x"], "exp": .fromNow(3600), "realm_access": ["roles": .integer(3)]])
            let shape = try await server.request(.GET, "/poll", headers: [("Authorization", "Bearer \(wrong)")])
            #expect(shape.status == 401)
            #expect((shape.json["detail"] as? String)?.contains("topics claim (realm_access.roles)") == true, "\(shape.body)")
        }
        // A key that contains dots itself (Auth0's namespaced claims), and a scope-style topics string.
        try await TestServer.run({ $0.jwtTopicsClaim = "https://example.com/topics" }) { server in
            let token = try await IssuerKey.hs256.sign(["sub": "u1", "exp": .fromNow(3600), "https://example.com/topics": "news.* weather"])
            #expect(try await server.subscribe(token: token, query: "topic=weather&topic=news.eu").status == 200)
            #expect(try await server.subscribe(token: token, query: "topic=sports").status == 403)
        }
    }

    @Test func audienceIsAStringOrAListAndIssuerMustMatch() async throws {
        try await TestServer.run({ $0.jwtAudience = "tidings"; $0.jwtIssuer = "https://id.example.com/realms/main" }) { server in
            let iss: ClaimValue = "https://id.example.com/realms/main"
            let base: [String: ClaimValue] = ["sub": "a", "exp": .fromNow(3600)]
            let string = try await Self.answer(server, base.merging(["iss": iss, "aud": "tidings"]) { $1 })
            let list = try await Self.answer(server, base.merging(["iss": iss, "aud": ["account", "tidings"]]) { $1 })
            let other = try await Self.answer(server, base.merging(["iss": iss, "aud": ["account"]]) { $1 })
            let none = try await Self.answer(server, base.merging(["iss": iss]) { $1 })
            let evil = try await Self.answer(server, base.merging(["iss": "https://evil.example.com", "aud": "tidings"]) { $1 })
            #expect(string.hasPrefix("200"))
            #expect(list.hasPrefix("200"))
            #expect(other == "401 the token is not valid: it is not meant for this gateway (aud)")
            #expect(none.hasPrefix("401"))
            #expect(evil == "401 the token is not valid: it comes from another issuer (iss)")
        }
    }
}

// MARK: - Test support

extension TokenIssuerTests {
    /// `GET /poll` with an HS256 token of these claims: the status and the problem's detail.
    static func answer(_ server: TestServer, _ claims: [String: ClaimValue]) async throws -> String {
        let token = try await IssuerKey.hs256.sign(claims)
        let reply = try await server.request(.GET, "/poll", headers: [("Authorization", "Bearer \(token)")])
        return "\(reply.status) \(reply.json["detail"] as? String ?? "")"
    }
}

extension ClaimValue: ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral, ExpressibleByBooleanLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: ClaimValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, ClaimValue)...) { self = .object(Dictionary(uniqueKeysWithValues: elements)) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }

    /// A NumericDate `seconds` from now (whole seconds, as issuers write them).
    static func fromNow(_ seconds: TimeInterval) -> ClaimValue {
        .integer(Int64((Date().timeIntervalSince1970 + seconds).rounded(.down)))
    }
}

/// Any payload, as an issuer would sign it.
struct AnyClaims: JWTPayload {
    var claims: [String: ClaimValue]

    init(claims: [String: ClaimValue]) {
        self.claims = claims
    }

    init(from decoder: any Decoder) throws {
        claims = try [String: ClaimValue](from: decoder)
    }

    func encode(to encoder: any Encoder) throws {
        try claims.encode(to: encoder)
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// A signing key of a test issuer and its public JWK.
struct IssuerKey: Sendable {
    let kid: String?
    let keys: JWTKeyCollection
    let jwk: JWK?

    /// The HS256 secret of `TestServer`.
    static var hs256: IssuerKey {
        get async {
            let keys = JWTKeyCollection()
            await keys.add(hmac: HMACKey(from: TestServer.secret), digestAlgorithm: .sha256)
            return IssuerKey(kid: nil, keys: keys, jwk: nil)
        }
    }

    /// An RS256 key (`key`, or a new one).
    static func rsa(kid: String, key: JWTKit.Insecure.RSA.PrivateKey? = nil) async throws -> IssuerKey {
        let key = try key ?? JWTKit.Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048))
        let (modulus, exponent) = try key.publicKey.getKeyPrimitives()
        let keys = JWTKeyCollection()
        await keys.add(rsa: key, digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        let jwk = JWK.rsa(.rs256, identifier: JWKIdentifier(string: kid), modulus: modulus.base64URL, exponent: exponent.base64URL)
        return IssuerKey(kid: kid, keys: keys, jwk: jwk)
    }

    static func es256(kid: String) async throws -> IssuerKey {
        let key = ES256PrivateKey()
        let parameters = try #require(key.publicKey.parameters)
        let keys = JWTKeyCollection()
        await keys.add(ecdsa: key, kid: JWKIdentifier(string: kid))
        let jwk = JWK.ecdsa(.es256, identifier: JWKIdentifier(string: kid), x: parameters.x, y: parameters.y, curve: .p256)
        return IssuerKey(kid: kid, keys: keys, jwk: jwk)
    }

    /// A token with these claims; `kid` overrides the key's own in the header.
    func sign(_ claims: [String: ClaimValue], kid: String? = nil) async throws -> String {
        var header = JWTHeader()
        if let kid { header.kid = kid }
        return try await keys.sign(AnyClaims(claims: claims), kid: (kid ?? self.kid).map { JWKIdentifier(string: $0) }, header: header)
    }
}

extension Data {
    var base64URL: String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

/// An identity provider's JWKS endpoint on loopback: the test sets the keys it serves, takes it
/// down and brings it back, and counts the fetches.
final class JWKSProvider: Sendable {
    private struct State {
        var document = #"{"keys":[]}"#
        var isDown = false
        var cacheControl: String?
        var fetches = 0
        var failedFetches = 0
    }

    private let state = Mutex(State())
    private let group: ServiceGroup
    private let task: Task<Void, any Error>
    let port: Int

    var url: String { "http://127.0.0.1:\(port)/realms/main/protocol/openid-connect/certs" }
    var fetches: Int { state.withLock { $0.fetches } }
    var failedFetches: Int { state.withLock { $0.failedFetches } }
    var isDown: Bool {
        get { state.withLock { $0.isDown } }
        set { state.withLock { $0.isDown = newValue } }
    }
    var cacheControl: String? {
        get { state.withLock { $0.cacheControl } }
        set { state.withLock { $0.cacheControl = newValue } }
    }

    /// Serves the public keys of `keys`, after the raw JWK objects of `others`.
    func serve(_ keys: [IssuerKey], others: [String] = []) {
        let encoded = keys.compactMap(\.jwk).map { String(decoding: try! JSONEncoder().encode($0), as: UTF8.self) }
        let document = #"{"keys":["# + (others + encoded).joined(separator: ",") + "]}"
        state.withLock { $0.document = document }
    }

    private init(port: Int, group: ServiceGroup, task: Task<Void, any Error>) {
        self.port = port
        self.group = group
        self.task = task
    }

    static func start() async throws -> JWKSProvider {
        let box = ProviderBox()
        let router = Router()
        router.get("/realms/main/protocol/openid-connect/certs") { _, _ -> Response in
            guard let provider = box.provider else { throw HTTPError(.serviceUnavailable) }
            return provider.answer()
        }
        let (ports, continuation) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { continuation.yield($0.localAddress?.port ?? 0) },
            logger: Logger(label: "jwks-provider", factory: { _ in SwiftLogNoOpLogHandler() }))
        let group = ServiceGroup(configuration: .init(services: [app], logger: Logger(label: "jwks-provider", factory: { _ in SwiftLogNoOpLogHandler() })))
        let task = Task { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw TestFailure("the JWKS provider did not start") }
        let provider = JWKSProvider(port: port, group: group, task: task)
        box.provider = provider
        return provider
    }

    private func answer() -> Response {
        let (document, isDown, cacheControl) = state.withLock { state in
            if state.isDown { state.failedFetches += 1 } else { state.fetches += 1 }
            return (state.document, state.isDown, state.cacheControl)
        }
        if isDown { return Response(status: .serviceUnavailable) }
        var headers: HTTPFields = [.contentType: "application/json"]
        if let cacheControl { headers[.cacheControl] = cacheControl }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: document)))
    }

    func stop() {
        let group = self.group
        Task { await group.triggerGracefulShutdown() }
    }
}

/// Lets the router reach the provider made after it.
private final class ProviderBox: Sendable {
    private let value = Mutex<JWKSProvider?>(nil)
    var provider: JWKSProvider? {
        get { value.withLock { $0 } }
        set { value.withLock { $0 = newValue } }
    }
}

/// A clock that moves only when the test says: `sleep(for:)` returns when `advance` has moved
/// the clock past its end (or the sleeping task is cancelled).
final class ManualClock: WallClock {
    private struct Sleeper {
        var id: Int
        var until: Date
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var skipped: Duration = .zero
        var sleepers: [Sleeper] = []
        var nextID = 0
        var requested: [Duration] = []
    }

    private let state = Mutex(State())
    private let start = Date()

    func now() -> Date {
        start.addingTimeInterval(state.withLock { $0.skipped }.timeInterval)
    }

    func deadlineNow() -> NIODeadline {
        let (seconds, attoseconds) = state.withLock { $0.skipped }.components
        return .now() + .seconds(seconds) + .nanoseconds(attoseconds / 1_000_000_000)
    }

    /// How many tasks are waiting in `sleep(for:)`.
    var sleepers: Int { state.withLock { $0.sleepers.count } }
    /// Every duration `sleep(for:)` was asked for, in order.
    var requestedSleeps: [Duration] { state.withLock { $0.requested } }

    func sleep(for duration: Duration) async throws {
        let id = state.withLock { state in
            state.nextID += 1
            state.requested.append(duration)
            return state.nextID
        }
        let until = now().addingTimeInterval(duration.timeInterval)
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow = state.withLock { state -> Bool in
                    if Task.isCancelled || until <= start.addingTimeInterval(state.skipped.timeInterval) { return true }
                    state.sleepers.append(Sleeper(id: id, until: until, continuation: continuation))
                    return false
                }
                if resumeNow { continuation.resume() }
            }
            try Task.checkCancellation()
        } onCancel: {
            let sleeper = state.withLock { state -> Sleeper? in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else { return nil }
                return state.sleepers.remove(at: index)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    func advance(_ duration: Duration) {
        let due = state.withLock { state -> [Sleeper] in
            state.skipped += duration
            let now = start.addingTimeInterval(state.skipped.timeInterval)
            let due = state.sleepers.filter { $0.until <= now }
            state.sleepers.removeAll { $0.until <= now }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }
}
