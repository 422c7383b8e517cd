import Foundation
import MetricsTestKit
import Testing
import TidingsCore

@testable import TidingsPostgres

/// Group commit: concurrent REST publishes share one transaction and one COMMIT, each request
/// keeping its own all-or-nothing answer and exact idempotency.
@Suite(.enabled(if: TestDatabase.isConfigured, "TIDINGS_TEST_DATABASE_URL is not set"))
struct GroupCommitTests {
    @Test func concurrentPublishesShareTransactionsAndEachGetsItsOwnIds() async throws {
        try await TestDatabase.with { (url: String) async throws in
            let metrics = TestMetrics()
            try await withBackend(url, metrics: metrics) { backend, _ in
                let store = backend.store
                // 64 requests at once: most of one event, every eighth a batch of three.
                let requests = (0..<64).map { n in
                    (0..<(n % 8 == 0 ? 3 : 1)).map { part in newEvent("user:\(n)", "n", data: #"{"n":\#(n),"part":\#(part)}"#) }
                }
                let results = try await withThrowingTaskGroup(of: (Int, [EventID]).self) { group in
                    for (n, events) in requests.enumerated() {
                        group.addTask { (n, try await store.publish(events, publisher: "p")) }
                    }
                    return try await group.reduce(into: [Int: [EventID]]()) { $0[$1.0] = $1.1 }
                }
                let eventCount = requests.map(\.count).reduce(0, +)
                let allIDs = results.values.flatMap { $0 }
                #expect(Set(allIDs).count == eventCount)
                for (n, ids) in results {
                    #expect(ids.count == requests[n].count)
                    #expect(ids == ids.sorted())
                }
                // Each id holds its own request's event.
                let rows = try await SQL.run(url, "SELECT id, data::text FROM tidings.events")
                var stored: [EventID: String] = [:]
                for row in rows.rows { stored[try row.int64(0)] = try row.string(1) }
                #expect(stored.count == eventCount)
                for (n, ids) in results {
                    for (part, id) in ids.enumerated() { #expect(stored[id] == #"{"n":\#(n),"part":\#(part)}"#) }
                }
                // Far fewer transactions than requests, as the database saw them (one xmin per
                // transaction) and as the metric counts them.
                let transactions = try #require(Int(try await SQL.value(url, "SELECT count(DISTINCT xmin::text) FROM tidings.events") ?? ""))
                #expect(transactions <= 32, "\(transactions) transactions for 64 requests")
                #expect(metrics.counterTotal(label: "tidings_publish_transactions_total") == transactions)
                #expect(metrics.counterTotal(label: "tidings_events_published_total") == eventCount)
            }
        }
    }
}
