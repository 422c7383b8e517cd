import Foundation
import NIOCore
import Synchronization
import Testing
@testable import TidingsCore

@Suite("Event bus")
struct EventBusTests {
    private func event(_ id: EventID?, _ targets: [Target]) -> Event {
        Event(id: id, targets: targets, type: EventType("t")!, data: "\(id ?? 0)", createdAt: Date())
    }

    @Test func fansOutToManySubscribersWithOneSharedFrame() async throws {
        let bus = EventBus()
        let drivers = (0..<1_000).map { _ in
            DrainingDriver(attachingTo: try! bus.subscribe(user: "u\(Int.random(in: 0..<10))", targets: [.topic("all")], hold: false).subscription)
        }
        let delivered = bus.deliver(event(1, [.topic("all")]))
        #expect(delivered == 1_000)
        var shared: Set<ObjectIdentifier> = []
        for driver in drivers {
            guard case .success(let batch) = try await driver.nextBatch() else {
                Issue.record("no batch")
                return
            }
            #expect(ids(batch) == [1])
            if let first = batch.first { shared.insert(ObjectIdentifier(first.event)) }
        }
        #expect(shared.count == 1, "one event shared by every subscriber")
    }

    @Test func routesByTarget() async throws {
        let bus = EventBus()
        let alice = DrainingDriver(attachingTo: try! bus.subscribe(user: "alice", targets: [.user("alice")], hold: false).subscription)
        let bob = DrainingDriver(attachingTo: try! bus.subscribe(user: "bob", targets: [.user("bob"), .topic("news")], hold: false).subscription)
        bus.deliver(event(1, [.user("alice")]))
        bus.deliver(event(2, [.user("bob")]))
        bus.deliver(event(3, [.topic("news")]))
        bus.deliver(event(4, [.topic("other")]))
        bus.deliver(event(5, [.user("alice"), .topic("news")]))
        #expect(ids(try await alice.collect(2)) == [1, 5])
        #expect(ids(try await bob.collect(3)) == [2, 3, 5])
    }

    @Test func anEventForSeveralOfASubscribersTargetsArrivesOnce() async throws {
        let bus = EventBus()
        let sub = DrainingDriver(attachingTo: try! bus.subscribe(user: "a", targets: [.user("a"), .topic("x"), .topic("y")], hold: false).subscription)
        #expect(bus.deliver(event(1, [.user("a"), .topic("x"), .topic("y")])) == 1)
        bus.deliver(event(2, [.topic("y")]))
        #expect(ids(try await sub.collect(2)) == [1, 2])
    }

    @Test func neverRepeatsOrGoesBackwards() async throws {
        let bus = EventBus()
        let sub = DrainingDriver(attachingTo: try! bus.subscribe(user: "a", targets: [.user("a")], hold: false).subscription)
        bus.deliver(event(2, [.user("a")]))
        #expect(bus.deliver(event(2, [.user("a")])) == 0)
        #expect(bus.deliver(event(1, [.user("a")])) == 0)
        bus.deliver(event(nil, [.user("a")]))
        bus.deliver(event(3, [.user("a")]))
        let batch = try await sub.collect(3)
        #expect(batch.map(\.id) == [2, nil, 3])
    }

    @Test func slowConsumerIsDisconnectedAtMaxQueue() async throws {
        let bus = EventBus(limits: .init(maxQueue: 3))
        let slow = try! bus.subscribe(user: "a", targets: [.user("a")], hold: false).subscription
        let fast = DrainingDriver(attachingTo: try! bus.subscribe(user: "b", targets: [.user("a")], hold: false).subscription)
        for id in 1...3 { bus.deliver(event(EventID(id), [.user("a")])) }
        #expect(ids(try await fast.collect(3)) == [1, 2, 3])
        #expect(slow.endReason == nil)
        bus.deliver(event(4, [.user("a")]))
        #expect(slow.endReason == .slowConsumer)
        // Its driver, attached late (a stream still replaying), is told the end and nothing else.
        #expect(try await DrainingDriver(attachingTo: slow).nextBatch().endReason == .slowConsumer)
        #expect(ids(try await fast.collect(1)) == [4])
    }

