// Fuzz target: credentials, tokens and the stream query.
//
// The first input byte picks what the rest is:
// 0. an `Authorization` value: `bearerCredential` is what a byte-level reading of
//    `Bearer <token>` (RFC 6750, scheme case-insensitive) gives;
// 1. a request: `Last-Event-ID` and a query (`last_event_id`, `timeout`, `limit`, `topic`, and
//    `pattern` as a token's topics claim): each parsed value is in its documented range or a 400
//    of its documented type, topics are checked byte for byte, patterns match byte for byte;
// 2. arbitrary bytes as a token: never accepted (as a subscriber or publisher), never a crash;
// 3. a header, payload and signature (each base64url-encoded here): never accepted;
// 4. a header and payload signed with the real HS256 secret: accepted only when the header says
//    HS256 and the claims Foundation reads in the payload pass every rule (exp, nbf, iat, iss,
//    aud, sub);
// 5. the same signed with the RS256 public key's PEM as an HMAC secret (algorithm confusion):
//    never accepted.
import Crypto
import Foundation
import FuzzSupport
import HTTPTypes
import JWTKit
import Hummingbird
import NIOCore
import TidingsCore
@testable import TidingsServer

let secret = "fuzz-secret-0123456789abcdef0123456789abcdef"
let staticKey = "fuzz-static-publish-key"
let issuer = "tidings-fuzz"
let audience = "fuzz-audience"
let fixedNow = Date(timeIntervalSince1970: 1_800_000_000)
let leeway: TimeInterval = 30
let publicKeyPEM = """
    -----BEGIN PUBLIC KEY-----
    MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA1/T0fbAmxWHADPTUgaqV
    f9taTTJ99Q+TUENbYxj4AGI5JyvZi8MogIURITUzN0OK37USKUvOi7o/81aWb6QP
    /+3nFIn+AaGJ4Q+/Scl0QzteDACQ1rdRqZ87mSXl9g3v3xrIcR+CWb3SJtlK0VD+
    19NROIzypD/S7n53YD5p3FoLQlYNSoZ7gIdnX30MmaV60Z4g6t6/cylFB4BMWVCn
    HjgGsNY5i9xjWrhQoxOEWUBeQUQ0RJ2P29ppAcQx15ijoaFlkMOlVeY5Ypy0khf5
    yGFgzFm5z73S7n0VEyC9tu8rPFIneJy2yEHdZigFsyG4BkF7jbGTjCPkdjvdHX7i
    FQIDAQAB
    -----END PUBLIC KEY-----
    """

struct FixedClock: WallClock {
    func now() -> Date { fixedNow }
}

let authenticator: Authenticator = blocking {
    var configuration = TidingsConfiguration()
    configuration.jwtSecret = secret
    configuration.jwtPublicKeyPEM = publicKeyPEM
    configuration.jwtIssuer = issuer
    configuration.jwtAudience = audience
    configuration.publishKeys = [staticKey]
    return try! await Authenticator(configuration: configuration, clock: FixedClock())
}

// MARK: - 0: Authorization

func checkAuthorization(_ value: String) {
    let credential = HTTPFields.bearerCredential(value)
    let bytes = Array(value.utf8)
    let scheme = Array("bearer".utf8)
    let isBearer = bytes.count > 6 && zip(bytes, scheme).allSatisfy { a, b in
        (a >= 0x41 && a <= 0x5A ? a + 0x20 : a) == b
    } && bytes[6] == 0x20
    guard isBearer else {
        return fuzzCheck(credential == "", "\(value.debugDescription) is not Bearer, yet gave \(credential ?? "nil")")
    }
    var rest = bytes[7...]
    while let first = rest.first, first == 0x20 || first == 0x09 { rest = rest.dropFirst() }
    while let last = rest.last, last == 0x20 || last == 0x09 { rest = rest.dropLast() }
    fuzzCheck(credential.map { Array($0.utf8) } == Array(rest), "\(value.debugDescription) gave \(credential ?? "nil")")
}

// MARK: - 1: the stream query

/// What the contract allows as a topic or user name: 1–128 bytes of [A-Za-z0-9._@:-].
func isName(_ text: String) -> Bool {
    let bytes = Array(text.utf8)
    return (1...128).contains(bytes.count) && bytes.allSatisfy { byte in
        switch byte {
        case 0x41...0x5A, 0x61...0x7A, 0x30...0x39, UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "@"), UInt8(ascii: ":"), UInt8(ascii: "-"): true
        default: false
        }
    }
}

