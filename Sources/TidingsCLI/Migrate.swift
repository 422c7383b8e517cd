import ArgumentParser
import Foundation
import Logging
import TidingsPostgres

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply the database migrations the binary carries (idempotent; each file once, in order, in a transaction).")

    @Option(help: "PostgreSQL URL or conninfo. Also DATABASE_URL; without either, libpq's PG* variables.")
    var databaseUrl: String?
    @Flag(help: "List pending migrations without applying them.") var dryRun = false

    func run() async throws {
        var logger = Logger(label: "tidings.migrate")
        logger.logLevel = .warning
        let migrator = Migrator(url: databaseUrl, logger: logger)
        do {
            let names = try await migrator.migrate(dryRun: dryRun)
            if dryRun {
                print(names.isEmpty ? "no pending migrations" : names.map { "pending: \($0)" }.joined(separator: "\n"))
            } else {
                print(names.isEmpty ? "up to date" : names.map { "applied: \($0)" }.joined(separator: "\n"))
            }
        } catch let error as DatabaseUnreachableError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(ExitCodes.unavailable)
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(ExitCodes.failure)
        }
    }
}
