import Foundation
import Testing
import TidingsBench

/// The soak's checks (`tidings bench soak`) must catch what they are there to catch: a lost,
/// repeated or reordered event, a stream left behind, a leaked descriptor, memory that did not
/// come back — and must not fail a clean run or a gap the gateway announced.
@Suite("soak checks")
struct SoakCheckTests {
    /// Topic `t` got ids 10, 20, …, 80 (ids are global: other topics took the ones between).
    private let check = DeliveryCheck(published: ["t": [10, 20, 30, 40, 50, 60, 70, 80]])

    private func events(_ ids: [Int64]) -> [ReceivedEntry] { ids.map(ReceivedEntry.event) }

    @Test func aCompleteRunIsClean() {
        // It joined late (no resume point: live events only), then got everything.
        let verdict = check.check(topic: "t", log: events([30, 40, 50, 60, 70, 80]), survivor: true)
        #expect(verdict.isClean, "\(verdict)")
        #expect(verdict.events == 6)
    }

    @Test func aLostEventIsCaught() {
        let verdict = check.check(topic: "t", log: events([10, 20, 40, 50, 60, 70, 80]), survivor: true)
        #expect(!verdict.isClean)
        #expect(verdict.missing == 1)
    }

    @Test func anEventRepeatedAcrossAResumeIsCaught() {
        // Resumed from 30 but the replay started again at 30.
        let verdict = check.check(topic: "t", log: events([10, 20, 30, 30, 40, 50, 60, 70, 80]), survivor: true)
        #expect(!verdict.isClean)
        #expect(verdict.duplicates == 1)
        #expect(verdict.missing == 0)
    }

    @Test func eventsOutOfOrderAreCaught() {
        let verdict = check.check(topic: "t", log: events([10, 30, 20, 40, 50, 60, 70, 80]), survivor: true)
        #expect(!verdict.isClean)
        #expect(verdict.outOfOrder == 1)
    }

    @Test func anEventOfAnotherTopicIsCaught() {
        let verdict = check.check(topic: "t", log: events([10, 20, 25, 30]), survivor: false)
        #expect(!verdict.isClean)
        #expect(verdict.unknown == 1)
    }

    @Test func anOpenStreamWithoutTheLastEventsIsCaughtAClosedOneIsNot() {
        let open = check.check(topic: "t", log: events([10, 20, 30, 40, 50, 60]), survivor: true)
        #expect(!open.isClean)
        #expect(open.missingAtEnd == 2)
        let closed = check.check(topic: "t", log: events([10, 20, 30, 40, 50, 60]), survivor: false)
        #expect(closed.isClean, "a stream that ended owes nothing after its end")
    }

    @Test func aResetExcusesTheGapItAnnouncesAndNoMore() {
        // History expired: the reset's id is the oldest retained minus one (55), so 60 is next.
        let announced = check.check(topic: "t", log: [.event(10), .event(20), .reset(55), .event(60), .event(70), .event(80)], survivor: true)
        #expect(announced.isClean, "\(announced)")
        #expect(announced.resets == 1)
        #expect(announced.excused == 3, "30, 40 and 50")
        // The same reset, but 60 never came: still a loss.
        let lost = check.check(topic: "t", log: [.event(10), .event(20), .reset(55), .event(70), .event(80)], survivor: true)
        #expect(lost.missing == 1)
    }

    @Test func aLeakedDescriptorIsCaughtOpenStreamsAreDiscounted() {
        let warmedUp = ResourceCheck.Sample(rssBytes: 100 << 20, descriptors: 420, streams: 400)
        // Three streams fewer and three descriptors fewer: nothing leaked.
        let fewer = ResourceCheck(warmedUp: warmedUp, end: .init(rssBytes: 100 << 20, descriptors: 417, streams: 397), peakRSSBytes: 120 << 20)
        #expect(fewer.leakedDescriptors == 0)
        #expect(fewer.isClean)
        // The same streams and one descriptor more: a leak.
        let leaked = ResourceCheck(warmedUp: warmedUp, end: .init(rssBytes: 100 << 20, descriptors: 421, streams: 400), peakRSSBytes: 120 << 20)
        #expect(leaked.leakedDescriptors == 1)
        #expect(!leaked.isClean)
    }

    @Test func memoryThatDidNotComeBackIsCaught() {
        let warmedUp = ResourceCheck.Sample(rssBytes: 200 << 20, descriptors: 20, streams: 0)
        // The slack is the larger of 16 MB and 10 %: 20 MB here.
        let within = ResourceCheck(warmedUp: warmedUp, end: .init(rssBytes: 219 << 20, descriptors: 20, streams: 0), peakRSSBytes: 300 << 20)
        #expect(within.rssLimitBytes == 220 << 20)
        #expect(within.rssBack)
        let grown = ResourceCheck(warmedUp: warmedUp, end: .init(rssBytes: 221 << 20, descriptors: 20, streams: 0), peakRSSBytes: 300 << 20)
        #expect(!grown.rssBack)
        #expect(!grown.isClean)
    }
}
