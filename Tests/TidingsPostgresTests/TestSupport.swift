import Foundation
import Logging
import Metrics
import MetricsTestKit
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import Testing
import TidingsCore

@testable import TidingsPostgres

/// The server the database tests use: `TIDINGS_TEST_DATABASE_URL`, e.g. the `tidings` database
/// of `scripts/pg-cluster.sh start /tmp/pgdev-cluster 55432`. Each test makes its own database
/// on that server and drops it afterwards.
enum TestDatabase {
    static let baseURL: String? = ProcessInfo.processInfo.environment["TIDINGS_TEST_DATABASE_URL"]

    static var isConfigured: Bool { baseURL != nil }

    static let logger: Logger = {
        var logger = Logger(label: "tidings.postgres.tests")
        logger.logLevel = .error
        return logger
    }()

    /// `url` with its database replaced by `name` (URL or conninfo form).
    static func url(_ url: String, database name: String) -> String {
        guard let schemeEnd = url.range(of: "://") else { return url + " dbname=\(name)" }
        var rest = url[schemeEnd.upperBound...]
        var query = ""
        if let question = rest.firstIndex(of: "?") {
            query = String(rest[question...])
            rest = rest[..<question]
        }
        let authority = rest.firstIndex(of: "/").map { rest[..<$0] } ?? rest
        return String(url[..<schemeEnd.upperBound]) + authority + "/" + name + query
    }

    /// Runs `body` with the URL of a new database (migrated unless told otherwise), then drops it.
    static func with<T>(migrated: Bool = true, _ body: (String) async throws -> T) async throws -> T {
        let base = try #require(baseURL, "set TIDINGS_TEST_DATABASE_URL")
        let name = "tidings_test_" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        try await SQL.run(base, "CREATE DATABASE \(name)")
        let url = url(base, database: name)
        do {
            if migrated { _ = try await Migrator(url: url, logger: logger).migrate() }
            let value = try await body(url)
            try await SQL.run(base, "DROP DATABASE \(name) WITH (FORCE)")
            return value
        } catch {
            _ = try? await SQL.run(base, "DROP DATABASE \(name) WITH (FORCE)")
            throw error
        }
    }
}

/// One-off statements and long-lived connections for tests, on threads of their own.
enum SQL {
    /// Connects, runs one statement (parameters allowed), disconnects.
    @discardableResult
    static func run(_ url: String, _ sql: String, _ parameters: [String?] = []) async throws -> PGRows {
        try await NIOThreadPool.singleton.runIfActive {
            let connection = try PGConnection.connect(ConnectionParameters(url: url), logger: TestDatabase.logger)
            defer { connection.close() }
            if parameters.isEmpty { return try connection.execute(sql) }
            return try connection.query(sql, parameters)
        }
    }

    /// The single value of a one-row, one-column result.
    static func value(_ url: String, _ sql: String, _ parameters: [String?] = []) async throws -> String? {
        try await run(url, sql, parameters).first?.optionalString(0)
    }
}

/// A connection held across statements (to interleave transactions), on its own thread.
final class TestConnection: Sendable {
    private let connection: PGConnection
    private let thread: NIOThreadPool

    private init(connection: PGConnection, thread: NIOThreadPool) {
        self.connection = connection
        self.thread = thread
    }

    static func open(_ url: String) async throws -> TestConnection {
        let thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        let connection = try await thread.runIfActive {
            try PGConnection.connect(ConnectionParameters(url: url), logger: TestDatabase.logger)
        }
        return TestConnection(connection: connection, thread: thread)
    }

    @discardableResult
    func query(_ sql: String, _ parameters: [String?] = []) async throws -> PGRows {
        let connection = connection
        return try await thread.runIfActive { try connection.query(sql, parameters) }
    }

    @discardableResult
    func execute(_ sql: String) async throws -> PGRows {
        let connection = connection
        return try await thread.runIfActive { try connection.execute(sql) }
    }

    var backendPID: Int32 { connection.backendPID }

    /// The notifications that arrived so far (after `LISTEN`), as `channel:payload`.
    func notifications() async throws -> [String] {
        let connection = connection
        return try await thread.runIfActive {
            try connection.consumeInput()
            var received: [String] = []
            while let notification = connection.nextNotification() {
                received.append("\(notification.channel):\(notification.payload)")
            }
            return received
        }
    }

