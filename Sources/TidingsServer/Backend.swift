import Logging
import Metrics
import ServiceLifecycle
import TidingsCore
import TidingsPostgres

/// Where a gateway keeps events: memory, or PostgreSQL with `--database-url`.
struct Backend {
    var store: any EventStore
    var tickets: any TicketStore
    var presence: any PresenceSource
    var readinessSources: [any ReadinessSource]
    /// Services to run before the HTTP server (and stop after it).
    var services: [any Service]

    static func make(
        configuration: TidingsConfiguration,
        bus: EventBus,
        clock: any WallClock,
        logger: Logger,
        metricsFactory: any MetricsFactory
    ) async throws -> Backend {
        guard configuration.databaseURL != nil else {
            let store = MemoryEventStore(
                bus: bus,
                configuration: .init(retention: configuration.retention, maxEvents: configuration.memoryMaxEvents),
                clock: clock,
                metricsFactory: metricsFactory)
            return Backend(
                store: store, tickets: MemoryTicketStore(clock: clock), presence: BusPresence(bus: bus), readinessSources: [], services: [])
        }
        var postgres = PostgresConfiguration(url: configuration.databaseURL)
        postgres.wakeup = configuration.wakeup == .poll ? .poll : .notify
        postgres.pollInterval = configuration.pollInterval
        postgres.orderWait = configuration.orderWait
        postgres.retention = configuration.retention
        postgres.presenceInterval = configuration.presenceInterval
        let backend: PostgresBackend
        do {
            backend = try await PostgresBackend.start(configuration: postgres, bus: bus, logger: logger, metricsFactory: metricsFactory)
        } catch let error as DatabaseUnreachableError {
            throw DependencyUnavailable("the database is unreachable: \(error)")
        } catch let error as MigrationError {
            throw ConfigurationError("\(error)")
        }
        return Backend(
            store: backend.store, tickets: backend.tickets, presence: backend.presence, readinessSources: [backend],
            services: backend.services)
    }
}