    @Test func connectionLimits() {
        let bus = EventBus(limits: .init(maxConnections: 3, maxConnectionsPerUser: 2))
        let a1 = try! bus.subscribe(user: "a", targets: [.user("a")], hold: false).subscription
        _ = try! bus.subscribe(user: "a", targets: [.user("a")], hold: false)
        #expect(throws: EventBus.Rejection.tooManyConnectionsForUser) { try bus.subscribe(user: "a", targets: [.user("a")], hold: false) }
        _ = try! bus.subscribe(user: "b", targets: [.user("b")], hold: false)
        #expect(throws: EventBus.Rejection.tooManyConnections) { try bus.subscribe(user: "c", targets: [.user("c")], hold: false) }
        bus.unsubscribe(a1)
        #expect(throws: Never.self) { try bus.subscribe(user: "a", targets: [.user("a")], hold: false) }
    }

    @Test func heldEventsWaitForReleaseAndDropWhatReplayCovered() async throws {
        let bus = EventBus(lastDelivered: 10)
        let (sub, horizon) = try! bus.subscribe(user: "a", targets: [.user("a")], hold: true)
        #expect(horizon == 10)
        bus.deliver(event(11, [.user("a")]))
        bus.deliver(event(12, [.user("a")]))
        sub.release(afterReplayThrough: 11)
        #expect(ids(try await DrainingDriver(attachingTo: sub).collect(1)) == [12])
    }

    @Test func keepAliveAndExpiryComeFromTheTicker() async throws {
        let bus = EventBus()
        let idle = DrainingDriver(attachingTo: try! bus.subscribe(user: "a", targets: [.user("a")], hold: false).subscription)
        let expiring = DrainingDriver(
            attachingTo: try! bus.subscribe(user: "b", targets: [.user("b")], expiresAt: .now() + .seconds(5), hold: false).subscription)
        bus.tick(now: .now() + .seconds(2), keepAlive: .seconds(1))
        guard case .keepAlive = try await idle.next() else {
            Issue.record("expected a keep-alive")
            return
        }
        bus.tick(now: .now() + .seconds(6), keepAlive: .seconds(100))
        #expect(try await expiring.nextBatch().endReason == .tokenExpired)
        #expect(idle.subscription.endReason == nil)
    }

    @Test func shutdownEndsEveryStreamAndRefusesNewOnes() async throws {
        let bus = EventBus()
        let sub = DrainingDriver(attachingTo: try! bus.subscribe(user: "a", targets: [.user("a")], hold: false).subscription)
        bus.shutdown()
        #expect(try await sub.nextBatch().endReason == .shutdown)
        #expect(throws: EventBus.Rejection.shuttingDown) { try bus.subscribe(user: "a", targets: [.user("a")], hold: false) }
    }
}

extension Result where Success == [Delivery], Failure == StreamEndError {
    var endReason: StreamEnd? {
        if case .failure(let end) = self { return end.reason }
        return nil
    }
}

/// A driver that records when the subscription asks to be drained; with a `kick`, it behaves
/// like a per-loop batcher: the first driver queued since the last kick returns the kick.
private final class RecordingDriver: SubscriptionDriver {
    let schedules = Mutex(0)
    let kick: CountingKick?

    init(kick: CountingKick? = nil) {
        self.kick = kick
    }

    func schedule() -> (any DrainKick)? {
        schedules.withLock { $0 += 1 }
        return kick?.queue()
    }
    var count: Int { schedules.withLock { $0 } }
}

private final class CountingKick: DrainKick {
    private let state = Mutex((pending: false, kicks: 0))

    func queue() -> (any DrainKick)? {
        state.withLock { state in
            if state.pending { return nil }
            state.pending = true
            return self
        }
    }

    func kick() {
        state.withLock { $0 = (false, $0.kicks + 1) }
    }

    var kicks: Int { state.withLock { $0.kicks } }
}

