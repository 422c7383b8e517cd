import Testing
import TidingsCore
@testable import TidingsServer

/// The stream's life as a value, without a channel: every transition and the action it asks for.
@Suite("StreamStateMachine")
struct StreamStateMachineTests {
    private func live(pings: Int? = nil) -> StreamStateMachine {
        var machine = StreamStateMachine(maxUnansweredKeepAlives: pings)
        #expect(machine.attach() == .attach)
        return machine
    }

    @Test func attachesOnceAndNotAfterTheClientLeft() {
        var machine = StreamStateMachine()
        #expect(machine.drainRequested(isWritable: true) == .none, "no live delivery before attach")
        #expect(machine.attach() == .attach)
        #expect(machine.attach() == .none)

        var gone = StreamStateMachine()
        #expect(gone.channelInactive() == .leaveBus)
        #expect(gone.attach() == .none, "a stream whose client left during the handoff is not attached")
    }

    @Test func writesDirectlyOnlyWhileNIOHoldsNothing() {
        var machine = live()
        #expect(machine.mayWriteDirectly)
        machine.pipelineWriteStarted()
        #expect(!machine.mayWriteDirectly)
        #expect(machine.pipelineWriteCompleted() == .none)
        #expect(machine.mayWriteDirectly)
    }

    @Test func parksWhileTheSocketIsFullAndDrainsWhenWritable() {
        var machine = live()
        #expect(machine.drainRequested(isWritable: false) == .take, "nothing pending in NIO: try the socket")
        machine.pipelineWriteStarted()
        #expect(machine.drainRequested(isWritable: false) == .park)
        #expect(machine.state == .waitingForWritability)
        #expect(machine.writabilityChanged(isActive: true, isWritable: false) == .none)
        #expect(machine.writabilityChanged(isActive: false, isWritable: true) == .none, "a closed channel is not drained")
        #expect(machine.writabilityChanged(isActive: true, isWritable: true) == .drain)
        #expect(machine.state == .live)
        #expect(machine.writabilityChanged(isActive: true, isWritable: true) == .none, "only a waiting stream drains")
    }

    @Test(arguments: [StreamEnd.tokenExpired, .shutdown, .clientClosed])
    func anEndWritesAGoodbyeAndClosesOnceNIOHasSentIt(reason: StreamEnd) {
        var machine = live()
        machine.pipelineWriteStarted()
        #expect(machine.streamEnded(reason, goodbyeWhenSlow: false) == .writeGoodbye)
        machine.pipelineWriteStarted()  // the goodbye itself, through NIO
        #expect(machine.goodbyeWritten() == .waitForPipeline)
        #expect(machine.drainRequested(isWritable: true) == .none, "nothing more after the goodbye")
        #expect(machine.pipelineWriteCompleted() == .none)
        #expect(machine.pipelineWriteCompleted() == .close)
        #expect(machine.state == .closing)
        #expect(machine.closeNow() == .none, "closed once")
        #expect(machine.channelInactive() == .leaveBus)
        #expect(machine.channelInactive() == .none)
    }

    @Test func aGoodbyeSentStraightToTheSocketClosesAtOnce() {
        var machine = live()
        #expect(machine.streamEnded(.shutdown, goodbyeWhenSlow: false) == .writeGoodbye)
        #expect(machine.goodbyeWritten() == .close)
    }

    @Test func aSlowConsumerIsCutOffUnlessItsTransportCanSayWhy() {
        var sse = live()
        #expect(sse.streamEnded(.slowConsumer, goodbyeWhenSlow: false) == .close)
        #expect(sse.state == .closing)

        var webSocket = live(pings: 2)
        #expect(webSocket.streamEnded(.slowConsumer, goodbyeWhenSlow: true) == .writeGoodbye)
    }

    @Test func aStreamWaitingForWritabilityGetsNoGoodbye() {
        var machine = live()
        machine.pipelineWriteStarted()
        #expect(machine.drainRequested(isWritable: false) == .park)
        #expect(machine.streamEnded(.tokenExpired, goodbyeWhenSlow: false) == .close)
    }

    @Test func keepAlivesWithoutAnswerNeverCloseAnSSEStream() {
        var machine = live()
        for _ in 0..<10 { #expect(machine.keepAliveDue() == .send) }
    }

    @Test func twoUnansweredPingsClose() {
        var machine = live(pings: 2)
        #expect(machine.keepAliveDue() == .send)
        machine.keepAliveAnswered()
        #expect(machine.keepAliveDue() == .send)
        #expect(machine.keepAliveDue() == .send)
        #expect(machine.unansweredKeepAlives == 2)
        #expect(machine.keepAliveDue() == .close)
        #expect(machine.state == .closing)
    }
}
