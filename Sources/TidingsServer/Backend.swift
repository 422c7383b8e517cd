import Logging
import Metrics
import ServiceLifecycle
import TidingsCore

/// Where a gateway keeps events: memory, or PostgreSQL with `--database-url`.
struct Backend {
    var store: any EventStore
    var tickets: any TicketStore
    var readinessSources: [any ReadinessSource]
    var services: [any Service]

    static func make(
        configuration: TidingsConfiguration,
        bus: EventBus,
        clock: any WallClock,
        logger: Logger,
        metricsFactory: any MetricsFactory
    ) async throws -> Backend {
        if configuration.databaseURL != nil {
            throw ConfigurationError("PostgreSQL mode is not available in this build")
        }
        let store = MemoryEventStore(
            bus: bus,
            configuration: .init(retention: configuration.retention, maxEvents: configuration.memoryMaxEvents),
            clock: clock,
            metricsFactory: metricsFactory)
        return Backend(store: store, tickets: MemoryTicketStore(clock: clock), readinessSources: [], services: [])
    }
}
