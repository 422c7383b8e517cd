import Testing

@testable import TidingsPostgres

/// Group commit's state machine, without a database.
struct GroupCommitQueueTests {
    typealias Queue = GroupCommitQueue<String>

    static func size(_ events: Int, bytes: Int = 10) -> Queue.Size {
        Queue.Size(events: events, bytes: bytes)
    }

    @Test func aRequestThatFindsASlotFreeStartsAtOnceAlone() {
        var queue = Queue(maxInFlight: 2, limit: Self.size(100, bytes: 1000))
        #expect(queue.enqueue("a", size: Self.size(1)) == ["a"])
        #expect(queue.enqueue("b", size: Self.size(1)) == ["b"])
        #expect(queue.inFlight == 2 && queue.queued == 0)
        #expect(queue.finished() == nil)
        #expect(queue.finished() == nil)
        #expect(queue.inFlight == 0)
        // Nothing waited: still alone, no waiting for company.
        #expect(queue.enqueue("c", size: Self.size(1)) == ["c"])
    }

    @Test func requestsArrivingWhileEverySlotIsBusyGoTogetherInArrivalOrder() {
        var queue = Queue(maxInFlight: 1, limit: Self.size(100, bytes: 1000))
        #expect(queue.enqueue("first", size: Self.size(1)) == ["first"])
        for name in ["a", "b", "c"] { #expect(queue.enqueue(name, size: Self.size(1)) == nil) }
        #expect(queue.queued == 3)
        #expect(queue.finished() == ["a", "b", "c"])
        #expect(queue.inFlight == 1 && queue.queued == 0)
        #expect(queue.enqueue("d", size: Self.size(1)) == nil)
        #expect(queue.finished() == ["d"])
        #expect(queue.finished() == nil)
        #expect(queue.inFlight == 0)
    }

    @Test func aGroupStopsAtTheLimitAndAnOversizeRequestGoesAlone() {
        var queue = Queue(maxInFlight: 1, limit: Self.size(10, bytes: 100))
        _ = queue.enqueue("first", size: Self.size(1))
        _ = queue.enqueue("a", size: Self.size(4))
        _ = queue.enqueue("b", size: Self.size(6))
        _ = queue.enqueue("c", size: Self.size(1))  // would fit, but waits behind b: arrival order
        _ = queue.enqueue("huge", size: Self.size(50))
        _ = queue.enqueue("fat", size: Self.size(1, bytes: 95))
        _ = queue.enqueue("d", size: Self.size(1, bytes: 10))
        #expect(queue.finished() == ["a", "b"])
        #expect(queue.finished() == ["c"])
        #expect(queue.finished() == ["huge"])
        #expect(queue.finished() == ["fat"])
        #expect(queue.finished() == ["d"])
        #expect(queue.finished() == nil)
        #expect(queue.inFlight == 0 && queue.queued == 0)
    }

    @Test func neverMoreTransactionsThanSlots() {
        var queue = Queue(maxInFlight: 3, limit: Self.size(2, bytes: 1000))
        var running = 0
        var started: [String] = []
        for n in 0..<20 {
            if let group = queue.enqueue("r\(n)", size: Self.size(1)) {
                running += 1
                started += group
            }
            #expect(running <= 3 && queue.inFlight == running)
            if n % 3 == 2 {
                if let group = queue.finished() { started += group } else { running -= 1 }
            }
        }
        while queue.inFlight > 0 {
            if let group = queue.finished() {
                #expect(group.count <= 2)
                started += group
            }
        }
        #expect(started == (0..<20).map { "r\($0)" })
    }
}
