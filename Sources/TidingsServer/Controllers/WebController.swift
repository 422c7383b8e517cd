import Crypto
import Foundation
import HTTPTypes
public import Hummingbird
import NIOCore

/// The files for browsers, compiled into the binary (see the EmbedWebAssets plugin):
/// `GET /` the dashboard, `GET /demo` the demo page, `GET /tidings.js` the browser client,
/// `GET /site.css` the pages' style, `GET /favicon.ico`, and the API description
/// `GET /openapi.yaml` and `GET /openapi.json` (`openapi/tidings.yaml`). Each answers `HEAD` too, carries a strong `ETag` (a digest of its bytes)
/// and answers `If-None-Match` with `304`.
public struct WebController: Sendable {
    public typealias Context = TidingsRequestContext

    /// One embedded file and the headers it is served with.
    struct Asset: Sendable {
        let body: ByteBuffer
        let contentType: String
        let cacheControl: String
        let etag: String
        /// `Access-Control-Allow-Origin: *`: a module script is fetched in CORS mode, so a page
        /// of another origin can import `tidings.js` only with it.
        let shared: Bool

        init?(name: String, contentType: String, cacheControl: String, shared: Bool = false) {
            guard let base64 = EmbeddedWebAssets.files[name], let data = Data(base64Encoded: base64) else { return nil }
            body = ByteBuffer(bytes: data)
            self.contentType = contentType
            self.cacheControl = cacheControl
            let digest = SHA256.hash(data: data).prefix(12).map { String(format: "%02x", $0) }.joined()
            etag = "\"\(digest)\""
            self.shared = shared
        }
    }

    static let routes: [(path: String, asset: Asset)] = {
        let html = "text/html; charset=utf-8"
        let pages: [(String, Asset?)] = [
            // Pages revalidate on every load (cheap with the ETag), so a new binary shows at once.
            ("/", Asset(name: "dashboard.html", contentType: html, cacheControl: "no-cache")),
            ("/demo", Asset(name: "demo.html", contentType: html, cacheControl: "no-cache")),
            // Cached for five minutes, then revalidated: an upgrade reaches pages within minutes.
            ("/tidings.js", Asset(name: "tidings.js", contentType: "text/javascript; charset=utf-8", cacheControl: "public, max-age=300", shared: true)),
            ("/site.css", Asset(name: "site.css", contentType: "text/css; charset=utf-8", cacheControl: "no-cache")),
            ("/favicon.ico", Asset(name: "favicon.ico", contentType: "image/x-icon", cacheControl: "public, max-age=86400")),
            // The API description, for client generators and API tools of any origin.
            ("/openapi.yaml", Asset(name: "tidings.yaml", contentType: "application/yaml", cacheControl: "no-cache", shared: true)),
            ("/openapi.json", Asset(name: "tidings.json", contentType: "application/json", cacheControl: "no-cache", shared: true)),
        ]
        return pages.compactMap { path, asset in asset.map { (path, $0) } }
    }()

    /// Which files a listener serves: the dashboard (`GET /`) moves to the admin listener when
    /// there is one; it needs `tidings.js`, the style and the icon there too.
    public enum Pages: Sendable {
        case all
        case publicOnly
        case dashboard
    }

    let pages: Pages

    public init(pages: Pages = .all) {
        self.pages = pages
    }

    public func addRoutes(to router: Router<Context>) {
        for (path, asset) in Self.routes {
            switch pages {
            case .all: break
            case .publicOnly: if path == "/" { continue }
            case .dashboard: if path == "/demo" { continue }
            }
            router.get(RouterPath(path)) { request, _ in Self.respond(asset, to: request, withBody: true) }
            router.head(RouterPath(path)) { request, _ in Self.respond(asset, to: request, withBody: false) }
        }
    }

    static func respond(_ asset: Asset, to request: Request, withBody: Bool) -> Response {
        var headers: HTTPFields = [
            .contentType: asset.contentType,
            .cacheControl: asset.cacheControl,
            .eTag: asset.etag,
            .xContentTypeOptions: "nosniff",
        ]
        if asset.shared {
            headers[.accessControlAllowOrigin] = "*"
        }
        if let match = request.headers[.ifNoneMatch], matches(match, asset.etag) {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentLength] = String(asset.body.readableBytes)
        return Response(status: .ok, headers: headers, body: withBody ? .init(byteBuffer: asset.body) : .init())
    }

    /// Whether an `If-None-Match` value names `etag` (a list, `*`, weak forms included).
    static func matches(_ header: String, _ etag: String) -> Bool {
        header.split(separator: ",").contains { candidate in
            let tag = candidate.trimmingCharacters(in: .whitespaces)
            return tag == "*" || tag == etag || tag == "W/" + etag
        }
    }
}