/// A pattern of a claim, matched byte for byte: an exact name, or a prefix ending in `*`.
func patternMatches(_ pattern: String, _ candidate: String) -> Bool {
    let p = Array(pattern.utf8)
    let c = Array(candidate.utf8)
    if p.last == UInt8(ascii: "*") { return c.starts(with: p.dropLast()) }
    return p == c
}

func expectProblem(_ body: () throws -> Void, type: String, _ what: String) {
    do {
        try body()
        fuzzCheck(false, "\(what) accepted")
    } catch let problem as Problem {
        fuzzCheck(problem.status == .badRequest && problem.type.hasSuffix("/" + type), "\(what): \(problem.status) \(problem.type)")
    } catch {
        fuzzCheck(false, "\(what) threw \(error)")
    }
}

func checkQuery(_ bytes: ArraySlice<UInt8>) {
    let parts = bytes.split(separator: 0x0A, maxSplits: 1, omittingEmptySubsequences: false)
    let lastEventID = parts.count > 1 ? String(decoding: parts[0], as: UTF8.self) : nil
    let query = String(decoding: parts.last ?? [], as: UTF8.self)
    var head = HTTPRequest(method: .get, scheme: "http", authority: "localhost", path: "/poll?" + query)
    if let lastEventID { head.headerFields[HTTPField.Name("Last-Event-ID")!] = lastEventID }
    let request = Request(head: head, body: RequestBody(buffer: ByteBuffer()))

    let resumeText = request.headers[HTTPField.Name("Last-Event-ID")!] ?? request.query("last_event_id")
    if let resumeText, !resumeText.isEmpty {
        if resumeText.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let id = Int64(resumeText) {
            fuzzCheck((try? StreamRequest.resumePoint(request)) == id, "resume point \(resumeText)")
        } else {
            expectProblem({ _ = try StreamRequest.resumePoint(request) }, type: "invalid-last-event-id", "resume point \(resumeText.debugDescription)")
        }
    } else {
        fuzzCheck((try? StreamRequest.resumePoint(request)) == .some(nil), "no resume point")
    }

    if let text = request.query("timeout") {
        if let timeout = try? PollController.timeout(request) {
            fuzzCheck(timeout >= .zero && timeout <= .seconds(60), "timeout \(text.debugDescription) gave \(timeout)")
        } else {
            expectProblem({ _ = try PollController.timeout(request) }, type: "invalid-timeout", "timeout \(text.debugDescription)")
        }
    } else {
        fuzzCheck((try? PollController.timeout(request)) == .seconds(25), "default timeout")
    }

    if let text = request.query("limit") {
        if let limit = try? PollController.limit(request) {
            fuzzCheck((1...1000).contains(limit), "limit \(text.debugDescription) gave \(limit)")
        } else {
            expectProblem({ _ = try PollController.limit(request) }, type: "invalid-limit", "limit \(text.debugDescription)")
        }
    } else {
        fuzzCheck((try? PollController.limit(request)) == 100, "default limit")
    }

    let patterns = request.uri.queryParameters.getAll("pattern")
    let subscriber = Subscriber(user: "fuzz", topicPatterns: patterns, expiresAt: nil)
    let publisher = Publisher(id: "fuzz", rights: .patterns(patterns.map(TargetPattern.init)))
    for topic in request.uri.queryParameters.getAll("topic") {
        fuzzCheck(Target.isValidName(topic) == isName(topic), "topic \(topic.debugDescription)")
        let allowed = patterns.contains { patternMatches($0, topic) }
        fuzzCheck(subscriber.mayRead(topic: topic) == allowed, "patterns \(patterns) vs topic \(topic.debugDescription)")
        if isName(topic) {
            let target = Target.topic(topic)
            let mayPublish = patterns.contains { patternMatches($0, target.description) }
            fuzzCheck(publisher.mayPublish(to: target) == mayPublish, "publish patterns \(patterns) vs \(target)")
        }
    }
}

// MARK: - 2–5: tokens

/// What the authenticator makes of a credential: a subscriber and a publisher, or refusals.
struct Verdict: Sendable {
    var claims: TidingsClaims?
    var subscriber: Subscriber?
    var publisher: Publisher?
}

