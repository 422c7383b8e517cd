public import Hummingbird
import HummingbirdCore
public import Logging
import NIOCore
import Prometheus
public import ServiceLifecycle
public import TidingsCore

/// A built gateway: the Hummingbird application to run and the parts behind it.
public struct TidingsApplication: Sendable {
    public let application: Application<RouterResponder<TidingsRequestContext>>
    public let gateway: Gateway
    /// What to run, in order: the application, the admin listener (with `--admin-port`), and the
    /// drain, which the service group stops first (in reverse order) on graceful shutdown.
    public let services: [any Service]
}

/// Builds the gateway for `configuration`: memory mode without a database URL.
///
/// - Parameters:
///   - clock: the clock of the memory store (retention), tickets, token time claims, the JWKS
///     refresh and the stream ticker; tests inject one.
///   - onServerRunning: called with the listening channel (tests read the bound port from it).
///   - onAdminRunning: the same for the admin listener (`--admin-port`).
public func buildApplication(
    configuration: TidingsConfiguration,
    logger: Logger,
    clock: any WallClock = SystemClock(),
    onServerRunning: @escaping @Sendable (any Channel) async -> Void = { _ in },
    onAdminRunning: @escaping @Sendable (any Channel) async -> Void = { _ in }
) async throws -> TidingsApplication {
    try await buildApplication(
        configuration: configuration, logger: logger, clock: clock, answersPublishInline: true,
        onServerRunning: onServerRunning, onAdminRunning: onAdminRunning)
}

/// `buildApplication`, and whether `POST /events` may be answered by the event loop
/// (``InlinePublishHandler``); tests build it without, to compare the router's answers.
func buildApplication(
    configuration: TidingsConfiguration,
    logger: Logger,
    clock: any WallClock,
    answersPublishInline: Bool,
    onServerRunning: @escaping @Sendable (any Channel) async -> Void,
    onAdminRunning: @escaping @Sendable (any Channel) async -> Void
) async throws -> TidingsApplication {
    try configuration.validate()
    let registry = PrometheusCollectorRegistry()
    var metricsFactory = PrometheusMetricsFactory(registry: registry)
    // Delivery in PostgreSQL mode takes milliseconds: the default buckets (5 s and up, for
    // values) could not tell 5 ms from 5 s.
    metricsFactory.valueHistogramBuckets["tidings_commit_to_delivery_seconds"] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
    ]
    metricsFactory.valueHistogramBuckets.merge(GatewayMetrics.histogramBuckets) { _, new in new }
    let bus = EventBus(
        limits: .init(
            maxConnections: configuration.maxConnections,
            maxConnectionsPerUser: configuration.maxConnectionsPerUser,
            maxQueue: configuration.maxQueue),
        metricsFactory: metricsFactory)
    let authenticator = try await Authenticator(configuration: configuration, clock: clock, logger: logger, metricsFactory: metricsFactory)
    let backend = try await Backend.make(configuration: configuration, bus: bus, clock: clock, logger: logger, metricsFactory: metricsFactory)
    let gateway = Gateway(
        configuration: configuration,
        bus: bus,
        store: backend.store,
        tickets: backend.tickets,
        presence: backend.presence,
        authenticator: authenticator,
        readinessSources: backend.readinessSources,
        registry: registry,
        logger: logger)
    let router = buildRouter(gateway: gateway, operations: configuration.adminPort == nil)
    var http1 = HTTP1Channel.Configuration()
    if answersPublishInline {
        let publisher = InlinePublisher(gateway: gateway)
        http1.additionalChannelHandlers = { [InlinePublishHandler(publisher: publisher)] }
    }
    let connection = http1
    let application = Application(
        router: router,
        server: HTTPServerBuilder { responder in
            TidingsHTTPChannel(
                responder: responder, configuration: connection, webSocket: WebSocketEndpoint(gateway: gateway),
                maxFrameSize: configuration.maxBody, timeouts: ConnectionTimeouts(configuration))
        },
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: InlinePublisher.serverName),
        services: backend.services + (authenticator.keyRefresher.map { [$0] } ?? []) + [BusTicker(bus: bus, keepAlive: configuration.keepAlive, clock: clock)],
        onServerRunning: onServerRunning,
        eventLoopGroupProvider: .shared(ServerEventLoops.group),
        logger: logger)
    let services = [application] + buildAdmin(gateway: gateway, logger: logger, onRunning: onAdminRunning)
        + [Drainer(gateway: gateway, period: configuration.drainPeriod, clock: ContinuousClock())]
    return TidingsApplication(application: application, gateway: gateway, services: services)
}

/// The routes of the contract.
/// - Parameter operations: whether `/metrics`, `/healthz`, `/readyz` and the dashboard are here
///   (false when an admin listener serves them).
public func buildRouter(gateway: Gateway, operations: Bool = true) -> Router<TidingsRequestContext> {
    let router = Router(context: TidingsRequestContext.self)
    if !gateway.configuration.corsOrigins.isEmpty {
        router.middlewares.add(AllowListCORSMiddleware(origins: gateway.configuration.corsOrigins))
    }
    SubscribeController(gateway: gateway).addRoutes(to: router)
    // `GET /ws` without an upgrade: the upgrade itself is served by `TidingsHTTPChannel`.
    router.get(RouterPath(WebSocketEndpoint.path)) { _, _ -> Response in
        throw Problem(.upgradeRequired, type: "upgrade-required", title: "Upgrade Required",
                      detail: "GET /ws is a WebSocket: send Upgrade: websocket", headers: [.upgrade: "websocket"])
    }
    PollController(gateway: gateway).addRoutes(to: router)
    PublishController(gateway: gateway).addRoutes(to: router)
    TicketController(gateway: gateway).addRoutes(to: router)
    PresenceController(gateway: gateway).addRoutes(to: router)
    if operations { OperationsController(gateway: gateway).addRoutes(to: router) }
    WebController(pages: operations ? .all : .publicOnly).addRoutes(to: router)
    // Last: it wraps only the answer for requests no route above serves.
    router.middlewares.add(UnmatchedRouteMiddleware(routes: router.routes))
    return router
}
