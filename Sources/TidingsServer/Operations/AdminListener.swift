import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle

/// The admin listener (`--admin-host`, `--admin-port`): `/metrics`, `/healthz`, `/readyz` and
/// the dashboard, apart from the public port, so a deployment can keep its numbers off the
/// internet. Without `--admin-port` there is none and the public port serves them.
func buildAdmin(
    gateway: Gateway, logger: Logger, onRunning: @escaping @Sendable (any Channel) async -> Void
) -> [any Service] {
    let configuration = gateway.configuration
    guard let port = configuration.adminPort else { return [] }
    let router = Router(context: TidingsRequestContext.self)
    OperationsController(gateway: gateway).addRoutes(to: router)
    WebController(pages: .dashboard).addRoutes(to: router)
    var adminLogger = logger
    adminLogger[metadataKey: "tidings.listener"] = "admin"
    return [
        Application(
            router: router,
            configuration: .init(address: .hostname(configuration.adminHost, port: port), serverName: InlinePublisher.serverName),
            onServerRunning: onRunning,
            eventLoopGroupProvider: .shared(ServerEventLoops.group),
            logger: adminLogger)
    ]
}
