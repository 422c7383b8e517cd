import CTidingsPrefetch
import Logging
import NIOCore
import Synchronization
import TidingsCore

/// Owns a stream once its preamble and replay are written. The socket is handed over from
/// Hummingbird's channel to a bare NIO channel of our own on the same event loop (see
/// ``StreamHandoff``), and from then on the stream has no task and no HTTP machinery: live
/// events, keep-alives, the end of the stream and the client going away are all handled here.
/// (Hummingbird's connection task and pipeline cost several times more memory than the stream.)
///
/// The bus marks the subscription ready, the loop's ``LoopBatcher`` drains every ready
/// subscription in one pass. What a connection has queued goes out in one `send`/`sendmsg`
/// straight to its socket while NIO holds nothing unsent for it (the common case); otherwise, and
/// for whatever the socket did not take, through the pipeline with one flush per connection per
/// pass, NIO then waiting for writability.
///
/// While the connection is not writable (the client reads slower than events arrive) nothing is
/// taken from the subscription's queue, so the queue — bounded by `--max-queue` — is what
/// absorbs the backlog, and the client is disconnected when it overflows.
final class ChannelSink: SubscriptionDriver, @unchecked Sendable {
    // @unchecked: every `var` is only touched on `channel.eventLoop`; the rest is immutable.
    /// Hummingbird's channel until the handoff, then ours (same socket, same event loop).
    fileprivate(set) var channel: any Channel
    let subscription: Subscription
    private let bus: EventBus
    private let logger: Logger
    private let batcher: LoopBatcher
    private var buffer: [Delivery] = []
    private var waitingForWritability = false
    /// The context of the stream channel's only handler: chunks NIO must write go there
    /// (pre-encoded HTTP chunks, shared by every subscriber of an event).
    fileprivate var wire: ChannelHandlerContext?
    /// Writes handed to NIO whose promise has not completed yet. While it is
    /// zero NIO holds no unsent bytes for this socket, so a live chunk can go straight to the
    /// socket with one `send` — NIO's write path costs more than the syscall itself at light
    /// fan-out — without overtaking anything.
    fileprivate var pendingInPipeline = 0
    /// The descriptor of the stream's channel, for direct writes (nil: everything goes through
    /// NIO). Kept here rather than asked of the channel per write (two more objects touched per
    /// subscriber per event). It is cleared before this code closes the channel and when the
    /// channel becomes inactive; NIO closes the descriptor only inside its close, and the only
    /// code of ours that can run between that and `channelInactive` is a writability change,
    /// which checks `isActive` (already false by then) before writing.
    fileprivate var descriptor: CInt?
    /// The stream's last chunk is written (or the connection is gone): close once NIO wrote it.
    private var ended = false
    /// The close was asked for.
    private var closing = false

    /// Where `subscription` and `wire` live, for prefetching them without retaining them.
    private let subscriptionAddress: UnsafeRawPointer
    fileprivate var wireAddress: UnsafeRawPointer?
    private var bufferAddress: UnsafeRawPointer?

    init(channel: any Channel, subscription: Subscription, bus: EventBus, logger: Logger, batcher: LoopBatcher) {
        self.channel = channel
        self.subscription = subscription
        self.subscriptionAddress = UnsafeRawPointer(Unmanaged.passUnretained(subscription).toOpaque())
        buffer.reserveCapacity(1)
        bufferAddress = buffer.withUnsafeBufferPointer { $0.baseAddress.map(UnsafeRawPointer.init) }
        self.bus = bus
        self.logger = logger
        self.batcher = batcher
    }

    /// Takes the connection over from Hummingbird: must be called after its last write for this
    /// response (they are ordered before the handoff on the event loop). Hummingbird's handler
    /// then finds its connection closed and ends.
    func start() async throws {
        let hummingbird = channel
        try await hummingbird.eventLoop.flatSubmit {
            StreamHandoff.hand(hummingbird) { try self.adopt($0) }.map { self.attach() }
        }.get()
    }

    /// On the event loop: makes `channel` the stream's, with the sink's handler as its only one.
    func adopt(_ channel: any Channel) throws {
        self.channel = channel
        try channel.pipeline.syncOperations.addHandler(WireHandler(sink: self))
    }

    /// On the event loop, once adopted: live delivery starts. Unless the client already left
    /// (then the stream is off the bus, and attaching would tie the subscription and this sink
    /// to each other for good).
    func attach() {
        if !ended { subscription.attach(self) }
    }

    /// Starts loading what a drain touches besides the sink (call once the sink is cached).
    func prefetchParts() {
        tidings_prefetch(subscriptionAddress, 4)
        if let wireAddress { tidings_prefetch(wireAddress, 2) }
        // The array's header (32 bytes) and its first element.
        if let bufferAddress { tidings_prefetch(bufferAddress - 32, 2) }
    }

    func schedule() -> (any DrainKick)? {
        batcher.schedule(self)
    }

