import NIOCore
import Testing
import TidingsCore

@testable import TidingsPostgres

/// The ordering state machine without a database.
struct DeliveryOrderTests {
    let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000)

    func snapshot(_ xmin: UInt64, _ xmax: UInt64, _ xip: [UInt64] = []) -> PGSnapshot {
        PGSnapshot(xmin: xmin, xmax: xmax, inProgress: Set(xip))
    }

    func delivered(_ outcome: DeliveryOrder.Outcome<EventID>) -> [String] {
        outcome.steps.map {
            switch $0 {
            case .deliver(let id): "\(id)"
            case .advance(let id): "advance \(id)"
            }
        }
    }

    @Test func parsesSnapshots() {
        #expect(PGSnapshot("10:20:12,15") == snapshot(10, 20, [12, 15]))
        #expect(PGSnapshot("7:7:") == snapshot(7, 7))
        #expect(PGSnapshot("x:1:") == nil)
        #expect(PGSnapshot("1:2") == nil)
    }

    @Test func widensThirtyTwoBitTransactionIDs() {
        let epoch1 = UInt64(1) << 32
        #expect(snapshot(0, 500).widen(400) == 400)
        #expect(snapshot(0, epoch1 + 10).widen(5) == epoch1 + 5)
        #expect(snapshot(0, epoch1 + 10).widen(20) == epoch1 + 20)
        // Just before the epoch wrapped.
        #expect(snapshot(0, epoch1 + 10).widen(UInt32.max - 3) == epoch1 - 4)
        // Assigned beyond xmax, across the wrap.
        #expect(snapshot(0, epoch1 - 2).widen(3) == epoch1 + 3)
    }

    @Test func contiguousRowsAreDelivered() {
        var order = DeliveryOrder(lastDelivered: 9, orderWait: .seconds(10))
        let outcome = order.process(rows: [10, 11, 12], id: { $0 }, snapshot: snapshot(100, 100), inProgress: nil, now: t0)
        #expect(delivered(outcome) == ["10", "11", "12"])
        #expect(outcome.status == .idle)
        #expect(order.lastDelivered == 12)
    }

    @Test func aHoleWaitsForTheTransactionsInProgressThenDelivers() {
        var order = DeliveryOrder(lastDelivered: 9, orderWait: .seconds(10))
        // 11 committed; 10 is missing.
        var outcome = order.process(rows: [11], id: { $0 }, snapshot: snapshot(90, 100, [95]), inProgress: nil, now: t0)
        #expect(outcome.steps.isEmpty)
        #expect(outcome.status == .needsHoleRead)
        // The hole read: 95, 100 and 102 (assigned, beyond xmax) are in progress.
        outcome = order.process(rows: [11], id: { $0 }, snapshot: snapshot(90, 101, [95, 100]), inProgress: [95, 100, 102], now: t0)
        #expect(outcome.steps.isEmpty)
        #expect(outcome.status == .waiting)
        // 95 ended, 102 still running: keep waiting.
        outcome = order.process(rows: [11], id: { $0 }, snapshot: snapshot(100, 104, [100, 102]), inProgress: nil, now: t0)
        #expect(outcome.steps.isEmpty)
        #expect(outcome.status == .waiting)
        // A transaction that started after the hole read (105) does not matter; 10 committed.
        outcome = order.process(rows: [10, 11], id: { $0 }, snapshot: snapshot(105, 106, [105]), inProgress: nil, now: t0)
        #expect(delivered(outcome) == ["10", "11"])
        #expect(outcome.status == .idle)
        #expect(order.wait == nil)
    }

    @Test func aRolledBackHoleIsPassedOnceItsTransactionsEnded() {
        var order = DeliveryOrder(lastDelivered: 9, orderWait: .seconds(10))
        _ = order.process(rows: [11], id: { $0 }, snapshot: snapshot(95, 101, [95]), inProgress: [95], now: t0)
        // 95 rolled back: 10 never appears. 12 committed meanwhile (above the wait's range).
        let outcome = order.process(rows: [11, 13], id: { $0 }, snapshot: snapshot(110, 110), inProgress: nil, now: t0)
        #expect(delivered(outcome) == ["advance 10", "11"])
        // 12 is a new hole above the settled range: a new hole read is needed.
        #expect(outcome.status == .needsHoleRead)
        #expect(order.lastDelivered == 11)
    }

    @Test func theWaitIsBoundedByOrderWait() {
        var order = DeliveryOrder(lastDelivered: 9, orderWait: .milliseconds(100))
        _ = order.process(rows: [11, 12], id: { $0 }, snapshot: snapshot(95, 101, [95]), inProgress: [95], now: t0)
        var outcome = order.process(rows: [11, 12], id: { $0 }, snapshot: snapshot(95, 102, [95]), inProgress: nil, now: t0 + .milliseconds(99))
        #expect(outcome.steps.isEmpty)
        outcome = order.process(rows: [11, 12], id: { $0 }, snapshot: snapshot(95, 102, [95]), inProgress: nil, now: t0 + .milliseconds(100))
        #expect(delivered(outcome) == ["advance 10", "11", "12"])
        #expect(outcome.expired == DeliveryOrder.Expired(from: 10, through: 12, waited: .milliseconds(100)))
        // 10 commits late: it is below the horizon and never delivered live.
        outcome = order.process(rows: [13], id: { $0 }, snapshot: snapshot(96, 102), inProgress: nil, now: t0 + .milliseconds(200))
        #expect(delivered(outcome) == ["13"])
    }

    @Test func holesFilledWhileWaitingEndTheWait() {
        var order = DeliveryOrder(lastDelivered: 0, orderWait: .seconds(10))
        _ = order.process(rows: [2], id: { $0 }, snapshot: snapshot(50, 51, [50]), inProgress: [50], now: t0)
        #expect(order.wait != nil)
        let outcome = order.process(rows: [1, 2], id: { $0 }, snapshot: snapshot(50, 53, [50]), inProgress: nil, now: t0)
        #expect(delivered(outcome) == ["1", "2"])
        #expect(order.wait == nil)
    }
}
