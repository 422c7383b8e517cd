import Logging
import Metrics
import ServiceLifecycle
import TidingsCore

/// PostgreSQL mode in one piece: the store, the tickets, presence, the listener, the pruner and
/// the presence reporter.
///
/// ```swift
/// let backend = try await PostgresBackend.start(configuration: config, bus: bus, logger: logger)
/// // serve with backend.store, backend.tickets, backend (readiness);
/// // run backend.services before the HTTP server in one ServiceGroup.
/// ```
public final class PostgresBackend: ReadinessSource {
    /// Publishing and replay.
    public let store: any EventStore
    /// One-time subscribe tickets, valid on any gateway.
    public let tickets: any TicketStore
    /// The listener (stored events to the bus).
    public let listener: PostgresListener
    /// The retention pruner.
    public let pruner: RetentionPruner
    /// Open streams over every gateway sharing the database.
    public let presence: any PresenceSource
    /// Reports this gateway's open streams to the database.
    public let reporter: PresenceReporter
    /// Run these in the ServiceGroup before the HTTP server: the connection pool's lifetime
    /// (it closes when the group shuts it down, after the services listed after it), the
    /// listener, the pruner and the presence reporter.
    public let services: [any Service]
    /// The id the bus horizon was set to at start.
    public let startHorizon: EventID

    let pool: ConnectionPool

    private init(
        pool: ConnectionPool, store: PostgresEventStore, tickets: PostgresTicketStore, listener: PostgresListener,
        pruner: RetentionPruner, reporter: PresenceReporter, horizon: EventID
    ) {
        self.pool = pool
        self.store = store
        self.tickets = tickets
        self.listener = listener
        self.pruner = pruner
        self.presence = PostgresPresence(pool: pool)
        self.reporter = reporter
        self.startHorizon = horizon
        self.services = [ConnectionPoolService(pool: pool), listener, pruner, reporter]
    }

    /// Connects, checks that the schema is migrated and sets the bus
    /// horizon (where delivery starts: every id at or below it is committed or never will be).
    ///
    /// - Throws: `DatabaseUnreachableError` when the database cannot be reached (exit 69),
    ///   `MigrationError` when migrations are pending or an applied one changed.
    public static func start(
        configuration: PostgresConfiguration,
        bus: EventBus,
        logger: Logger,
        metricsFactory: (any MetricsFactory)? = nil
    ) async throws -> PostgresBackend {
        let factory = metricsFactory ?? MetricsSystem.factory
        let parameters = ConnectionParameters(url: configuration.url)
        let pool = ConnectionPool(
            parameters: parameters, size: configuration.poolSize, logger: logger,
            roundTrips: Counter(label: "tidings_database_round_trips_total", dimensions: [("connection", "pool")], factory: factory),
            // Publishes commit synchronously whatever the database's default: an asynchronous
            // commit lost in a crash would re-issue ids that listeners already delivered. Set
            // once per session, not once per transaction.
            sessionSetup: "SET synchronous_commit = on")
        let horizon: EventID
        do {
            horizon = try await pool.withConnection { connection in
                let pending = try Migrator.pending(EmbeddedMigrations.all.sorted { $0.name < $1.name }, on: connection)
                guard pending.isEmpty else { throw MigrationError.notMigrated(pending) }
                let sequence = try connection.query(
                    "SELECT increment_by, cache_size FROM pg_sequences WHERE schemaname = 'tidings' AND sequencename = 'events_id_seq'"
                ).single()
                let (increment, cache) = (try sequence.int64(0), try sequence.int64(1))
                guard increment == 1, cache == 1 else { throw MigrationError.badSequence(increment: increment, cache: cache) }
                return try connection.query(
                    "SELECT coalesce(max(value), 0) FROM tidings.state WHERE name IN ('settled_through', 'pruned_through')"
                ).single().int64(0)
            }
        } catch let error as PostgresError where error.code == .connectionFailed {
            await pool.shutdown()
            throw DatabaseUnreachableError(underlying: error)
        } catch {
            await pool.shutdown()
            throw error
        }
        bus.advance(to: horizon)
        let start = max(horizon, bus.lastDelivered)
        logger.info("PostgreSQL backend started", metadata: [PostgresLogKey.horizon: "\(start)"])
        let listener = PostgresListener(
            parameters: parameters,
            bus: bus,
            horizon: start,
            configuration: configuration,
            logger: logger,
            metricsFactory: factory
        )
        let pruner = RetentionPruner(
            pool: pool, retention: configuration.retention, interval: configuration.pruneInterval, logger: logger)
        return PostgresBackend(
            pool: pool,
            store: PostgresEventStore(
                pool: pool, retention: configuration.retention, metricsFactory: factory, logger: logger,
                linger: configuration.publishLinger),
            tickets: PostgresTicketStore(pool: pool),
            listener: listener,
            pruner: pruner,
            reporter: PresenceReporter(
                pool: pool, bus: bus, interval: configuration.presenceInterval, logger: logger, metricsFactory: factory),
            horizon: start
        )
    }

    /// Not ready while the listener is disconnected or catching up.
    public func readiness() -> Readiness {
        listener.readiness()
    }

    /// Closes the connection pool (when not run through `services`).
    public func shutdown() async {
        await pool.shutdown()
    }
}

/// Keeps the connection pool open while the service group runs and closes it when the group
/// shuts this service down (after the services listed after it).
struct ConnectionPoolService: Service {
    let pool: ConnectionPool

    func run() async throws {
        try? await gracefulShutdown()
        await pool.shutdown()
    }
}