func verdict(_ token: String) -> Verdict {
    blocking {
        Verdict(
            claims: try? await authenticator.verify(token: token),
            subscriber: try? await authenticator.subscriber(token: token),
            publisher: try? await authenticator.publisher(credential: token))
    }
}

func base64URL(_ bytes: some Sequence<UInt8>) -> String {
    Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        .replacingOccurrences(of: "=", with: "")
}

func checkUnsigned(_ token: String) {
    let result = verdict(token)
    fuzzCheck(result.claims == nil && result.subscriber == nil, "accepted the token \(token.debugDescription)")
    if token == staticKey {
        fuzzCheck(result.publisher?.id.hasPrefix("key:") == true, "the static key refused")
    } else {
        fuzzCheck(result.publisher == nil, "\(token.debugDescription) accepted as a publisher")
    }
}

func signedToken(_ bytes: ArraySlice<UInt8>, key: [UInt8]) -> (token: String, header: Any?, payload: Any?) {
    let parts = bytes.split(separator: 0x0A, maxSplits: 1, omittingEmptySubsequences: false)
    let header = parts.first ?? []
    let payload = parts.count > 1 ? parts[1] : []
    let signingInput = base64URL(header) + "." + base64URL(payload)
    let mac = HMAC<SHA256>.authenticationCode(for: Data(signingInput.utf8), using: SymmetricKey(data: key))
    return (signingInput + "." + base64URL(mac), FoundationJSON.parse(header), FoundationJSON.parse(payload))
}

func seconds(_ value: Any?) -> Double? { FoundationJSON.number(value) }

func checkSigned(_ bytes: ArraySlice<UInt8>) {
    let (token, header, payload) = signedToken(bytes, key: Array(secret.utf8))
    let result = verdict(token)
    guard let claims = result.claims else { return }
    let headerFields = header as? [String: Any] ?? [:]
    fuzzCheck(headerFields["alg"] as? String == "HS256", "accepted a token whose header is \(header ?? "not JSON")")
    guard let fields = payload as? [String: Any] else {
        return fuzzCheck(false, "accepted a token whose payload Foundation does not read as an object")
    }
    let nowSeconds = fixedNow.timeIntervalSince1970
    guard let exp = seconds(fields["exp"]) else { return fuzzCheck(false, "accepted without a numeric exp: \(fields)") }
    fuzzCheck(exp + leeway > nowSeconds, "accepted an expired token: \(fields)")
    if let nbf = fields["nbf"], !(nbf is NSNull) {
        fuzzCheck(seconds(nbf).map { $0 <= nowSeconds + leeway } == true, "accepted a token not yet valid: \(fields)")
    }
    if let iat = fields["iat"], !(iat is NSNull) {
        fuzzCheck(seconds(iat).map { $0 <= nowSeconds + leeway } == true, "accepted a token issued in the future: \(fields)")
    }
    fuzzCheck(fields["iss"] as? String == issuer, "accepted the issuer \(fields["iss"] ?? "none")")
    let audiences = (fields["aud"] as? String).map { [$0] } ?? (fields["aud"] as? [Any])?.compactMap { $0 as? String } ?? []
    fuzzCheck(audiences.contains(audience), "accepted the audience \(fields["aud"] ?? "none")")
    let subject = (fields["sub"] as? String) ?? (fields["sub"] as? NSNumber).map { "\($0)" }
    fuzzCheck(subject == claims.sub.value && isName(claims.sub.value), "subject \(claims.sub.value) vs \(fields["sub"] ?? "none")")
    if let subscriber = result.subscriber {
        fuzzCheck(subscriber.user == claims.sub.value && exp > nowSeconds, "subscriber \(subscriber.user) of \(fields)")
    }
}

func check(_ bytes: [UInt8]) {
    guard let mode = bytes.first else { return }
    let rest = bytes.dropFirst()
    switch mode % 6 {
    case 0: checkAuthorization(String(decoding: rest, as: UTF8.self))
    case 1: checkQuery(rest)
    case 2: checkUnsigned(String(decoding: rest, as: UTF8.self))
    case 3:
        let parts = rest.split(separator: 0x0A, maxSplits: 2, omittingEmptySubsequences: false)
        checkUnsigned(parts.map { base64URL($0) }.joined(separator: "."))
    case 4: checkSigned(rest)
    default:
        let (token, _, _) = signedToken(rest, key: Array(publicKeyPEM.utf8))
        checkUnsigned(token)
    }
}
