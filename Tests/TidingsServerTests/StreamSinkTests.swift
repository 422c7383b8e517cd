import Foundation
import Logging
import NIOCore
import NIOEmbedded
import Testing
import TidingsCore
@testable import TidingsServer

/// Stands for the socket: while stalled it takes nothing, so what the sink wrote stays pending in
/// the channel (its write promises open), as NIO keeps it while a socket does not take data.
private final class StalledSocket: ChannelOutboundHandler {
    typealias OutboundIn = NIOAny
    private var context: ChannelHandlerContext?
    private var stalled = false
    private var flushHeld = false

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func flush(context: ChannelHandlerContext) {
        if stalled { flushHeld = true } else { context.flush() }
    }

    func stall() {
        stalled = true
    }

    /// Takes everything held back.
    func unstall() {
        stalled = false
        if flushHeld, let context {
            flushHeld = false
            context.flush()
        }
    }
}

/// One live stream driven by a ``StreamSink`` on an `EmbeddedChannel`: no socket, so no direct
/// writes either (the channel exposes no descriptor) — everything goes through the pipeline, and
/// the loop runs only when the test says so.
private struct EmbeddedStream {
    static let expiresAt = NIODeadline.now() + .seconds(3600)
    let loop = EmbeddedEventLoop()
    let channel: EmbeddedChannel
    let socket = StalledSocket()
    let bus: EventBus
    let sink: StreamSink
    private var nextID: EventID = 1

    init(maxQueue: Int) throws {
        channel = EmbeddedChannel(loop: loop)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        bus = EventBus(limits: .init(maxQueue: maxQueue))
        let subscription = try bus.subscribe(user: "a", targets: [.user("a")], expiresAt: Self.expiresAt, hold: false).subscription
        sink = StreamSink(
            channel: channel, subscription: subscription, framing: .sse, bus: bus, logger: Logger(label: "tidings.test"),
            batcher: LoopBatcher(loop: loop))
        try sink.adopt(channel)
        // Nearest the socket, before the sink's wire handler.
        try channel.pipeline.syncOperations.addHandler(socket, position: .first)
        sink.attach()
    }

    var subscription: Subscription { sink.subscription }

    /// Publishes the next event to the stream; returns its id. The loop does not run.
    @discardableResult
    mutating func publish() -> EventID {
        let id = nextID
        nextID += 1
        bus.deliver(Event(id: id, targets: [.user("a")], type: EventType("t")!, data: "\(id)", createdAt: Date()))
        return id
    }

    /// Publishes the next event, then runs the loop (the sink's drain).
    @discardableResult
    mutating func deliver() -> EventID {
        defer { loop.run() }
        return publish()
    }

    /// The socket stops taking data and NIO says so; then two events: the first is written and
    /// stays in NIO, the second stays queued: the sink waits for writability.
    /// - Returns: their ids.
    mutating func stall() -> [EventID] {
        socket.stall()
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        loop.run()
        return [deliver(), deliver()]
    }

    /// The socket takes everything again and NIO says so.
    func unstall() {
        socket.unstall()
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        loop.run()
    }

    /// Ends the stream for `reason` the way the gateway does, then runs the loop.
    mutating func end(_ reason: StreamEnd) {
        switch reason {
        case .slowConsumer:
            while subscription.endReason == nil { publish() }
        case .tokenExpired:
            bus.tick(now: Self.expiresAt, keepAlive: .hours(2))
        case .shutdown:
            bus.shutdown()
        case .clientClosed, .keepAliveTimeout, .protocolError:
            subscription.finish(reason)
        }
        loop.run()
    }

    /// What the socket took since the last call, as text.
    func written() throws -> String {
        var text = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        return text
    }

    /// The ids of the events the socket took since the last call, in order.
    func writtenIDs() throws -> [EventID] {
        try written().components(separatedBy: "id: ").dropFirst().compactMap { EventID($0.prefix(while: \.isNumber)) }
    }
}

