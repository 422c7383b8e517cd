import Foundation
import Logging
import NIOHTTP1
import Synchronization
import Testing
import TidingsCore
import TidingsServer
import TidingsTestSupport

@testable import TidingsPostgres

/// The database fails under a gateway that publishes steadily and streams to a subscriber: it is
/// stopped for a while, its connections are killed mid-publish, it crashes and restarts. After
/// each, every publish answered `202` is stored once with the id it was given, none answered
/// `503` is stored, and the subscriber that stayed connected receives everything stored once,
/// in order.
///
/// Disk full is out of scope (it needs a file system the test can fill, which CI does not have).
@Suite(.serialized, .enabled(if: GatewayDatabase.isConfigured, "TIDINGS_TEST_DATABASE_URL is not set"))
struct PostgresFailureTests {
    /// How long the database stays down in the outage test: `TIDINGS_TEST_DB_OUTAGE_SECONDS`,
    /// default 30 (the length issue 14 asks for; a quick local run may use less).
    static let outage: Duration = .seconds(
        ProcessInfo.processInfo.environment["TIDINGS_TEST_DB_OUTAGE_SECONDS"].flatMap { Int($0) } ?? 30)

    @Test func theDatabaseStoppedUnderSteadyPublishing() async throws {
        try await Self.withCluster { cluster, server in
            let watcher = try await Self.watch(server)
            defer { watcher.close() }
            let publisher = SteadyPublisher(server: server, lanes: 1)
            try await publisher.waitFor(accepted: 20)

            try await cluster.stop()
            let stoppedAt = ContinuousClock.now
            try await eventually("a 503", timeout: .seconds(30)) { publisher.outcomes.contains { $0.status == 503 } }
            let refusal = try #require(publisher.outcomes.first { $0.status == 503 })
            #expect(refusal.type == "https://tidings.dev/problems/unavailable", "\(refusal)")
            #expect(refusal.detail == "the event store is unavailable; nothing was stored, retry later", "\(refusal)")
            #expect(refusal.retryAfter == "2")
            try await eventually("not ready", timeout: .seconds(30)) {
                let reply = try await server.request(.GET, "/readyz")
                return reply.status == 503 && reply.json["reason"] as? String == "listener_disconnected"
            }
            let keepAlivesBefore = watcher.rawText.components(separatedBy: ": keep-alive").count
            // The outage lasts its full length while publishes keep coming and failing.
            try await Task.sleep(until: stoppedAt + Self.outage, clock: .continuous)
            #expect(try await server.request(.GET, "/readyz").status == 503, "still down")
            #expect(watcher.ending == nil, "the stream stayed open")
            let keepAlives = watcher.rawText.components(separatedBy: ": keep-alive").count - keepAlivesBefore
            #expect(keepAlives >= Int(Self.outage.components.seconds) / 2, "keep-alives went on: \(keepAlives)")
            let refusedDuringOutage = publisher.outcomes.filter { $0.status == 503 }.count
            #expect(refusedDuringOutage >= 10, "publishing went on: \(refusedDuringOutage) refused")

            try await cluster.startAgain()
            try await eventually("ready again", timeout: .seconds(60)) { try await server.request(.GET, "/readyz").status == 200 }
            let acceptedBefore = publisher.outcomes.filter { $0.status == 202 }.count
            try await publisher.waitFor(accepted: acceptedBefore + 20)
            let outcomes = await publisher.stop()
            #expect(publisher.slowest < .seconds(15), "every publish was answered promptly: \(publisher.slowest)")
            #expect(try await Self.listenerReconnects(server) >= 1)
            try await Self.checkInvariants(outcomes, server: server, url: cluster.url, watcher: watcher)
        }
    }

