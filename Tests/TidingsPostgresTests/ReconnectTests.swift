import Foundation

#if canImport(Glibc)
import Glibc
#endif
import MetricsTestKit
import NIOPosix
import Testing
import TidingsBench
import TidingsCore

@testable import TidingsPostgres

/// The listener loses its connection while events are published; after it reconnects every
/// event arrives exactly once, in order.
@Suite(.enabled(if: TestDatabase.isConfigured, "TIDINGS_TEST_DATABASE_URL is not set"))
struct ReconnectTests {
    @Test func terminatedListenerConnectionCatchesUpExactlyOnce() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let metrics = TestMetrics()
            try await withBackend(url, metrics: metrics) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["topic:t"])
                defer { probe.close() }
                let store = backend.store
                let publisher = Task {
                    var ids: [EventID] = []
                    for n in 0..<300 {
                        ids += try await store.publish([newEvent("topic:t", "n", data: "\(n)")], publisher: "p")
                    }
                    return ids
                }
                var terminated: [Int32] = []
                for round in 1...3 {
                    try await eventually("events flowing before termination \(round)") { probe.events.count >= round * 40 }
                    let pid = try #require(backend.listener.status.backendPID)
                    #expect(!terminated.contains(pid))
                    #expect(try await SQL.value(url, "SELECT pg_terminate_backend($1::int)", [String(pid)]) == "t")
                    terminated.append(pid)
                    try await eventually("reconnect \(round)") {
                        metrics.counterTotal(label: "tidings_listener_reconnects_total") >= round
                    }
                }
                let published = try await publisher.value
                try await probe.waitFor(count: published.count)
                #expect(probe.ids == published)
                #expect(probe.ids == Array(1...300))
                try await eventually("ready again") { backend.readiness().isReady }
            }
        }
    }

    @Test func postgresRestartIsSurvived() async throws {
        let cluster = try await PrivateCluster.start()
        defer { cluster.remove() }
        do {
            _ = try await Migrator(url: cluster.url, logger: TestDatabase.logger).migrate()
            let metrics = TestMetrics()
            try await withBackend(cluster.url, metrics: metrics, configure: { $0.safetyPollInterval = .milliseconds(250) }) { backend, bus in
                let probe = try await readyProbe(backend, bus, ["topic:t"])
                defer { probe.close() }
                for n in 0..<20 {
                    _ = try await backend.store.publish([newEvent("topic:t", "n", data: "\(n)")], publisher: "p")
                }
                try await probe.waitFor(count: 20)
                try await cluster.stop()
                try await eventually("the listener to notice") {
                    backend.readiness() == Readiness(isReady: false, reason: "listener_disconnected")
                }
                await #expect(throws: (any Error).self) {
                    try await backend.store.publish([newEvent("topic:t")], publisher: "p")
                }
                try await cluster.startAgain()
                // Published while the listener may still be away: caught up after it reconnects.
                for n in 20..<40 {
                    _ = try await backend.store.publish([newEvent("topic:t", "n", data: "\(n)")], publisher: "p")
                }
                try await probe.waitFor(count: 40, timeout: .seconds(30))
                #expect(probe.ids == Array(1...40))
                #expect(metrics.counterTotal(label: "tidings_listener_reconnects_total") >= 1)
                try await eventually("ready again") { backend.readiness().isReady }
            }
            try await cluster.stop()
        } catch {
            try? await cluster.stop()
            throw error
        }
    }
}

/// A PostgreSQL cluster of the test's own, run with `scripts/pg-cluster.sh`.
struct PrivateCluster: Sendable {
    let directory: String
    let port: Int

    static let script: String = {
        let file = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        return file.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/pg-cluster.sh").path
    }()

    var url: String { "postgresql://postgres@127.0.0.1:\(port)/tidings" }

    static func start() async throws -> PrivateCluster {
        let cluster = PrivateCluster(
            directory: "/tmp/tidings-test-cluster-" + String(UInt32.random(in: 0...UInt32.max), radix: 36),
            // Below Linux's ephemeral range (32768–60999): no client socket of the other tests
            // can hold the port while the cluster is stopped and started again.
            port: Int.random(in: 23000..<24000))
        try await cluster.startAgain()
        return cluster
    }

    func startAgain() async throws {
        try await Self.run(["start", directory, String(port)])
    }

    func stop() async throws {
        try await Self.run(["stop", directory])
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    struct ScriptFailed: Error {
        var status: Int32
    }

    /// Runs the script with `posix_spawn` and `waitpid` on a pool thread (Foundation's
    /// `Process.waitUntilExit` can hang off the main thread on Linux).
    private static func run(_ arguments: [String]) async throws {
        let script = script
        try await NIOThreadPool.singleton.runIfActive {
            let argv = (["/bin/bash", script] + arguments).map { strdup($0) } + [nil]
            defer { argv.forEach { free($0) } }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            // The PostgreSQL it restarts must not keep this process's connections open.
            try ChildProcess.closeInheritedDescriptors(&actions)
            var pid = pid_t()
            let spawned = posix_spawn(&pid, "/bin/bash", &actions, nil, argv, environ)
            guard spawned == 0 else { throw ScriptFailed(status: spawned) }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            guard status == 0 else { throw ScriptFailed(status: status) }
        }
    }
}
