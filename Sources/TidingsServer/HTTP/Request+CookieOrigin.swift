import Foundation
import HTTPTypes
import Hummingbird

extension Request {
    /// Refuses the ambient `tidings_token` cookie when a page of another site sent it.
    ///
    /// A browser attaches the cookie to every request to the gateway, whichever page makes it.
    /// CORS keeps another origin from reading the answer of `GET /events`, `GET /poll` and
    /// `POST /tickets`, but not of a WebSocket (`GET /ws`), which any page may open and read. So
    /// a request carrying `Origin` is answered with the cookie's identity only when that origin
    /// is the gateway's own (its host and port are the request's `Host`) or is listed with
    /// `--cors-origin`; a request without `Origin` only when `Sec-Fetch-Site` is not
    /// `cross-site`. Clients that are not browsers send neither header. An explicit credential
    /// (a Bearer token, a ticket) is not ambient and is not checked here.
    ///
    /// - Throws: a 403 ``Problem`` naming the origin.
    func checkCookieOrigin(allowed origins: [String]) throws(Problem) {
        if let origin = headers[.origin] {
            guard origins.contains(origin) || isSameOrigin(origin) else {
                throw Problem.forbidden(
                    "the tidings_token cookie is not accepted from origin \"\(origin.prefix(200))\": "
                        + "list the page's origin with --cors-origin, or send a ticket or a Bearer token")
            }
        } else if headers[HTTPField.Name("Sec-Fetch-Site")!]?.lowercased() == "cross-site" {
            throw Problem.forbidden(
                "the tidings_token cookie is not accepted from another site (Sec-Fetch-Site: cross-site): "
                    + "send a ticket or a Bearer token")
        }
    }

    /// True when `origin` (`scheme://host[:port]`) names the host and port this request was sent
    /// to (its `Host`), the scheme's default port written or not.
    private func isSameOrigin(_ origin: String) -> Bool {
        guard let host = head.authority?.lowercased(), let separator = origin.range(of: "://") else { return false }
        let scheme = origin[..<separator.lowerBound].lowercased()
        let authority = origin[separator.upperBound...].lowercased()
        let defaultPort = scheme == "https" ? ":443" : scheme == "http" ? ":80" : nil
        func normalized(_ authority: String) -> String {
            guard let defaultPort, authority.hasSuffix(defaultPort) else { return authority }
            return String(authority.dropLast(defaultPort.count))
        }
        return normalized(authority) == normalized(host)
    }
}
