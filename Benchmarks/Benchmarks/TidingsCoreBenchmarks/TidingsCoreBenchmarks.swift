import Benchmark
import Foundation
import TidingsCore

/// The hot paths of a delivered event: framing, bus fan-out, replay lookup and publish
/// validation. `swift package benchmark thresholds check` compares each benchmark's p90 with
/// Benchmarks/Thresholds/*.p90.json and fails on a regression past these tolerances:
/// allocations tightly (they are deterministic: one more allocation per call fails), wall-clock
/// time loosely (these 2-core machines are noisy: twice as slow fails).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        warmupIterations: 3,
        maxDuration: .seconds(2),
        maxIterations: 10_000,
        thresholds: [
            .wallClock: BenchmarkThresholds(relative: [.p90: 100]),
            .mallocCountTotal: BenchmarkThresholds(relative: [.p90: 10]),
        ]
    )

    let type = EventType("order.updated")!
    let data = #"{"order":"A-10293","status":"shipped","items":3,"total":"129.90","carrier":"dhl","eta":"2026-11-24"}"#

    // MARK: SSE framing — one frame per published event, shared by every subscriber.

    Benchmark("SSEFrame.100B-data.x1000", configuration: .init(scalingFactor: .kilo)) { benchmark in
        for index in benchmark.scaledIterations {
            blackHole(SSEFrame.event(id: EventID(index + 1_000_000), type: type, data: data))
        }
    }

    Benchmark("SSEFrame.multi-line-data.x1000", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let multiLine = String(repeating: "line one\nline two\r\nline three\r", count: 4)
        for index in benchmark.scaledIterations {
            blackHole(SSEFrame.event(id: EventID(index + 1), type: type, data: multiLine))
        }
    }

    // MARK: Bus fan-out — one event to 10,000 subscriptions of a topic, then each drained.

    Benchmark(
        "EventBus.fan-out-10k-subscribers-and-drain",
        configuration: .init(maxIterations: 5_000),
        closure: { (benchmark: Benchmark, fixture: BusFixture) async in
            let (bus, subscriptions) = (fixture.bus, fixture.subscriptions)
            var batch: [Delivery] = []
            batch.reserveCapacity(16)
            for _ in benchmark.scaledIterations {
                let event = Event(id: bus.lastDelivered + 1, targets: [.topic("news")], type: type, data: data, createdAt: Date())
                blackHole(bus.deliver(event))
                for subscription in subscriptions {
                    _ = subscription.drain(into: &batch)
                    batch.removeAll(keepingCapacity: true)
                }
            }
        },
        setup: {
            let bus = EventBus(limits: .init(maxQueue: 1_000))
            var subscriptions: [Subscription] = []
            subscriptions.reserveCapacity(10_000)
            for index in 0..<10_000 {
                let (subscription, _) = try bus.subscribe(
                    user: "u\(index)", targets: [.user("u\(index)"), .topic("news")], hold: false)
                subscriptions.append(subscription)
            }
            return BusFixture(bus: bus, subscriptions: subscriptions)
        })

    // MARK: Replay lookup — the 999 events a reconnect missed, out of 100,000 retained.

    Benchmark(
        "MemoryEventStore.replay-999-of-100k",
        configuration: .init(maxIterations: 10_000),
        closure: { (benchmark: Benchmark, store: ReplayFixture) in
            let last = store.lastID
            let targets: Set<Target> = [.topic("watched"), .user("u1")]
            for _ in benchmark.scaledIterations {
                let page = store.store.replayNow(targets: targets, after: last - 9_990, through: last, limit: 1_000)
                precondition(page.events.count == 999)
                blackHole(page)
            }
        },
        setup: {
            let bus = EventBus()
            let store = MemoryEventStore(bus: bus, configuration: .init(maxEvents: 100_000))
            // 100k events; every 10th of the last 9,990 goes to the stream's topic.
            var events: [NewEvent] = []
            for index in 0..<100_000 {
                let topic = index >= 90_010 && index % 10 == 0 ? "watched" : "other.\(index % 50)"
                events.append(NewEvent(targets: [.topic(topic)], type: type, data: data))
                if events.count == 1_000 {
                    _ = store.publishNow(events, publisher: "bench")
                    events.removeAll(keepingCapacity: true)
                }
            }
            return ReplayFixture(store: store, lastID: bus.lastDelivered)
        })

    // MARK: Publish validation — POST /events bodies decoded and validated.

    let single = Array(#"{"event":"order.updated","user":"42","data":\#(data)}"#.utf8)
    Benchmark("PublishRequest.decode-1-event.x1000", configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try PublishRequest.decode(single))
        }
    }

    let batchBody = Array(
        ("[" + (0..<1_000).map { #"{"event":"order.updated","users":["u\#($0)","u\#($0 + 1)"],"data":\#(data)}"# }.joined(separator: ",") + "]").utf8)
    Benchmark("PublishRequest.decode-1000-event-batch", configuration: .init(maxIterations: 2_000)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try PublishRequest.decode(batchBody))
        }
    }
}

/// A memory store holding 100,000 events and the id of the last one.
struct ReplayFixture: Sendable {
    let store: MemoryEventStore
    let lastID: EventID
}

/// A bus with 10,000 subscriptions to topic `news`.
struct BusFixture: Sendable {
    let bus: EventBus
    let subscriptions: [Subscription]
}
