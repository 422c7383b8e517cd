public import Logging
public import Prometheus
public import TidingsCore
import Synchronization

/// The parts one gateway process shares between its endpoints and services.
public final class Gateway: Sendable {
    public let configuration: TidingsConfiguration
    public let bus: EventBus
    public let store: any EventStore
    public let tickets: any TicketStore
    /// Open streams over every instance sharing the store (`GET /presence/…`).
    public let presence: any PresenceSource
    public let authenticator: Authenticator
    public let readinessSources: [any ReadinessSource]
    public let registry: PrometheusCollectorRegistry
    public let logger: Logger
    let metrics: GatewayMetrics
    /// Per event loop: drains ready streams into their connections.
    let batchers = LoopBatchers()
    /// Publishes answered on the event loop (`InlinePublishHandler`), for tests and benchmarks.
    let inlinePublishes = Atomic<Int>(0)
    /// Set on graceful shutdown: `/readyz` answers `503` (`draining`), new streams are refused.
    let draining = Atomic<Bool>(false)

    init(
        configuration: TidingsConfiguration,
        bus: EventBus,
        store: any EventStore,
        tickets: any TicketStore,
        presence: any PresenceSource,
        authenticator: Authenticator,
        readinessSources: [any ReadinessSource],
        registry: PrometheusCollectorRegistry,
        logger: Logger
    ) {
        self.configuration = configuration
        self.bus = bus
        self.store = store
        self.tickets = tickets
        self.presence = presence
        self.authenticator = authenticator
        self.readinessSources = readinessSources
        self.registry = registry
        self.logger = logger
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.valueHistogramBuckets = GatewayMetrics.histogramBuckets
        self.metrics = GatewayMetrics(factory: factory)
    }

    /// Not ready when any source is not.
    public func readiness() -> Readiness {
        if draining.load(ordering: .relaxed) { return Readiness(isReady: false, reason: "draining") }
        for source in readinessSources {
            let readiness = source.readiness()
            if !readiness.isReady { return readiness }
        }
        return .ready
    }

    /// Starts a drain: not ready any more, new streams refused; returns the open streams.
    func beginDrain() -> [Subscription] {
        draining.store(true, ordering: .relaxed)
        return bus.refuseNew()
    }
}
