import ArgumentParser
import Foundation
import JWTKit
import TidingsCore
import TidingsServer

struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print an HS256 JWT for a subscriber or a publisher.")

    @Option(help: "HS256 secret (at least 32 bytes), the server's --jwt-secret.") var secret: String
    @Option(help: "User id (the sub claim).") var sub: String
    @Option(help: "Topics the subscriber may read: names or prefixes ending in *, comma separated.") var topics: String?
    @Flag(help: "Allow publishing to every target.") var publish = false
    @Option(help: "Allow publishing to these target patterns only (comma separated, e.g. user:*,topic:news.*).")
    var publishTargets: String?
    @Option(help: "Lifetime of the token.") var ttl = DurationArgument(.seconds(3600))
    @Option(help: "iss claim.") var issuer: String?
    @Option(help: "aud claim.") var audience: String?

    func validate() throws {
        guard secret.utf8.count >= TidingsConfiguration.minimumSecretBytes else {
            throw ValidationError(
                "--secret is \(secret.utf8.count) bytes; HS256 needs at least \(TidingsConfiguration.minimumSecretBytes) (try: openssl rand -hex 32)")
        }
        guard !sub.isEmpty, sub.utf8.count <= 128 else { throw ValidationError("--sub must be 1–128 characters") }
    }

    func run() async throws {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        let publishClaim: PublishClaim?
        if let publishTargets {
            publishClaim = .patterns(publishTargets.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) })
        } else {
            publishClaim = publish ? .all(true) : nil
        }
        let claims = TidingsClaims(
            sub: sub,
            exp: ExpirationClaim(value: Date(timeIntervalSince1970: (Date().timeIntervalSince1970 + ttl.duration.timeInterval).rounded(.down))),
            iss: issuer,
            aud: audience,
            topics: topics.map { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } },
            publish: publishClaim)
        print(try await keys.sign(claims))
    }
}
