import NIOConcurrencyHelpers
import NIOCore
import NIOHTTPTypes
import Synchronization
import TidingsCore

/// Writes one subscription's live events straight into its connection, on the connection's
/// event loop, without waking a task per event: the bus marks the subscription ready, the loop's
/// ``LoopBatcher`` drains every ready subscription in one pass and flushes each connection once.
///
/// While the connection is not writable (the client reads slower than events arrive) nothing is
/// taken from the subscription's queue, so the queue — bounded by `--max-queue` — is what
/// absorbs the backlog, and the client is disconnected when it overflows.
final class ChannelSink: SubscriptionDriver, @unchecked Sendable {
    // @unchecked: `buffer` and `waitingForWritability` are only touched on `channel.eventLoop`;
    // everything else is immutable.
    let channel: any Channel
    let subscription: Subscription
    private let batcher: LoopBatcher
    private var buffer: [Delivery] = []
    private var waitingForWritability = false
    /// The context of our handler next to the socket: live chunks are written there, below the
    /// HTTP encoder, pre-encoded once per event.
    fileprivate var wire: ChannelHandlerContext?

    init(channel: any Channel, subscription: Subscription, batcher: LoopBatcher) {
        self.channel = channel
        self.subscription = subscription
        self.batcher = batcher
    }

    /// Watches the connection's writability, then takes over live delivery.
    func start() async throws {
        try await channel.eventLoop.submit {
            try self.channel.pipeline.syncOperations.addHandler(WireHandler(sink: self), position: .first)
        }.get()
        subscription.attach(self)
    }

    func schedule() {
        batcher.schedule(self)
    }

    /// On the event loop: writes what the subscription has queued, without flushing.
    /// - Returns: true when something was written.
    func drainOnLoop() -> Bool {
        guard let wire, channel.isActive else { return false }
        guard channel.isWritable else {
            waitingForWritability = true
            return false
        }
        switch subscription.drain(into: &buffer) {
        case .events:
            for delivery in buffer {
                wire.write(NIOAny(delivery.chunk), promise: nil)
            }
            buffer.removeAll(keepingCapacity: true)
            return true
        case .keepAlive:
            wire.write(NIOAny(SSEFrame.keepAliveChunk), promise: nil)
            return true
        case .end, nil:
            return false
        }
    }

    /// On the event loop: sends what was written.
    func flushOnLoop() {
        wire?.flush()
    }

    /// On the event loop: the connection can take data again.
    func writabilityChanged() {
        guard waitingForWritability, channel.isWritable else { return }
        waitingForWritability = false
        if drainOnLoop() { flushOnLoop() }
    }
}

/// One per event loop: collects ready sinks and drains them in one task on the loop, so a burst
/// of events costs one loop hop per loop and one flush per connection, not one per event.
final class LoopBatcher: Sendable {
    let loop: any EventLoop
    private let state = Mutex(State())

    private struct State {
        var ready: [ChannelSink] = []
        var spare: [ChannelSink] = []
        var scheduled = false
    }

    init(loop: any EventLoop) {
        self.loop = loop
    }

    func schedule(_ sink: ChannelSink) {
        let submit = state.withLock { state -> Bool in
            state.ready.append(sink)
            if state.scheduled { return false }
            state.scheduled = true
            return true
        }
        if submit {
            loop.execute { self.drainAll() }
        }
    }

    private func drainAll() {
        var ready = state.withLock { state -> [ChannelSink] in
            state.scheduled = false
            var ready: [ChannelSink] = []
            swap(&ready, &state.spare)
            swap(&ready, &state.ready)
            return ready
        }
        var wrote: [Bool] = []
        wrote.reserveCapacity(ready.count)
        for sink in ready { wrote.append(sink.drainOnLoop()) }
        for (sink, didWrite) in zip(ready, wrote) where didWrite { sink.flushOnLoop() }
        ready.removeAll(keepingCapacity: true)
        state.withLock { state in
            if state.spare.capacity < ready.capacity { state.spare = ready }
        }
    }
}

/// The batchers of an event loop group, made on first use.
final class LoopBatchers: Sendable {
    private let batchers = Mutex<[ObjectIdentifier: LoopBatcher]>([:])

    func batcher(for loop: any EventLoop) -> LoopBatcher {
        batchers.withLock { batchers in
            let key = ObjectIdentifier(loop)
            if let batcher = batchers[key] { return batcher }
            let batcher = LoopBatcher(loop: loop)
            batchers[key] = batcher
            return batcher
        }
    }
}

/// Sits next to the socket: gives the sink a place to write raw HTTP chunks (the response is
/// chunked; its head, the replay and its end still go through Hummingbird's writer and the HTTP
/// encoder, in order with these writes since all of them run on the channel's event loop), and
/// tells the sink when the connection becomes writable again.
private final class WireHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = ByteBuffer
    private let sink: ChannelSink

    init(sink: ChannelSink) {
        self.sink = sink
    }

    func handlerAdded(context: ChannelHandlerContext) {
        sink.wire = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        sink.wire = nil
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        sink.writabilityChanged()
        context.fireChannelWritabilityChanged()
    }
}
