import Testing
import TidingsCore

@testable import TidingsPostgres

@Suite(.enabled(if: TestDatabase.isConfigured, "TIDINGS_TEST_DATABASE_URL is not set"))
struct MigratorTests {
    let logger = TestDatabase.logger

    func migrator(_ url: String, _ migrations: [Migration] = EmbeddedMigrations.all) -> Migrator {
        Migrator(parameters: ConnectionParameters(url: url), migrations: migrations, logger: logger)
    }

    @Test func freshDatabaseIsMigratedOnceThenNothingIsPending() async throws {
        try await TestDatabase.with(migrated: false) { (url: String) async throws in
            let available = Migrator.available
            #expect(!available.isEmpty)
            #expect(try await migrator(url).migrate(dryRun: true) == available)
            #expect(try await migrator(url).migrate() == available)
            #expect(try await migrator(url).migrate() == [])
            #expect(try await migrator(url).migrate(dryRun: true) == [])
            let recorded = try await SQL.value(url, "SELECT count(*) FROM tidings.schema_migrations")
            #expect(recorded == String(available.count))
            #expect(try await SQL.value(url, "SELECT to_regclass('tidings.events') IS NOT NULL") == "t")
        }
    }

    @Test func dryRunListsPendingFilesAndAppliesNothing() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let extra = Migration(name: "9001_extra.sql", sql: "CREATE TABLE tidings.extra (id int);")
            let migrations = EmbeddedMigrations.all + [extra]
            #expect(try await migrator(url, migrations).migrate(dryRun: true) == ["9001_extra.sql"])
            #expect(try await SQL.value(url, "SELECT to_regclass('tidings.extra') IS NULL") == "t")
            #expect(try await migrator(url, migrations).migrate() == ["9001_extra.sql"])
            #expect(try await SQL.value(url, "SELECT to_regclass('tidings.extra') IS NOT NULL") == "t")
        }
    }

    @Test func changedAppliedFileIsRefused() async throws {
        try await TestDatabase.with { (url: String) async throws in
            var changed = EmbeddedMigrations.all
            changed[0].sql += "\n-- edited after it was applied\n"
            let extra = Migration(name: "9001_extra.sql", sql: "CREATE TABLE tidings.extra (id int);")
            let error = await #expect(throws: MigrationError.self) {
                try await migrator(url, changed + [extra]).migrate()
            }
            #expect(error?.migration == changed[0].name)
            #expect(error?.description.contains("was changed after it was applied") == true)
            // Nothing after the refusal was applied.
            #expect(try await SQL.value(url, "SELECT to_regclass('tidings.extra') IS NULL") == "t")
            await #expect(throws: MigrationError.self) { try await migrator(url, changed).migrate(dryRun: true) }
        }
    }

    @Test func failingMigrationIsRolledBackAndNotRecorded() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let broken = Migration(
                name: "9001_broken.sql", sql: "CREATE TABLE tidings.half (id int);\nSELECT no_such_function();")
            let error = await #expect(throws: MigrationError.self) {
                try await migrator(url, EmbeddedMigrations.all + [broken]).migrate()
            }
            #expect(error?.migration == "9001_broken.sql")
            #expect(try await SQL.value(url, "SELECT to_regclass('tidings.half') IS NULL") == "t")
            #expect(try await SQL.value(url, "SELECT count(*) FROM tidings.schema_migrations WHERE name = '9001_broken.sql'") == "0")
        }
    }

    @Test func concurrentMigratorsSerialise() async throws {
        try await TestDatabase.with(migrated: false) { (url: String) async throws in
            async let first = migrator(url).migrate()
            async let second = migrator(url).migrate()
            let results = try await [first, second]
            #expect(results.sorted { $0.count < $1.count } == [[], Migrator.available])
        }
    }

    @Test func backendRefusesAnUnmigratedDatabase() async throws {
        try await TestDatabase.with(migrated: false) { (url: String) async throws in
            let error = await #expect(throws: MigrationError.self) {
                try await PostgresBackend.start(
                    configuration: PostgresConfiguration(url: url), bus: EventBus(), logger: logger)
            }
            #expect(error?.isNotMigrated == true)
            #expect(error?.description.contains("tidings migrate") == true)
        }
    }

    @Test func unreachableDatabaseIsADistinctErrorThatLeaksNothing() async throws {
        let url = "postgresql://someone:s3cret-pw@127.0.0.1:1/tidings?connect_timeout=2"
        let error = await #expect(throws: DatabaseUnreachableError.self) {
            try await PostgresBackend.start(configuration: PostgresConfiguration(url: url), bus: EventBus(), logger: logger)
        }
        let migrateError = await #expect(throws: DatabaseUnreachableError.self) {
            try await Migrator(url: url, logger: logger).migrate()
        }
        for text in [error.map { "\($0)" }, migrateError.map { "\($0)" }, error.map { String(describing: $0.underlying) }] {
            let text = try #require(text)
            #expect(!text.contains("s3cret"))
            #expect(!text.contains("someone"))
            #expect(!text.contains("127.0.0.1"))
        }
    }
}
