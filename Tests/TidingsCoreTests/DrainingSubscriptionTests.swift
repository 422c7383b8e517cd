import Foundation
import Synchronization
import Testing
@testable import TidingsCore

/// A stream ended by a drain (``Subscription/finishDraining(retryMilliseconds:)``): unlike any
/// other end it still writes what it had queued.
@Suite("Subscription ended by a drain")
struct DrainingSubscriptionTests {
    private final class CountingDriver: SubscriptionDriver {
        let schedules = Mutex(0)
        func schedule() -> (any DrainKick)? {
            schedules.withLock { $0 += 1 }
            return nil
        }
        var count: Int { schedules.withLock { $0 } }
    }

    private func event(_ id: EventID) -> Event {
        Event(id: id, targets: [.user("a")], type: EventType("t")!, data: "\(id)", createdAt: Date())
    }

    @Test func aDrainedStreamWritesWhatItHadQueuedThenItsGoodbye() {
        let bus = EventBus(limits: .init(maxQueue: 10))
        let subscription = try! bus.subscribe(user: "a", targets: [.user("a")], hold: false).subscription
        let driver = CountingDriver()
        subscription.attach(driver)
        bus.deliver(event(1))
        bus.deliver(event(2))
        #expect(bus.refuseNew().map(\.id) == [subscription.id])
        do {
            _ = try bus.subscribe(user: "b", targets: [.user("b")], hold: false)
            Issue.record("a new stream was accepted during the drain")
        } catch {
            #expect(error == .shuttingDown)
        }
        subscription.finishDraining(retryMilliseconds: 1_234)
        bus.deliver(event(3))  // after its end: not for this stream (the client resumes from 2)
        var buffer: [Delivery] = []
        guard case .events = subscription.drain(into: &buffer) else { Issue.record("the queued events were dropped"); return }
        #expect(buffer.compactMap(\.id) == [1, 2])
        #expect(driver.count == 2, "the driver is asked again, for the end")
        buffer.removeAll()
        guard case .end(.shutdown) = subscription.drain(into: &buffer) else { Issue.record("no end"); return }
        #expect(buffer.isEmpty)
        #expect(subscription.drainRetryMilliseconds == 1_234)
        #expect(subscription.drain(into: &buffer) == nil, "the end is reported once")
    }

    @Test func anyOtherEndDropsTheQueueAndCarriesNoRetry() {
        let bus = EventBus(limits: .init(maxQueue: 10))
        let subscription = try! bus.subscribe(user: "a", targets: [.user("a")], hold: false).subscription
        subscription.attach(CountingDriver())
        bus.deliver(event(1))
        subscription.finish(.shutdown)
        subscription.finishDraining(retryMilliseconds: 5)  // the first end wins
        var buffer: [Delivery] = []
        guard case .end(.shutdown) = subscription.drain(into: &buffer) else { Issue.record("no end"); return }
        #expect(buffer.isEmpty)
        #expect(subscription.drainRetryMilliseconds == nil)
    }
}