@Suite("Subscription driven by a driver")
struct DrivenSubscriptionTests {
    private func event(_ id: EventID) -> Event {
        Event(id: id, targets: [.user("a")], type: EventType("t")!, data: "\(id)", createdAt: Date())
    }

    @Test func eventsKeepAlivesAndTheEndAreDrainedAndTheEndIsReportedOnce() {
        let bus = EventBus(limits: .init(maxQueue: 10))
        let interrupted = Mutex(false)
        let subscription = try! bus.subscribe(user: "a", targets: [.user("a")], hold: false, interrupt: { interrupted.withLock { $0 = true } }).subscription
        let driver = RecordingDriver()
        subscription.attach(driver)
        #expect(driver.count == 0, "nothing to do yet")
        bus.deliver(event(1))
        bus.deliver(event(2))
        #expect(driver.count == 1, "one drain for a burst")
        var buffer: [Delivery] = []
        guard case .events = subscription.drain(into: &buffer) else { Issue.record("no events"); return }
        #expect(buffer.compactMap(\.id) == [1, 2])
        #expect(subscription.drain(into: &buffer) == nil)
        subscription.finish(.tokenExpired)
        #expect(driver.count == 2)
        #expect(!interrupted.withLock { $0 }, "a driver writes the end itself")
        guard case .end(.tokenExpired) = subscription.drain(into: &buffer) else { Issue.record("no end"); return }
        #expect(subscription.drain(into: &buffer) == nil, "the end is reported once")
        subscription.finish(.clientClosed)
        #expect(subscription.endReason == .tokenExpired, "the first reason wins")
        #expect(driver.count == 2)
    }

    @Test func aSlowConsumerIsCutOffByItsDriver() {
        let bus = EventBus(limits: .init(maxQueue: 2))
        let interrupted = Mutex(false)
        let subscription = try! bus.subscribe(user: "a", targets: [.user("a")], hold: false, interrupt: { interrupted.withLock { $0 = true } }).subscription
        let driver = RecordingDriver()
        subscription.attach(driver)
        for id in 1...3 { bus.deliver(event(EventID(id))) }
        #expect(bus.subscriptionCount == 0, "it left the bus at once")
        #expect(!interrupted.withLock { $0 })
        var buffer: [Delivery] = []
        guard case .end(.slowConsumer) = subscription.drain(into: &buffer) else { Issue.record("no end"); return }
        #expect(buffer.isEmpty)
    }

    @Test func attachingAfterTheEndSchedulesTheDriver() {
        let bus = EventBus(limits: .init(maxQueue: 2))
        let subscription = try! bus.subscribe(user: "a", targets: [.user("a")], hold: true).subscription
        subscription.finish(.shutdown)
        let driver = RecordingDriver()
        subscription.attach(driver)
        #expect(driver.count == 1)
        var buffer: [Delivery] = []
        guard case .end(.shutdown) = subscription.drain(into: &buffer) else { Issue.record("no end"); return }
    }

    @Test func anEventForManyDrivenStreamsKicksTheirLoopOnce() {
        let bus = EventBus(limits: .init(maxQueue: 10))
        let loop = CountingKick()
        let drivers = (0..<50).map { _ in RecordingDriver(kick: loop) }
        let subscriptions = drivers.map { driver in
            let subscription = try! bus.subscribe(user: "u", targets: [.topic("all")], hold: false).subscription
            subscription.attach(driver)
            return subscription
        }
        bus.deliver(Event(id: 1, targets: [.topic("all")], type: EventType("t")!, data: "1", createdAt: Date()))
        #expect(drivers.allSatisfy { $0.count == 1 }, "every stream was queued")
        #expect(loop.kicks == 1, "one drain for the whole event")
        // The loop drains them; then keep-alives for all of them are one kick too.
        var buffer: [Delivery] = []
        for subscription in subscriptions {
            _ = subscription.drain(into: &buffer)
            buffer.removeAll()
        }
        bus.tick(now: .now() + .seconds(60), keepAlive: .seconds(1))
        #expect(loop.kicks == 2)
        #expect(drivers.allSatisfy { $0.count == 2 })
    }
}
