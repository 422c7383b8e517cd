import HTTPTypes
public import Hummingbird

/// The answers for requests no route serves, as problems like every other error: `405` with
/// `Allow` for a path the router serves with other methods (RFC 9110), `404` for any other path.
///
/// Added to the router after its routes, so it wraps only the router's not-found answer and costs
/// the served routes nothing.
public struct UnmatchedRouteMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Each served path as segments (`nil` for a parameter) and its methods, sorted.
    private let routes: [(segments: [Substring?], allow: String)]

    public init(routes: [Router<Context>.RouteDescription]) {
        var methods: [String: Set<String>] = [:]
        for route in routes { methods["\(route.path)", default: []].insert(route.method.rawValue) }
        self.routes = methods.map { path, methods in
            (path.split(separator: "/").map { $0.hasPrefix("{") ? nil : $0 }, methods.sorted().joined(separator: ", "))
        }
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            let path = request.uri.path
            let segments = path.split(separator: "/")
            guard let route = routes.first(where: { Self.matches($0.segments, segments) }) else {
                throw Problem(.notFound, type: "not-found", title: "Not Found", detail: "no endpoint is at this path")
            }
            throw Problem(
                .methodNotAllowed, type: "method-not-allowed", title: "Method Not Allowed",
                detail: "this path answers \(route.allow)", headers: [.allow: route.allow])
        }
    }

    private static func matches(_ template: [Substring?], _ segments: [Substring]) -> Bool {
        template.count == segments.count && zip(template, segments).allSatisfy { $0 == nil || $0 == $1 }
    }
}
