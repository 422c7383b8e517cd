import CTidingsPrefetch
import Logging
import NIOCore
import Synchronization
import TidingsCore

/// Owns a stream once its preamble and replay are written, for every transport that lives on a
/// connection of its own (SSE and WebSocket): live events, keep-alives, the end of the stream and
/// the client going away are all handled here, on the connection's event loop, with no task and
/// no HTTP machinery. The stream's life is a ``StreamStateMachine``; this class performs what it
/// decides. What differs between transports is its ``StreamFraming``: the bytes of an event (each
/// encoded once per event for all streams of that transport), of a keep-alive and of a goodbye.
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
final class StreamSink: SubscriptionDriver, @unchecked Sendable {
    // @unchecked: every `var` is only touched on `channel.eventLoop`; the rest is immutable.
    /// For SSE, Hummingbird's channel until the handoff, then ours (same socket, same event loop).
    fileprivate(set) var channel: any Channel
    let subscription: Subscription
    let framing: StreamFraming
    private let bus: EventBus
    private let logger: Logger
    private let batcher: LoopBatcher
    private var buffer: [Delivery] = []
    private(set) var machine: StreamStateMachine
    /// The context of the stream channel's wire handler, nearest the socket: everything the
    /// stream writes goes there (pre-encoded bytes, shared by every subscriber of an event).
    fileprivate var wire: ChannelHandlerContext?
    /// The descriptor of the stream's channel, for direct writes (nil: everything goes through
    /// NIO). Kept here rather than asked of the channel per write (two more objects touched per
    /// subscriber per event). It is cleared before this code closes the channel and when the
    /// channel becomes inactive; NIO closes the descriptor only inside its close, and the only
    /// code of ours that can run between that and `channelInactive` is a writability change,
    /// which checks `isActive` (already false by then) before writing.
    fileprivate var descriptor: CInt?

    /// Where `subscription` and `wire` live, for prefetching them without retaining them.
    private let subscriptionAddress: UnsafeRawPointer
    fileprivate var wireAddress: UnsafeRawPointer?
    private var bufferAddress: UnsafeRawPointer?

    /// How long a goodbye that NIO could not send yet may take before the connection is cut.
    static let goodbyeGrace = TimeAmount.seconds(5)

    init(
        channel: any Channel, subscription: Subscription, framing: StreamFraming, bus: EventBus, logger: Logger,
        batcher: LoopBatcher
    ) {
        self.channel = channel
        self.subscription = subscription
        self.framing = framing
        self.machine = StreamStateMachine(maxUnansweredKeepAlives: framing.maxUnansweredKeepAlives)
        self.subscriptionAddress = UnsafeRawPointer(Unmanaged.passUnretained(subscription).toOpaque())
        buffer.reserveCapacity(1)
        bufferAddress = buffer.withUnsafeBufferPointer { $0.baseAddress.map(UnsafeRawPointer.init) }
        self.bus = bus
        self.logger = logger
        self.batcher = batcher
    }

    /// SSE: takes the connection over from Hummingbird: must be called after its last write for
    /// this response (they are ordered before the handoff on the event loop). Hummingbird's
    /// handler then finds its connection closed and ends.
    func start() async throws {
        let hummingbird = channel
        try await hummingbird.eventLoop.flatSubmit {
            StreamHandoff.hand(hummingbird) { try self.adopt($0) }.map { self.attach() }
        }.get()
    }

    /// On the event loop: makes `channel` the stream's, with the sink's wire handler nearest the
    /// socket.
    func adopt(_ channel: any Channel) throws {
        self.channel = channel
        try channel.pipeline.syncOperations.addHandler(WireHandler(sink: self), position: .first)
    }

