import Foundation
import Logging
import NIOPosix
import Testing
import TidingsPostgres

@testable import TidingsPostgres

/// A fresh, migrated database on the server of `TIDINGS_TEST_DATABASE_URL` (started by
/// `make test`), dropped after the test.
enum GatewayDatabase {
    static let serverURL = ProcessInfo.processInfo.environment["TIDINGS_TEST_DATABASE_URL"]
    static let isConfigured = serverURL != nil

    static func with<T: Sendable>(_ body: (String) async throws -> T) async throws -> T {
        let server = try #require(serverURL, "set TIDINGS_TEST_DATABASE_URL (make test does)")
        let name = "tidings_gw_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        try await execute(server, "CREATE DATABASE \(name)")
        let url = String(server[..<server.lastIndex(of: "/")!]) + "/" + name
        defer {
            Task { try? await execute(server, "DROP DATABASE \(name) WITH (FORCE)") }
        }
        var logger = Logger(label: "tidings.test.migrate")
        logger.logLevel = .error
        _ = try await Migrator(url: url, logger: logger).migrate()
        return try await body(url)
    }

    /// The first column of every row of a query, on its own connection.
    static func values(_ url: String, _ sql: String) async throws -> [String] {
        var logger = Logger(label: "tidings.test.sql")
        logger.logLevel = .error
        return try await NIOThreadPool.singleton.runIfActive { [logger] in
            let connection = try PGConnection.connect(ConnectionParameters(url: url), logger: logger)
            defer { connection.close() }
            return try connection.execute(sql).rows.map { try $0.string(0) }
        }
    }

    /// Runs one statement on its own connection, off the cooperative pool.
    static func execute(_ url: String, _ sql: String) async throws {
        var logger = Logger(label: "tidings.test.sql")
        logger.logLevel = .error
        try await NIOThreadPool.singleton.runIfActive { [logger] in
            let connection = try PGConnection.connect(ConnectionParameters(url: url), logger: logger)
            defer { connection.close() }
            _ = try connection.execute(sql)
        }
    }
}

/// One connection held across statements (a transaction left open), on a thread of its own.
final class GatewaySession: Sendable {
    private let connection: PGConnection
    private let thread: NIOThreadPool

    private init(connection: PGConnection, thread: NIOThreadPool) {
        self.connection = connection
        self.thread = thread
    }

    static func open(_ url: String) async throws -> GatewaySession {
        var logger = Logger(label: "tidings.test.session")
        logger.logLevel = .error
        let thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        let connection = try await thread.runIfActive { [logger] in
            try PGConnection.connect(ConnectionParameters(url: url), logger: logger)
        }
        return GatewaySession(connection: connection, thread: thread)
    }

    func execute(_ sql: String) async throws {
        let connection = connection
        _ = try await thread.runIfActive { try connection.execute(sql) }
    }

    func close() async {
        let connection = connection
        _ = try? await thread.runIfActive { connection.close() }
        try? await thread.shutdownGracefully()
    }
}
