import ArgumentParser
import Foundation

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply the database migrations the binary carries.")

    @Option(help: "PostgreSQL URL or conninfo. Also DATABASE_URL.") var databaseUrl: String?
    @Flag(help: "List pending migrations without applying them.") var dryRun = false

    func run() async throws {
        FileHandle.standardError.write(Data("error: PostgreSQL mode is not available in this build\n".utf8))
        throw ExitCode(ExitCodes.failure)
    }
}
