import Hummingbird
import TidingsCore

extension Gateway {
    /// The publisher a request authenticates as: `Authorization: Bearer` with a JWT whose
    /// `publish` claim is `true` or a list of target patterns, or with a `--publish-key`.
    ///
    /// - Throws: `401` without a credential or with an unknown one, `403` for a token without
    ///   a `publish` claim (as problems).
    func publisher(of request: Request) async throws(Problem) -> Publisher {
        try await publisher(credential: try PublishRules.credential(PublishRules.Head(request.headers)))
    }

    /// The publisher of a bearer credential.
    /// - Throws: `401` for an unknown credential, `403` for a token without a `publish` claim.
    func publisher(credential: String) async throws(Problem) -> Publisher {
        do {
            return try await authenticator.publisher(credential: credential)
        } catch .notAPublisher {
            throw Problem.forbidden("the token has no publish claim")
        } catch {
            throw Problem.unauthorized(error.description)
        }
    }
}