    /// On the event loop: writes what the subscription has queued — straight to the socket when
    /// NIO holds nothing for it, else through the pipeline without flushing.
    /// - Returns: true when something was written to the pipeline and needs a flush.
    func drainOnLoop(now: NIODeadline = .now()) -> Bool {
        guard let wire, !ended else { return false }
        if pendingInPipeline > 0, !channel.isWritable {
            // A client this far behind gets no goodbye: its stream ending closes it at once.
            // Skipping the drain (not just returning) is what has the end reach this sink.
            if subscription.skipDrain() != nil {
                closeNow(wire)
            } else {
                waitingForWritability = true
            }
            return false
        }
        switch subscription.drain(into: &buffer, now: now) {
        case .events:
            defer {
                buffer.removeAll(keepingCapacity: true)
                // The drain may have swapped the storage for the subscription's.
                bufferAddress = buffer.withUnsafeBufferPointer { $0.baseAddress.map(UnsafeRawPointer.init) }
            }
            return write(buffer.lazy.map(\.chunk), count: buffer.count, to: wire)
        case .keepAlive:
            return write(CollectionOfOne(SSEFrame.keepAliveChunk), count: 1, to: wire)
        case .end(let reason):
            logger.debug("stream ended", metadata: ["tidings.reason": .string(reason.rawValue)])
            if reason == .slowConsumer {
                // It stopped reading: no goodbye, the connection goes now.
                closeNow(wire)
                return false
            }
            ended = true
            let queued = write(CollectionOfOne(SSEFrame.lastChunk), count: 1, to: wire)
            if pendingInPipeline == 0 { closeNow(wire) }
            return queued
        case nil:
            return false
        }
    }

    private func write<Chunks: Collection<ByteBuffer>>(_ chunks: Chunks, count: Int, to wire: ChannelHandlerContext) -> Bool {
        var sent = 0
        if pendingInPipeline == 0, let descriptor {
            switch DirectWrite.send(chunks, count: count, on: descriptor) {
            case .sent(let bytes):
                // All of it (the common case): nothing for NIO.
                if count == 1, let only = chunks.first, bytes == only.readableBytes { return false }
                sent = bytes
            case .closed:
                closeNow(wire)
                return false
            }
        }
        // What the socket did not take goes through NIO, which waits for writability.
        var queued = false
        var skip = sent
        var index = chunks.startIndex
        while index != chunks.endIndex {
            var chunk = chunks[index]
            chunks.formIndex(after: &index)
            if skip >= chunk.readableBytes {
                skip -= chunk.readableBytes
                continue
            }
            chunk.moveReaderIndex(forwardBy: skip)
            skip = 0
            if index == chunks.endIndex {
                writeTracked(NIOAny(chunk), on: wire)
            } else {
                wire.write(NIOAny(chunk), promise: nil)
            }
            queued = true
        }
        return queued
    }

    /// Writes into the pipeline, counting the write until NIO completes it; closes the
    /// connection when the stream has ended and this was the last write outstanding.
    fileprivate func writeTracked(_ data: NIOAny, on context: ChannelHandlerContext) {
        let promise = context.eventLoop.makePromise(of: Void.self)
        pendingInPipeline += 1
        promise.futureResult.whenComplete { _ in
            self.pendingInPipeline -= 1
            if self.pendingInPipeline == 0, self.ended, let wire = self.wire { self.closeNow(wire) }
        }
        context.write(data, promise: promise)
    }

    /// Closes the connection, once.
    private func closeNow(_ wire: ChannelHandlerContext) {
        ended = true
        guard !closing else { return }
        closing = true
        descriptor = nil
        wire.close(promise: nil)
    }

    /// On the event loop: sends what was written.
    func flushOnLoop() {
        wire?.flush()
    }

    /// On the event loop: the connection can take data again.
    func writabilityChanged() {
        guard waitingForWritability, channel.isActive, channel.isWritable else { return }
        waitingForWritability = false
        if drainOnLoop() { flushOnLoop() }
    }

    /// On the event loop: the connection is closed; the stream leaves the bus.
    fileprivate func connectionClosed() {
        ended = true
        wire = nil
        wireAddress = nil
        descriptor = nil
        subscription.finish(.clientClosed)
        subscription.detach()
        bus.unsubscribe(subscription)
    }
}

/// One per event loop: collects ready sinks and drains them in one task on the loop, so a burst
/// of events costs one loop hop per loop and one flush per connection, not one per event; the
/// bus queues every sink an event reaches before it kicks the drain.
final class LoopBatcher: DrainKick, Sendable {
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

    /// Queues `sink`; returns self when the caller must ``kick()`` (no drain was pending).
    func schedule(_ sink: ChannelSink) -> (any DrainKick)? {
        let first = state.withLock { state -> Bool in
            state.ready.append(sink)
            if state.scheduled { return false }
            state.scheduled = true
            return true
        }
        return first ? self : nil
    }

    func kick() {
        loop.execute { self.drainAll() }
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
        // Each sink's objects have left the cache since the last event (thousands of sends lie
        // between): ask for the next sinks' while this one's `send` runs.
        let count = ready.count
        let now = NIODeadline.now()
        for index in 0..<count {
            if index + 2 < count {
                // The reference's bits, read without retaining (a retain would load the object).
                let next = ready.withUnsafeBytes { $0.load(fromByteOffset: (index + 2) * MemoryLayout<ChannelSink>.stride, as: UnsafeRawPointer.self) }
                tidings_prefetch(next, 4)
            }
            if index + 1 < count { ready[index + 1].prefetchParts() }
            wrote.append(ready[index].drainOnLoop(now: now))
        }
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

/// The only handler of a stream's own channel: gives the sink a place to write raw HTTP chunks,
/// tells it when the connection becomes writable again or closes, and discards whatever the
/// client sends after its request (no second request is ever served on a stream's connection).
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
        sink.wireAddress = UnsafeRawPointer(Unmanaged.passUnretained(context).toOpaque())
        sink.descriptor = DirectWrite.descriptor(of: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func channelInactive(context: ChannelHandlerContext) {
        sink.connectionClosed()
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        sink.writabilityChanged()
        context.fireChannelWritabilityChanged()
    }
}
