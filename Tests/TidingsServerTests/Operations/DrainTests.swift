import Foundation
import NIOHTTP1
import ServiceLifecycle
import NIOWebSocket
import Synchronization
import Testing
import TidingsCore
@testable import TidingsServer

/// The drain on graceful shutdown, in process: `/readyz`, refused streams, the goodbyes.
/// (`DrainProcessTests` sends a real SIGTERM to the binary with 2,000 streams.)
@Suite("Drain on graceful shutdown")
struct DrainTests {
    @Test func aDrainRefusesNewStreamsAndEndsOpenOnesSpreadWithAGoodbyeEach() async throws {
        try await TestServer.run({
            // Long enough that the refusals below are checked while the drain runs, even on a
            // loaded machine (the server stops once the last stream has ended).
            $0.drainPeriod = .seconds(6)
            $0.retry = .seconds(60)  // the preamble's retry:, told apart from the drain's (at most 6 s)
        }) { server in
            let token = try await TestServer.token(sub: "alice")
            var streams: [SSEClient] = []
            for _ in 0..<4 { streams.append(try await server.subscribe(token: token)) }
            let webSocket = try await WebSocketTestClient.connect(port: server.port, token: token)
            try await eventually("streams on the bus") { server.gateway.bus.subscriptionCount == 5 }
            var published: [String] = []
            for _ in 0..<20 { published.append(try await server.publish(user: "alice")) }

            // A long poll waiting after the last event.
            let auth = [("Authorization", "Bearer \(token)")]
            let last = published.last!
            let waiting = Task { try await server.request(.GET, "/poll?last_event_id=\(last)&timeout=30s", headers: auth) }
            try await eventually("the poll waits") { server.gateway.bus.subscriptionCount == 6 }
            let expected = published
            let signalled = ContinuousClock.now
            await server.group.triggerGracefulShutdown()
            try await eventually("draining") { server.gateway.draining.load(ordering: .relaxed) }

            let ready = try await server.request(.GET, "/readyz")
            #expect(ready.status == 503)
            #expect(ready.json["reason"] as? String == "draining")
            let refused = try await server.subscribe(token: token)
            #expect(refused.status == 503)
            #expect(refused.headers.first(name: "Retry-After") != nil)
            #expect(refused.headers.first(name: "Content-Type") == "application/problem+json")
            #expect(try await server.request(.GET, "/poll?last_event_id=0&timeout=30s", headers: auth).status == 503)
            await #expect(throws: (any Error).self, "a WebSocket upgrade is refused") {
                try await WebSocketTestClient.connect(port: server.port, token: token)
            }
            // Requests are still served while streams drain.
            #expect(try await !server.publish(user: "bob").isEmpty)

            let clients = streams
            let ends = try await withThrowingTaskGroup(of: Duration.self) { group in
                for stream in clients {
                    group.addTask {
                        var ids: [String] = []
                        var retries: [Int] = []
                        while let message = try await stream.nextMessage(timeout: .seconds(10)) {
                            switch message {
                            case .event(let event): if let id = event.id { ids.append(id) }
                            case .retry(let milliseconds): retries.append(milliseconds)
                            case .comment: break
                            }
                        }
                        let ended = ContinuousClock.now - signalled
                        #expect(stream.ending == .clean)
                        #expect(Array(ids.prefix(expected.count)) == expected, "every event published before the signal")
                        #expect(retries.first == 60_000)
                        let goodbye = try #require(retries.last)
                        #expect(retries.count == 2 && (0...6_000).contains(goodbye), "\(retries)")
                        return ended
                    }
                }
                var ends: [Duration] = []
                for try await end in group { ends.append(end) }
                return ends
            }
            #expect(try await webSocket.closed(timeout: .seconds(10)) == .goingAway)
            #expect(try await waiting.value.status == 200, "the waiting poll is answered")
            let sorted = ends.sorted()
            // Six streams over 6 s end at about 0, 1, 2, 3, 4 and 5 s in random order; the last of
            // the four SSE streams at 3 s or later.
            #expect(sorted.last! >= .milliseconds(2_700), "\(sorted)")
            #expect(sorted.filter { $0 < .milliseconds(100) }.count <= 2, "\(sorted)")
            try await eventually("every stream left the bus") { server.gateway.bus.subscriptionCount == 0 }
        }
    }

    @Test func withoutAnyStreamADrainDoesNotWaitForItsPeriod() async throws {
        try await TestServer.run { server async throws in
            let drainer = Drainer(gateway: server.gateway, period: .seconds(3_600), clock: ContinuousClock())
            let started = ContinuousClock.now
            await drainer.drain()
            #expect(ContinuousClock.now - started < .seconds(60), "a drain of nothing took \(ContinuousClock.now - started)")
            #expect(server.gateway.readiness().reason == "draining")
        }
    }
}

@Suite("Drain plan")
struct DrainPlanTests {
    @Test func endsAreSpreadEvenlyInARandomOrderWithRetriesWithinThePeriod() {
        var generator = SeededGenerator(seed: 7)
        let plan = DrainPlan(count: 1_000, period: .seconds(10), using: &generator)
        #expect(plan.steps.count == 1_000)
        #expect(Set(plan.steps.map(\.stream)) == Set(0..<1_000))
        #expect(plan.steps.map(\.stream) != Array(0..<1_000), "the order is randomised")
        #expect(plan.steps.first?.offset == .zero)
        #expect(plan.steps.map(\.offset) == plan.steps.map(\.offset).sorted())
        // Evenly: 10 ms apart, the last just before the period's end.
        #expect(plan.steps[500].offset == .seconds(5))
        #expect(plan.steps.last!.offset == .milliseconds(9_990))
        #expect(plan.steps.allSatisfy { (0...10_000).contains($0.retryMilliseconds) })
        #expect(Set(plan.steps.map(\.retryMilliseconds)).count > 500, "retries are jittered")
        let early = plan.steps.filter { $0.offset < .milliseconds(100) }.count
        #expect(early == 10)
    }

    @Test func aZeroPeriodEndsEverythingAtOnce() {
        var generator = SeededGenerator(seed: 1)
        let plan = DrainPlan(count: 3, period: .zero, using: &generator)
        #expect(plan.steps.map(\.offset) == [.zero, .zero, .zero])
        #expect(plan.steps.allSatisfy { $0.retryMilliseconds == 0 })
        #expect(DrainPlan(count: 0, period: .seconds(1), using: &generator).steps.isEmpty)
    }
}

/// A deterministic generator (SplitMix64) for plans that tests can repeat.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) {
        state = seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