    @Test func thePoolsConnectionsKilledMidPublish() async throws {
        try await Self.withCluster { cluster, server in
            let watcher = try await Self.watch(server)
            defer { watcher.close() }
            let publisher = SteadyPublisher(server: server, lanes: 4, pause: .milliseconds(5))
            try await publisher.waitFor(accepted: 20)
            var killed = 0
            for round in 1...10 {
                let accepted = publisher.outcomes.filter { $0.status == 202 }.count
                killed += try await GatewayDatabase.values(
                    cluster.url,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tidings' AND pid <> pg_backend_pid()"
                ).count
                try await publisher.waitFor(accepted: accepted + 10, round: round)
            }
            #expect(killed >= 10, "the pool's backends were killed: \(killed)")
            let outcomes = await publisher.stop()
            #expect(try await server.request(.GET, "/readyz").status == 200)
            try await Self.checkInvariants(outcomes, server: server, url: cluster.url, watcher: watcher)
        }
    }

    @Test func theDatabaseCrashedAndRestarted() async throws {
        try await Self.withCluster { cluster, server in
            let watcher = try await Self.watch(server)
            defer { watcher.close() }
            let publisher = SteadyPublisher(server: server, lanes: 2, pause: .milliseconds(5))
            for round in 1...2 {
                let accepted = publisher.outcomes.filter { $0.status == 202 }.count
                try await publisher.waitFor(accepted: accepted + 30, round: round)
                try await cluster.stop(immediately: true)
                try await cluster.startAgain()
                try await eventually("ready again", timeout: .seconds(60)) { try await server.request(.GET, "/readyz").status == 200 }
            }
            let accepted = publisher.outcomes.filter { $0.status == 202 }.count
            try await publisher.waitFor(accepted: accepted + 30)
            let outcomes = await publisher.stop()
            #expect(watcher.ending == nil, "the stream stayed open")
            #expect(try await Self.listenerReconnects(server) >= 2, "the listener caught up after each crash")
            try await Self.checkInvariants(outcomes, server: server, url: cluster.url, watcher: watcher)
        }
    }
}

// MARK: - Test support

extension PostgresFailureTests {
    static let topic = "steady"

    /// A private, migrated cluster and a gateway on it with one-second keep-alives; both go away
    /// afterwards.
    static func withCluster(_ body: @Sendable (PrivateCluster, TestServer) async throws -> Void) async throws {
        let cluster = try await PrivateCluster.start()
        defer { cluster.remove() }
        do {
            var logger = Logger(label: "tidings.test.migrate")
            logger.logLevel = .error
            _ = try await Migrator(url: cluster.url, logger: logger).migrate()
            try await TestServer.run({ $0.databaseURL = cluster.url; $0.keepAlive = .seconds(1) }) { server in
                try await body(cluster, server)
            }
            try await cluster.stop()
        } catch {
            try? await cluster.stop()
            throw error
        }
    }

    /// A stream of the topic from the start (`last_event_id=0`).
    static func watch(_ server: TestServer) async throws -> SSEClient {
        let token = try await TestServer.token(sub: "watcher", topics: [topic])
        let stream = try await server.subscribe(token: token, query: "topic=\(topic)&last_event_id=0")
        #expect(stream.status == 200, "\(stream.errorBody)")
        return stream
    }

    /// `tidings_listener_reconnects_total`.
    static func listenerReconnects(_ server: TestServer) async throws -> Int {
        let metrics = try await server.request(.GET, "/metrics").body
        let line = metrics.split(separator: "\n").first { $0.hasPrefix("tidings_listener_reconnects_total ") }
        return try #require(line.flatMap { Int($0.split(separator: " ").last ?? "") }, "\(metrics)")
    }