    /// On the event loop, once adopted and the replay is written: live delivery starts. Unless
    /// the client already left (then the stream is off the bus, and attaching would tie the
    /// subscription and this sink to each other for good).
    func attach() {
        if machine.attach() == .attach { subscription.attach(self) }
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
        guard let wire else { return false }
        // Writability only matters while NIO holds something: asking the channel (an atomic
        // load in another object) for every stream of every event costs a cache miss each.
        switch machine.drainRequested(isWritable: machine.pendingInPipeline == 0 || channel.isWritable) {
        case .none:
            return false
        case .park:
            // Skipping the drain (not just returning) is what has the end reach this sink.
            if let reason = subscription.skipDrain() { return end(reason, on: wire) }
            return false
        case .take:
            break
        }
        switch subscription.drain(into: &buffer, now: now) {
        case .events:
            defer {
                buffer.removeAll(keepingCapacity: true)
                // The drain may have swapped the storage for the subscription's.
                bufferAddress = buffer.withUnsafeBufferPointer { $0.baseAddress.map(UnsafeRawPointer.init) }
            }
            // A stream that keeps up has one event: its bytes come from the pass's cache (the
            // previous stream of the pass most likely wrote the same event).
            if buffer.count == 1 { return write(CollectionOfOne(batcher.encoded(buffer[0].event, framing)), count: 1, to: wire) }
            let framing = self.framing
            return write(buffer.lazy.map { framing.encoded($0.event) }, count: buffer.count, to: wire)
        case .keepAlive:
            switch machine.keepAliveDue() {
            case .send:
                return write(CollectionOfOne(framing.keepAlive), count: 1, to: wire)
            case .close:
                logger.debug("stream closed: keep-alives unanswered")
                subscription.finish(.keepAliveTimeout)
                close(wire)
                return false
            }
        case .end(let reason):
            return end(reason, on: wire)
        case nil:
            return false
        }
    }

    /// The stream ended: the transport's goodbye, or (a client that stopped reading, unless the
    /// transport can still say why) a cut.
    private func end(_ reason: StreamEnd, on wire: ChannelHandlerContext) -> Bool {
        logger.debug("stream ended", metadata: ["tidings.reason": .string(reason.rawValue)])
        let goodbye = reason == .shutdown
            ? framing.drainGoodbye(retryMilliseconds: subscription.drainRetryMilliseconds) : framing.goodbye(reason)
        return end(reason, goodbye: goodbye, on: wire)
    }

    private func end(_ reason: StreamEnd, goodbye: ByteBuffer, on wire: ChannelHandlerContext) -> Bool {
        switch machine.streamEnded(reason, goodbyeWhenSlow: framing.goodbyeWhenSlow) {
        case .none:
            return false
        case .close:
            close(wire)
            return false
        case .writeGoodbye:
            let queued = write(CollectionOfOne(goodbye), count: 1, to: wire)
            switch machine.goodbyeWritten() {
            case .close:
                close(wire)
            case .waitForPipeline:
                // A client that does not read its goodbye does not keep the connection.
                wire.eventLoop.scheduleTask(in: Self.goodbyeGrace) { [weak self] in
                    guard let self, let wire = self.wire else { return }
                    self.closeNow(wire)
                }
            }
            return queued
        }
    }

    /// On the event loop: the client ended the stream (a WebSocket close, or a protocol error):
    /// `goodbye` (a close frame) goes out after what was written, then the connection closes and
    /// the stream leaves the bus.
    func endByClient(goodbye: ByteBuffer, reason: StreamEnd = .clientClosed) {
        guard let wire else { return }
        // First: closing the connection below ends the stream as `client_closed` otherwise.
        subscription.finish(reason)
        if end(reason, goodbye: goodbye, on: wire) { wire.flush() }
    }

    /// On the event loop, before live delivery starts: writes replayed frames through NIO; the
    /// future completes once the socket took them (the replay's backpressure).
    func writeReplay(_ frames: [ByteBuffer]) -> EventLoopFuture<Void> {
        guard let wire, let last = frames.last else { return channel.eventLoop.makeSucceededVoidFuture() }
        for frame in frames.dropLast() { wire.write(NIOAny(frame), promise: nil) }
        let written = wire.eventLoop.makePromise(of: Void.self)
        writeTracked(NIOAny(last), on: wire, promise: written)
        wire.flush()
        return written.futureResult
    }

    /// On the event loop: writes bytes of the stream's own (a WebSocket's pong, close or answer)
    /// behind everything written before, and flushes.
    func writeOwn(_ bytes: ByteBuffer) {
        guard let wire, machine.state != .closing, machine.state != .closed else { return }
        if write(CollectionOfOne(bytes), count: 1, to: wire) { wire.flush() }
    }

