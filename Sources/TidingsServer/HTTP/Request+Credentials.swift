import Foundation
import Hummingbird

extension Request {
    /// The token of an `Authorization: Bearer …` header; `""` when the header has another scheme.
    var bearerCredential: String? {
        guard let value = headers[.authorization] else { return nil }
        let parts = value.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return "" }
        return String(parts[1]).trimmingCharacters(in: .whitespaces)
    }

    /// The `tidings_token` cookie.
    var tokenCookie: String? {
        cookies["tidings_token"]?.value
    }

    /// The first value of a query parameter.
    func query(_ name: String) -> String? {
        uri.queryParameters.get(name)
    }
}
