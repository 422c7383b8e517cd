import Logging
import NIOPosix

/// Applies the migrations this binary carries (`migrations/*.sql`, embedded at build time).
///
/// Each file is applied once, in name order, in its own transaction, and recorded with a
/// SHA-256 checksum in `tidings.schema_migrations`. A recorded file whose text changed stops
/// the run with a clear error. Concurrent migrators serialise on an advisory lock.
///
/// ```swift
/// let applied = try await Migrator(url: databaseURL, logger: logger).migrate()
/// let pending = try await Migrator(url: databaseURL, logger: logger).migrate(dryRun: true)
/// ```
public struct Migrator: Sendable {
    /// Advisory lock key held while migrating ("tidings" in ASCII, one namespace for all).
    static let lockKey: Int64 = 0x7469_6469_6e67_7301

    let parameters: ConnectionParameters
    let migrations: [Migration]
    let logger: Logger

    /// - Parameters:
    ///   - url: a `postgresql://` URL or conninfo string; `nil` for libpq's `PG*` environment.
    public init(url: String?, logger: Logger) {
        self.init(parameters: ConnectionParameters(url: url), migrations: EmbeddedMigrations.all, logger: logger)
    }

    init(parameters: ConnectionParameters, migrations: [Migration], logger: Logger) {
        self.parameters = parameters.named("tidings-migrate")
        self.migrations = migrations.sorted { $0.name < $1.name }
        self.logger = logger
    }

    /// The names of all migrations this binary carries, in order.
    public static var available: [String] {
        EmbeddedMigrations.all.map(\.name).sorted()
    }

    /// Applies pending migrations and returns their names; with `dryRun`, applies nothing and
    /// returns what is pending.
    ///
    /// - Throws: `DatabaseUnreachableError` when the database cannot be reached,
    ///   `MigrationError` when a recorded migration changed or one fails.
    public func migrate(dryRun: Bool = false) async throws -> [String] {
        let parameters = parameters
        let migrations = migrations
        let logger = logger
        return try await NIOThreadPool.singleton.runIfActive {
            let connection: PGConnection
            do {
                connection = try PGConnection.connect(parameters, logger: logger)
            } catch let error as PostgresError {
                throw DatabaseUnreachableError(underlying: error)
            }
            defer { connection.close() }
            if dryRun {
                return try Self.pending(migrations, on: connection)
            }
            try connection.query("SELECT pg_advisory_lock($1)", [String(Self.lockKey)])
            defer { _ = try? connection.query("SELECT pg_advisory_unlock($1)", [String(Self.lockKey)]) }
            try connection.execute(
                """
                CREATE SCHEMA IF NOT EXISTS tidings;
                CREATE TABLE IF NOT EXISTS tidings.schema_migrations (
                    name text PRIMARY KEY,
                    checksum text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                );
                """)
            let pending = try Self.pending(migrations, on: connection)
            for name in pending {
                let migration = migrations.first { $0.name == name }!
                logger.info("Applying migration", metadata: [PostgresLogKey.migration: .string(name)])
                do {
                    try connection.transaction {
                        try connection.execute(migration.sql)
                        try connection.query(
                            """
                            INSERT INTO tidings.schema_migrations (name, checksum)
                            VALUES ($1, encode(sha256(convert_to($2, 'UTF8')), 'hex'))
                            """,
                            [migration.name, migration.sql])
                    }
                } catch let error as PostgresError {
                    throw MigrationError.failed(name, error)
                }
            }
            return pending
        }
    }

    /// Pending migration names, after checking that every recorded one is unchanged and that no
    /// newer Tidings migrated the database.
    static func pending(_ migrations: [Migration], on connection: PGConnection) throws -> [String] {
        let exists = try connection.query("SELECT to_regclass('tidings.schema_migrations') IS NOT NULL").single().bool(0)
        guard exists else { return migrations.map(\.name) }
        let rows = try connection.query(
            """
            SELECT u.name, (m.name IS NOT NULL), coalesce(m.checksum = encode(sha256(convert_to(u.sql, 'UTF8')), 'hex'), false)
            FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(name, sql, n)
            LEFT JOIN tidings.schema_migrations m ON m.name = u.name
            ORDER BY u.n
            """,
            [PGArray.text(migrations.map(\.name)), PGArray.text(migrations.map(\.sql))])
        let known = Set(migrations.map(\.name))
        let recorded = try connection.query("SELECT name FROM tidings.schema_migrations ORDER BY name").rows.map { try $0.string(0) }
        let unknown = recorded.filter { !known.contains($0) }
        guard unknown.isEmpty else { throw MigrationError.newer(unknown) }
        var pending: [String] = []
        for row in rows.rows {
            let name = try row.string(0)
            if try row.bool(1) {
                guard try row.bool(2) else { throw MigrationError.changed(name) }
            } else {
                pending.append(name)
            }
        }
        return pending
    }
}