    private func write<Chunks: Collection<ByteBuffer>>(_ chunks: Chunks, count: Int, to wire: ChannelHandlerContext) -> Bool {
        var sent = 0
        if machine.mayWriteDirectly, let descriptor {
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
    fileprivate func writeTracked(_ data: NIOAny, on context: ChannelHandlerContext, promise: EventLoopPromise<Void>? = nil) {
        let tracked = context.eventLoop.makePromise(of: Void.self)
        machine.pipelineWriteStarted()
        tracked.futureResult.whenComplete { result in
            if self.machine.pipelineWriteCompleted() == .close, let wire = self.wire { self.close(wire) }
            promise?.completeWith(result)
        }
        context.write(data, promise: tracked)
    }

    /// Closes the connection, once.
    func closeNow() {
        if let wire { closeNow(wire) }
    }

    private func closeNow(_ wire: ChannelHandlerContext) {
        guard machine.closeNow() == .close else { return }
        close(wire)
    }

    /// Closes the connection (the machine has decided so).
    private func close(_ wire: ChannelHandlerContext) {
        descriptor = nil
        wire.close(promise: nil)
    }

    /// On the event loop: sends what was written.
    func flushOnLoop() {
        wire?.flush()
    }

    /// On the event loop: the peer answered a keep-alive.
    func keepAliveAnswered() {
        machine.keepAliveAnswered()
    }

    /// On the event loop: the connection can take data again.
    func writabilityChanged() {
        guard machine.writabilityChanged(isActive: channel.isActive, isWritable: channel.isWritable) == .drain else { return }
        if drainOnLoop() { flushOnLoop() }
    }

    /// On the event loop: the connection is closed; the stream leaves the bus.
    fileprivate func connectionClosed() {
        wire = nil
        wireAddress = nil
        descriptor = nil
        guard machine.channelInactive() == .leaveBus else { return }
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
    private let lastEncoded = LastEncoded()

    /// The last event a drain pass on this loop encoded, with its bytes: an event reaches the
    /// streams of a pass one after another, so asking the event for its encoding (an atomic
    /// load through two objects) happens once per pass and framing, not once per stream.
    /// Only touched on `loop`.
    private final class LastEncoded: @unchecked Sendable {
        // @unchecked: only used on the batcher's event loop (in drains).
        var event: Event?
        var framing = StreamFraming.sse
        var bytes = ByteBuffer()
    }

    /// On the loop: `event` in `framing`'s encoding.
    @inline(__always)
    func encoded(_ event: Event, _ framing: StreamFraming) -> ByteBuffer {
        let last = lastEncoded
        if last.event === event, last.framing == framing { return last.bytes }
        let bytes = framing.encoded(event)
        last.event = event
        last.framing = framing
        last.bytes = bytes
        return bytes
    }

    private struct State {
        var ready: [StreamSink] = []
        var spare: [StreamSink] = []
        var scheduled = false
    }

    init(loop: any EventLoop) {
        self.loop = loop
    }

    /// Queues `sink`; returns self when the caller must ``kick()`` (no drain was pending).
    func schedule(_ sink: StreamSink) -> (any DrainKick)? {
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
        var ready = state.withLock { state -> [StreamSink] in
            state.scheduled = false
            var ready: [StreamSink] = []
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
                let next = ready.withUnsafeBytes { $0.load(fromByteOffset: (index + 2) * MemoryLayout<StreamSink>.stride, as: UnsafeRawPointer.self) }
                tidings_prefetch(next, 4)
            }
            if index + 1 < count { ready[index + 1].prefetchParts() }
            wrote.append(ready[index].drainOnLoop(now: now))
        }
        for (sink, didWrite) in zip(ready, wrote) where didWrite { sink.flushOnLoop() }
        ready.removeAll(keepingCapacity: true)
        lastEncoded.event = nil  // an event is not kept alive by the cache after its pass
        lastEncoded.bytes = ByteBuffer()
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

/// The handler nearest the socket on a stream's own channel: gives the sink a place to write
/// pre-encoded bytes, tells it when the connection becomes writable again or closes. What the
/// client sends goes on to the transport's handlers (a WebSocket's frames); without any (SSE)
/// it is discarded: no second request is ever served on a stream's connection.
private final class WireHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = ByteBuffer
    private let sink: StreamSink

    init(sink: StreamSink) {
        self.sink = sink
    }

    func handlerAdded(context: ChannelHandlerContext) {
        sink.wire = context
        sink.wireAddress = UnsafeRawPointer(Unmanaged.passUnretained(context).toOpaque())
        sink.descriptor = DirectWrite.descriptor(of: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if sink.framing.readsClient { context.fireChannelRead(data) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        sink.connectionClosed()
        context.fireChannelInactive()
    }

    /// The client ended its side (a FIN, where the channel allows half-closure, as a WebSocket's
    /// does): it will send nothing more, not even a pong, so the stream is over. Without this
    /// the socket stayed in CLOSE-WAIT until the next ping found it gone.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            context.close(promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Writes of the transport's handlers (a protocol error's close frame) count like the sink's
    /// own, so a direct write never overtakes them.
    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        sink.writeTracked(data, on: context, promise: promise)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        sink.writabilityChanged()
        context.fireChannelWritabilityChanged()
    }
}
