import Foundation
import NIOCore
import Synchronization
import Testing
@testable import TidingsCore

@Suite("Memory store and replay")
struct MemoryStoreTests {
    /// A store whose clock starts at 1970, so its clock-based ids start at 1 (ResumeTests covers
    /// ids from a real date).
    private func makeStore(
        retention: Duration = .seconds(3600), maxEvents: Int = 1_000, clock: ManualClock = ManualClock(.init(timeIntervalSince1970: 0))
    ) -> (EventBus, MemoryEventStore) {
        let bus = EventBus()
        return (bus, MemoryEventStore(bus: bus, configuration: .init(retention: retention, maxEvents: maxEvents), clock: clock))
    }

    /// Replays like a stream does and parses the frames back.
    private func replayed(_ store: MemoryEventStore, _ targets: Set<Target>, after: EventID, through: EventID, pageSize: Int = 500) async throws -> [Received] {
        var events: [Received] = []
        try await Replay.run(store: store, targets: targets, after: after, through: through, pageSize: pageSize) { frames in
            events.append(contentsOf: frames.map(Received.init))
        }
        return events
    }

    @Test func assignsIncreasingIdsAndDeliversLive() async throws {
        let (bus, store) = makeStore()
        let sub = DrainingDriver(attachingTo: try bus.subscribe(user: "a", targets: [.user("a")], hold: false).subscription)
        let ids = try await store.publish([newEvent([.user("a")]), newEvent([.user("b")]), newEvent([.user("a")])], publisher: "p")
        #expect(ids == [1, 2, 3])
        #expect(TidingsCoreTests.ids(try await sub.collect(2)) == [1, 3])
        #expect(bus.lastDelivered == 3)
    }

    @Test func replayIsInIdOrderPerTargetAndPaged() async throws {
        let (_, store) = makeStore()
        for i in 0..<50 {
            _ = try await store.publish([newEvent([i % 2 == 0 ? .user("a") : .topic("t")], data: "\(i)")], publisher: "p")
        }
        let events = try await replayed(store, [.user("a"), .topic("t")], after: 10, through: 40, pageSize: 7)
        #expect(events.map(\.id) == (11...40).map { "\($0)" })
        let onlyA = try await replayed(store, [.user("a")], after: 0, through: 50)
        #expect(onlyA.map(\.id) == stride(from: 1, through: 49, by: 2).map { "\($0)" })
    }

    @Test func retentionByCountSendsAResetWithTheOldestIdMinusOne() async throws {
        let (_, store) = makeStore(maxEvents: 10)
        for _ in 0..<25 { _ = try await store.publish([newEvent([.user("a")])], publisher: "p") }
        #expect(store.count == 10)
        let events = try await replayed(store, [.user("a")], after: 3, through: 25)
        #expect(events.first == Received(id: "15", type: "tidings.reset", data: #"{"reason":"history_expired","last_event_id":"3","oldest_available":"16"}"#))
        #expect(events.dropFirst().map(\.id) == (16...25).map { "\($0)" })
        // Resuming from the reset's id (what a browser sends next) gives no second reset.
        let again = try await replayed(store, [.user("a")], after: 15, through: 25)
        #expect(again.map(\.type).allSatisfy { $0 == "test" })
        #expect(again.count == 10)
    }

    @Test func retentionByAgeWithATestClock() async throws {
        let clock = ManualClock(.init(timeIntervalSince1970: 0))
        let (_, store) = makeStore(retention: .seconds(60), clock: clock)
        _ = try await store.publish([newEvent([.user("a")])], publisher: "p")  // 1 at t=0
        clock.advance(by: 30)
        _ = try await store.publish([newEvent([.user("a")])], publisher: "p")  // 2 at t=30
        clock.advance(by: 31)  // t=61: event 1 expired, 2 kept
        let events = try await replayed(store, [.user("a")], after: 0, through: 2)
        #expect(events.map(\.type) == ["tidings.reset", "test"])
        #expect(events.map(\.id) == ["1", "2"])
        clock.advance(by: 60)  // everything expired
        let none = try await replayed(store, [.user("a")], after: 1, through: 2)
        #expect(none == [Received(id: "2", type: "tidings.reset", data: #"{"reason":"history_expired","last_event_id":"1","oldest_available":null}"#)])
        #expect(try await replayed(store, [.user("a")], after: 2, through: 2).isEmpty)
    }

    @Test func noResetWhenNothingWasLost() async throws {
        let (_, store) = makeStore()
        for _ in 0..<5 { _ = try await store.publish([newEvent([.user("a")])], publisher: "p") }
        #expect(try await replayed(store, [.user("a")], after: 0, through: 5).map(\.type) == Array(repeating: "test", count: 5))
    }

    @Test func idempotencyKeysArePerPublisherAndStoreNothingTwice() async throws {
        let (_, store) = makeStore()
        let first = try await store.publish([newEvent([.user("a")], key: "k")], publisher: "p1")
        let again = try await store.publish([newEvent([.user("a")], key: "k")], publisher: "p1")
        let other = try await store.publish([newEvent([.user("a")], key: "k")], publisher: "p2")
        let inBatch = try await store.publish([newEvent([.user("a")], key: "z"), newEvent([.user("a")], key: "z")], publisher: "p1")
        #expect(first == [1])
        #expect(again == [1])
        #expect(other == [2])
        #expect(inBatch == [3, 3])
        #expect(store.count == 3)
    }

    /// Publishers run flat out while subscribers join at random moments, each resuming from a
    /// random earlier id: every subscriber must see every id after its resume point exactly once,
    /// in order, across the replay/live seam. Each subscriber goes the way of a server stream:
    /// registered holding, replay through its horizon, release, then live delivery through an
    /// attached driver.
    @Test func seamHasNoGapAndNoDuplicateUnderConcurrentPublishing() async throws {
        let (bus, store) = makeStore(maxEvents: 100_000)
        let total = 4_000
        let publishers = 4
        let subscribers = 40
        try await withThrowingTaskGroup(of: [String].self) { group in
            for _ in 0..<publishers {
                group.addTask {
                    for _ in 0..<(total / publishers) {
                        _ = try await store.publish([newEvent([.topic("s")])], publisher: "p")
                        if Bool.random() { await Task.yield() }
                    }
                    return []
                }
            }
            for n in 0..<subscribers {
                group.addTask {
                    try await Task.sleep(for: .microseconds(Int.random(in: 0...20_000)))
                    let resume = EventID(Int.random(in: 0...max(0, Int(bus.lastDelivered))))
                    let (sub, horizon) = try bus.subscribe(user: "s\(n)", targets: [.topic("s")], hold: true)
                    defer { bus.unsubscribe(sub) }
                                var seen: [String] = []
                    try await Replay.run(store: store, targets: [.topic("s")], after: resume, through: horizon) { frames in
                        seen.append(contentsOf: frames.map { String($0.id!) })
                    }
                    sub.release(afterReplayThrough: horizon)
                    let driver = DrainingDriver(attachingTo: sub)
                    while seen.last != "\(total)" {
                        guard case .success(let batch) = try await driver.nextBatch() else { break }
                        seen.append(contentsOf: batch.map { String($0.id!) })
                    }
                    let expected = ((Int(resume) + 1)...total).map { "\($0)" }
                    #expect(seen == expected, "subscriber \(n) resumed after \(resume)")
                    return seen
                }
            }
            var finished = 0
            for try await _ in group { finished += 1 }
            #expect(finished == publishers + subscribers)
        }
    }
}
