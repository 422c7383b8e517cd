import Foundation
import NIOCore
import Testing
@testable import TidingsCore

/// Resume points a stream cannot simply replay from: an instance behind the client, history
/// cut while a slow client pages through it, ids from before a restart or above everything.
@Suite("Resume points and resets")
struct ResumeTests {
    /// Replays like a stream does, releases the subscription at the outcome's floor, and
    /// returns the parsed frames and the outcome.
    private func replay(
        _ store: any EventStore, _ targets: Set<Target>, after: EventID, through: EventID, pageSize: Int = 500,
        during: (@Sendable (Int) -> Void)? = nil
    ) async throws -> ([Received], Replay.Outcome) {
        var events: [Received] = []
        var pages = 0
        let outcome = try await Replay.run(store: store, targets: targets, after: after, through: through, pageSize: pageSize) { frames in
            events.append(contentsOf: frames.map(Received.init))
            pages += 1
            during?(pages)
        }
        return (events, outcome)
    }

    @Test func anInstanceBehindTheResumePointNeverRepeatsWhatTheClientHas() async throws {
        // The store (and the instance the client read from) is at 10; this instance's bus has
        // delivered only 4 of them so far.
        let ahead = EventBus()
        let store = MemoryEventStore(bus: ahead, clock: ManualClock(Date(timeIntervalSince1970: 0)))
        var published: [Event] = []
        for n in 0..<10 {
            let id = try await store.publish([newEvent([.user("a")], data: "\(n)")], publisher: "p")[0]
            published.append(Event(id: id, targets: [.user("a")], type: EventType("test")!, data: "\(n)", createdAt: Date()))
        }
        let behind = EventBus()
        for event in published.prefix(4) { behind.deliver(event) }
        let (subscription, horizon) = try behind.subscribe(user: "a", targets: [.user("a")], hold: true)
        #expect(horizon == 4)

        let (frames, outcome) = try await replay(store, [.user("a")], after: 8, through: horizon)
        #expect(frames.isEmpty)
        #expect(outcome.floor == 8)
        subscription.release(afterReplayThrough: outcome.floor)
        let driver = DrainingDriver(attachingTo: subscription)
        // The lagging instance catches up: 5…10 reach its bus; only 9 and 10 are new to the client.
        for event in published.dropFirst(4) { behind.deliver(event) }
        #expect(ids(try await driver.collect(2)) == [9, 10])
    }

    @Test func everyPageIsCheckedForAGapNotOnlyTheFirst() async throws {
        let clock = ManualClock(Date(timeIntervalSince1970: 0))
        let bus = EventBus()
        let store = MemoryEventStore(bus: bus, configuration: .init(retention: .seconds(100)), clock: clock)
        // 1–3 at t=0, 4–6 at t=10, 7–10 at t=20.
        for (count, at) in [(3, 0.0), (3, 10.0), (4, 20.0)] {
            clock.set(Date(timeIntervalSince1970: at))
            for _ in 0..<count { _ = try await store.publish([newEvent([.user("a")])], publisher: "p") }
        }
        // While the client reads the first page, time passes: 1–6 expire.
        let (events, outcome) = try await replay(store, [.user("a")], after: 0, through: 10, pageSize: 3) { page in
            if page == 1 { clock.set(Date(timeIntervalSince1970: 115)) }
        }
        #expect(events.map(\.id) == ["1", "2", "3", "6", "7", "8", "9", "10"])
        #expect(events[3] == Received(id: "6", type: "tidings.reset", data: #"{"reason":"history_expired","last_event_id":"3","oldest_available":"7"}"#))
        #expect(outcome.resets == 1)
        #expect(outcome.replayed == 7)
    }

    @Test func memoryIdsStartFromTheClockSoARestartNeverReusesThem() async throws {
        let clock = ManualClock(Date(timeIntervalSince1970: 1_800_000_000))
        let first = MemoryEventStore(bus: EventBus(), clock: clock)
        let before = try await first.publish((0..<5).map { _ in newEvent([.user("a")]) }, publisher: "p")
        #expect(before.first == 1_800_000_000_000_001)
        #expect(first.historyStart == 1_800_000_000_000_000)
        // The process restarts a second later: everything new is above everything old.
        clock.advance(by: 1)
        let bus = EventBus()
        let second = MemoryEventStore(bus: bus, clock: clock)
        #expect(bus.lastDelivered == second.historyStart)
        let after = try await second.publish([newEvent([.user("a")])], publisher: "p")
        #expect(after[0] > before.last!)
        #expect(try await second.lastIssuedID() == after[0])
    }

    @Test func aResumePointFromBeforeTheStartGetsUnknownPositionThenHistory() async throws {
        let clock = ManualClock(Date(timeIntervalSince1970: 1_800_000_000))
        let bus = EventBus()
        let store = MemoryEventStore(bus: bus, clock: clock)
        let start = store.historyStart
        // Nothing issued yet: the reset's id is the position before the first id.
        let (empty, emptyOutcome) = try await replay(store, [.user("a")], after: 27, through: bus.lastDelivered)
        #expect(empty == [Received(id: "\(start)", type: "tidings.reset", data: #"{"reason":"unknown_position","last_event_id":"27","oldest_available":null}"#)])
        #expect(emptyOutcome.floor == start)

        let ids = try await store.publish((0..<3).map { _ in newEvent([.user("a")]) }, publisher: "p")
        let (events, _) = try await replay(store, [.user("a")], after: 27, through: bus.lastDelivered)
        #expect(events.map(\.id) == ["\(start)"] + ids.map { "\($0)" })
        #expect(events[0].type == "tidings.reset")
        #expect(events[0].data == #"{"reason":"unknown_position","last_event_id":"27","oldest_available":"\#(ids[0])"}"#)
        // The reset's id resumes cleanly; so does 0 (everything retained).
        let (again, _) = try await replay(store, [.user("a")], after: start, through: bus.lastDelivered)
        #expect(again.map(\.id) == ids.map { "\($0)" })
        let (fromZero, _) = try await replay(store, [.user("a")], after: 0, through: bus.lastDelivered)
        #expect(fromZero.map(\.id) == ids.map { "\($0)" })
    }

    @Test func aResumePointAboveEveryIdIssuedGetsUnknownPositionAtTheLatestId() async throws {
        let bus = EventBus()
        let store = MemoryEventStore(bus: bus, clock: ManualClock(Date(timeIntervalSince1970: 1_800_000_000)))
        let ids = try await store.publish((0..<3).map { _ in newEvent([.user("a")]) }, publisher: "p")
        let bogus = ids[2] + 1_000
        let (subscription, horizon) = try bus.subscribe(user: "a", targets: [.user("a")], hold: true)
        let (events, outcome) = try await replay(store, [.user("a")], after: bogus, through: horizon)
        #expect(events == [Received(
            id: "\(ids[2])", type: "tidings.reset",
            data: #"{"reason":"unknown_position","last_event_id":"\#(bogus)","oldest_available":"\#(ids[0])"}"#)])
        #expect(outcome.floor == ids[2])
        subscription.release(afterReplayThrough: outcome.floor)
        let driver = DrainingDriver(attachingTo: subscription)
        // Live events go on after the reset.
        let next = try await store.publish([newEvent([.user("a")])], publisher: "p")
        #expect(TidingsCoreTests.ids(try await driver.collect(1)) == next)
    }
}