    func close() async {
        let connection = connection
        _ = try? await thread.runIfActive { connection.close() }
        try? await thread.shutdownGracefully()
    }
}

/// An event as a subscriber received it.
struct Received: Sendable, Equatable {
    var id: EventID?
    var type: String
    var data: String

    init(id: EventID?, type: String, data: String) {
        self.id = id
        self.type = type
        self.data = data
    }

    init(_ delivery: Delivery) {
        self.init(id: delivery.event.id, type: delivery.event.type.rawValue, data: delivery.event.data)
    }
}

/// A subscription on the bus whose deliveries are collected the way the server's streams get
/// them: through an attached driver, drained at once on the thread that delivers.
final class BusProbe: SubscriptionDriver, DrainKick {
    let bus: EventBus
    let subscription: Subscription
    private let items = Mutex<[Received]>([])

    init(bus: EventBus, targets: [Target]) throws {
        self.bus = bus
        self.subscription = try bus.subscribe(user: "probe", targets: targets, hold: false).subscription
        subscription.attach(self)
    }

    func schedule() -> (any DrainKick)? { self }

    func kick() {
        items.withLock { items in
            var buffer: [Delivery] = []
            if case .events = subscription.drain(into: &buffer) { items.append(contentsOf: buffer.map(Received.init)) }
        }
    }

    var events: [Received] {
        items.withLock { $0 }
    }

    var ids: [EventID] {
        events.compactMap(\.id)
    }

    /// Waits until at least `count` events arrived; fails the test after `timeout`.
    @discardableResult
    func waitFor(count: Int, timeout: Duration = .seconds(15), sourceLocation: SourceLocation = #_sourceLocation) async throws -> [Received] {
        try await eventually(timeout: timeout, "\(count) events, got \(events.count)", sourceLocation: sourceLocation) {
            events.count >= count
        }
        return events
    }

    func close() {
        subscription.finish(.clientClosed)
        subscription.detach()
        bus.unsubscribe(subscription)
    }
}

struct TimedOut: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Waits until `condition` holds, checking every few milliseconds; throws after `timeout`.
func eventually(
    timeout: Duration = .seconds(15),
    _ what: @autoclosure () -> String = "a condition",
    sourceLocation: SourceLocation = #_sourceLocation,
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while true {
        if try await condition() { return }
        if ContinuousClock.now >= deadline {
            let error = TimedOut(what: what())
            Issue.record(error, sourceLocation: sourceLocation)
            throw error
        }
        try await Task.sleep(for: .milliseconds(5))
    }
}

/// Starts a backend with its services on `url`, runs `body`, shuts everything down.
func withBackend<T>(
    _ url: String,
    bus: EventBus = EventBus(),
    metrics: TestMetrics = TestMetrics(),
    configure: (inout PostgresConfiguration) -> Void = { _ in },
    _ body: (PostgresBackend, EventBus) async throws -> T
) async throws -> T {
    var configuration = PostgresConfiguration(url: url, poolSize: 2)
    configure(&configuration)
    let backend = try await PostgresBackend.start(
        configuration: configuration, bus: bus, logger: TestDatabase.logger, metricsFactory: metrics)
    let group = ServiceGroup(services: backend.services, logger: TestDatabase.logger)
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        do {
            let value = try await body(backend, bus)
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return value
        } catch {
            await group.triggerGracefulShutdown()
            try? await tasks.waitForAll()
            throw error
        }
    }
}

/// A probe on `targets` once the backend's listener has caught up.
func readyProbe(_ backend: PostgresBackend, _ bus: EventBus, _ targets: [String]) async throws -> BusProbe {
    try await eventually("listener ready") { backend.readiness().isReady }
    return try BusProbe(bus: bus, targets: targets.map { Target($0)! })
}

func newEvent(_ target: String, _ type: String = "test.event", data: String = "{}", key: String? = nil) -> NewEvent {
    NewEvent(targets: [Target(target)!], type: EventType(type)!, data: data, idempotencyKey: key)
}
