import Hummingbird
import TidingsCore

extension Gateway {
    /// The publisher a request authenticates as: `Authorization: Bearer` with a JWT whose
    /// `publish` claim is `true` or a list of target patterns, or with a `--publish-key`.
    ///
    /// - Throws: `401` without a credential or with an unknown one, `403` for a token without
    ///   a `publish` claim (as problems).
    func publisher(of request: Request) async throws(Problem) -> Publisher {
        guard let credential = request.bearerCredential else {
            throw Problem.unauthorized("this needs a publisher credential: Authorization: Bearer <token or publish key>")
        }
        guard !credential.isEmpty else {
            throw Problem.unauthorized("the Authorization header must be \"Bearer <token or publish key>\"")
        }
        do {
            return try await authenticator.publisher(credential: credential)
        } catch .notAPublisher {
            throw Problem.forbidden("the token has no publish claim")
        } catch {
            throw Problem.unauthorized(error.description)
        }
    }
}