@Suite("A stream's channel handling (EmbeddedChannel)")
struct StreamSinkTests {
    @Test func liveEventsAreWrittenAsChunksInOrder() throws {
        var stream = try EmbeddedStream(maxQueue: 10)
        let first = stream.deliver()
        let second = stream.deliver()
        let chunks = [first, second].map { (id: EventID) in
            String(buffer: SSEFrame.httpChunk(SSEFrame.event(id: id, type: EventType("t")!, data: "\(id)")))
        }
        #expect(try stream.written() == chunks.joined())
        #expect(stream.channel.isActive)
    }

    @Test func aStreamThatWaitedForWritabilityGoesOnInOrder() throws {
        var stream = try EmbeddedStream(maxQueue: 10)
        let first = stream.deliver()
        #expect(try stream.writtenIDs() == [first])
        let held = stream.stall() + [stream.deliver()]
        #expect(try stream.writtenIDs() == [], "nothing reached the stalled socket")
        stream.unstall()
        #expect(try stream.writtenIDs() == held)
        #expect(stream.channel.isActive)
        #expect(stream.bus.subscriptionCount == 1)
    }

    @Test(arguments: [StreamEnd.tokenExpired, .shutdown])
    func anEndWhileWritableWritesTheLastChunkThenCloses(reason: StreamEnd) throws {
        var stream = try EmbeddedStream(maxQueue: 10)
        let id = stream.deliver()
        stream.end(reason)
        let text = try stream.written()
        #expect(text.hasSuffix(String(buffer: SSEFrame.lastChunk)))
        #expect(text.contains("id: \(id)\n"))
        #expect(!stream.channel.isActive)
        #expect(stream.bus.subscriptionCount == 0)
    }

    /// A drain (SIGTERM) ends a stream after the events already queued for it, with a
    /// reconnection delay of its own before the last chunk.
    @Test func aDrainWritesTheQueuedEventsThenItsRetryThenTheLastChunk() throws {
        var stream = try EmbeddedStream(maxQueue: 10)
        stream.deliver()
        _ = try stream.written()
        // Queued while the loop is busy elsewhere; then the drain reaches this stream.
        let queued = [stream.publish(), stream.publish()]
        stream.subscription.finishDraining(retryMilliseconds: 4_321)
        stream.loop.run()
        let text = try stream.written()
        #expect(text.contains("id: \(queued[0])\n") && text.contains("id: \(queued[1])\n"), "\(text)")
        #expect(text.hasSuffix(String(buffer: SSEFrame.httpChunk(ByteBuffer(string: "retry: 4321\n\n"))) + String(buffer: SSEFrame.lastChunk)))
        #expect(!stream.channel.isActive)
        #expect(stream.bus.subscriptionCount == 0)
    }

    @Test func aQueueThatOverflowsBeforeItsDrainClosesWithoutAGoodbye() throws {
        var stream = try EmbeddedStream(maxQueue: 3)
        stream.deliver()
        _ = try stream.written()
        // The loop is busy elsewhere: the queue overflows before the stream is drained.
        stream.end(.slowConsumer)
        #expect(!stream.channel.isActive)
        #expect(try stream.written() == "")
    }

    /// A client that stopped reading: the stream waits for writability when it ends. It cannot
    /// take a goodbye, and must not keep its connection until it reads again.
    @Test(arguments: [StreamEnd.slowConsumer, .tokenExpired, .shutdown])
    func anEndWhileWaitingForWritabilityClosesAtOnce(reason: StreamEnd) throws {
        var stream = try EmbeddedStream(maxQueue: 3)
        stream.deliver()
        _ = stream.stall()
        #expect(stream.channel.isActive, "a stalled stream is kept while its queue has room")
        stream.end(reason)
        #expect(stream.subscription.endReason == reason)
        #expect(!stream.channel.isActive, "the connection is closed at once")
        #expect(stream.bus.subscriptionCount == 0)
    }
}
