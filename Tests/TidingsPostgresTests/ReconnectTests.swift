import Foundation

import MetricsTestKit
import Testing
import TidingsCore
import TidingsTestSupport

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