    /// Checks what was answered against what the database holds and what the stream carried:
    /// each publish stored at most once; every `202` stored with the id it was answered; no
    /// `503` (other than "outcome unknown") stored; the stream carries exactly the stored events,
    /// in id order, and then a last marker event (so nothing more came in between).
    static func checkInvariants(_ outcomes: [SteadyPublisher.Outcome], server: TestServer, url: String, watcher: SSEClient) async throws {
        let rows = try await GatewayDatabase.values(url, "SELECT id || ' ' || (data::text) FROM tidings.events WHERE event = 'steady' ORDER BY id")
        var storedIDs: [String: [String]] = [:]
        var stored: [(id: String, n: String)] = []
        for row in rows {
            let parts = row.split(separator: " ").map(String.init)
            stored.append((parts[0], parts[1]))
            storedIDs[parts[1], default: []].append(parts[0])
        }
        for (n, ids) in storedIDs where ids.count > 1 {
            Issue.record("publish \(n) is stored \(ids.count) times: \(ids)")
        }
        var statuses: [Int: Int] = [:]
        for outcome in outcomes {
            statuses[outcome.status, default: 0] += 1
            let ids = storedIDs["\(outcome.n)"] ?? []
            switch (outcome.status, outcome.type) {
            case (202, _):
                #expect(ids == [outcome.id ?? "?"], "publish \(outcome.n) answered 202 \(outcome.id ?? "") is stored as \(ids)")
            case (503, "https://tidings.dev/problems/outcome-unknown"):
                break  // Either way, and at most once (above).
            case (503, _):
                #expect(ids.isEmpty, "publish \(outcome.n) answered 503 is stored as \(ids)")
            default:
                Issue.record("publish \(outcome.n) answered \(outcome.status) \(outcome.detail ?? "")")
            }
        }
        #expect(statuses[202, default: 0] > 0)
        let marker = try await server.publish(#"{"topic":"\#(topic)","event":"marker","data":0}"#)
        let markerID = try #require(marker.json["id"] as? String, "\(marker.body)")
        let received = try await watcher.events(stored.count + 1, timeout: .seconds(30))
        #expect(received.map { $0.id ?? "" } == stored.map(\.id) + [markerID], "\(statuses)")
        #expect(received.dropLast().map(\.data) == stored.map(\.n))
    }
}

/// Publishes to the topic without pause from `lanes` concurrent tasks, each event's `data` its
/// number, and keeps every answer.
final class SteadyPublisher: Sendable {
    struct Outcome: Sendable, CustomStringConvertible {
        var n: Int
        var status: Int
        var id: String?
        var type: String?
        var detail: String?
        var retryAfter: String?

        var description: String { "#\(n) \(status) \(id ?? "") \(type ?? "") \(detail ?? "")" }
    }

    private struct State {
        var outcomes: [Outcome] = []
        var slowest: Duration = .zero
    }

    private let state = Mutex(State())
    private let running = Atomic<Bool>(true)
    private let tasks: Mutex<[Task<Void, Never>]> = Mutex([])

    /// Starts publishing at once; between two publishes a lane waits `pause` (a steady rate,
    /// not a wait for a condition).
    init(server: TestServer, lanes: Int, pause: Duration = .milliseconds(20)) {
        let started = (0..<lanes).map { lane in
            Task { [self] in
                var n = lane
                while running.load(ordering: .relaxed) {
                    let began = ContinuousClock.now
                    let outcome: Outcome
                    do {
                        let reply = try await server.publish(#"{"topic":"\#(PostgresFailureTests.topic)","event":"steady","data":\#(n)}"#)
                        outcome = Outcome(
                            n: n, status: reply.status, id: reply.json["id"] as? String, type: reply.json["type"] as? String,
                            detail: reply.json["detail"] as? String, retryAfter: reply.headers["Retry-After"].first)
                    } catch {
                        outcome = Outcome(n: n, status: 0, detail: "\(error)")
                    }
                    let took = ContinuousClock.now - began
                    state.withLock {
                        $0.outcomes.append(outcome)
                        $0.slowest = max($0.slowest, took)
                    }
                    n += lanes
                    try? await Task.sleep(for: pause)
                }
            }
        }
        tasks.withLock { $0 = started }
    }

    var outcomes: [Outcome] { state.withLock { $0.outcomes } }
    /// The longest any publish took to be answered.
    var slowest: Duration { state.withLock { $0.slowest } }

    /// Waits until `accepted` publishes were answered `202`.
    func waitFor(accepted: Int, round: Int = 0) async throws {
        try await eventually("\(accepted) accepted publishes (round \(round))", timeout: .seconds(60)) {
            state.withLock { $0.outcomes.count { $0.status == 202 } } >= accepted
        }
    }

    /// Stops publishing and returns every answer.
    func stop() async -> [Outcome] {
        running.store(false, ordering: .relaxed)
        for task in tasks.withLock({ $0 }) { await task.value }
        return outcomes
    }
}
