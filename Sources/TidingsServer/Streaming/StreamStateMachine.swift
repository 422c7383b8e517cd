import TidingsCore

/// The life of one live stream on its connection, whatever its transport: a plain value, only
/// touched on the connection's event loop, whose transitions return what the stream's channel
/// handler must do (``StreamSink`` performs them). It decides when a stream may write straight
/// to its socket, when it waits for writability, how it ends (a goodbye written first, or cut
/// off), when the connection closes, when it leaves the bus, and when an unanswered keep-alive
/// means the peer is gone.
///
/// ```
///   attaching ──attach──▶ live ◀──writable──▶ waitingForWritability
///        │                 │ end (goodbye)          │ end
///        │                 ▼                        │
///        │              ending ──last write done──▶ closing ──inactive──▶ closed
///        └──────────────────────── (cut off / client gone) ──────────────────▶
/// ```
struct StreamStateMachine {
    enum State: Equatable {
        /// The request is writing the preamble and replay; live delivery has not started.
        case attaching
        /// Live: events are written as they come.
        case live
        /// NIO holds unsent bytes and the socket is full: nothing is taken from the queue.
        case waitingForWritability
        /// The goodbye is written; the connection closes once NIO has sent it.
        case ending
        /// The close was asked for.
        case closing
        /// The connection is gone.
        case closed
    }

    private(set) var state: State = .attaching
    /// Writes handed to NIO whose promise has not completed. While zero, NIO holds nothing
    /// unsent for the socket, so a write may go straight to it without overtaking anything.
    private(set) var pendingInPipeline = 0
    /// Keep-alives that expect an answer (WebSocket pings) and got none yet.
    private(set) var unansweredKeepAlives = 0
    /// How many unanswered keep-alives mean the peer is gone (`nil`: keep-alives need no answer).
    let maxUnansweredKeepAlives: Int?

    init(maxUnansweredKeepAlives: Int? = nil) {
        self.maxUnansweredKeepAlives = maxUnansweredKeepAlives
    }

    /// Nothing is queued in NIO: a write may go straight to the socket.
    var mayWriteDirectly: Bool {
        pendingInPipeline == 0 && (state == .live || state == .waitingForWritability)
    }

    // MARK: - Starting

    enum AttachAction: Equatable {
        /// Attach the driver to the subscription: live delivery starts.
        case attach
        /// The client left during the handoff: do not tie the subscription to this stream.
        case none
    }

    mutating func attach() -> AttachAction {
        guard state == .attaching else { return .none }
        state = .live
        return .attach
    }

    // MARK: - Draining

    enum DrainAction: Equatable {
        /// Take what the subscription has queued and write it.
        case take
        /// Leave the queue alone and park the subscription until writable (its queue absorbs
        /// the backlog, bounded by `--max-queue`).
        case park
        /// Nothing to do: the stream is ending or gone.
        case none
    }

    mutating func drainRequested(isWritable: Bool) -> DrainAction {
        switch state {
        case .live, .waitingForWritability:
            if pendingInPipeline > 0, !isWritable {
                state = .waitingForWritability
                return .park
            }
            state = .live
            return .take
        case .attaching, .ending, .closing, .closed:
            return .none
        }
    }

    enum WritabilityAction: Equatable {
        /// Drain now: the stream was waiting and can write again.
        case drain
        case none
    }

    mutating func writabilityChanged(isActive: Bool, isWritable: Bool) -> WritabilityAction {
        guard state == .waitingForWritability, isActive, isWritable else { return .none }
        state = .live
        return .drain
    }

    // MARK: - Writing

    /// A write was handed to NIO (with a promise this machine hears about).
    mutating func pipelineWriteStarted() {
        pendingInPipeline += 1
    }

    enum WriteCompletedAction: Equatable {
        /// The goodbye is out: close the connection.
        case close
        case none
    }

    mutating func pipelineWriteCompleted() -> WriteCompletedAction {
        pendingInPipeline -= 1
        guard pendingInPipeline == 0, state == .ending else { return .none }
        state = .closing
        return .close
    }

    // MARK: - Keep-alive

    enum KeepAliveAction: Equatable {
        /// Send the transport's keep-alive.
        case send
        /// Too many keep-alives went unanswered: the peer is gone, close.
        case close
    }

    mutating func keepAliveDue() -> KeepAliveAction {
        guard let maxUnansweredKeepAlives else { return .send }
        if unansweredKeepAlives >= maxUnansweredKeepAlives {
            return closeNow() == .close ? .close : .send
        }
        unansweredKeepAlives += 1
        return .send
    }

    /// The peer answered (a WebSocket pong).
    mutating func keepAliveAnswered() {
        unansweredKeepAlives = 0
    }

    // MARK: - Ending

    enum EndAction: Equatable {
        /// Write the transport's goodbye for the reason, then call ``goodbyeWritten()``.
        case writeGoodbye
        /// Close at once, without a goodbye.
        case close
        case none
    }

    /// The stream ended for `reason`. A client that stopped reading (its queue overflowed, or
    /// the stream waits for writability) gets no goodbye — it must not keep its connection until
    /// it reads again — unless the transport has one worth trying (`goodbyeWhenSlow`: a
    /// WebSocket's close code, sent with a grace period).
    mutating func streamEnded(_ reason: StreamEnd, goodbyeWhenSlow: Bool) -> EndAction {
        switch state {
        case .live, .waitingForWritability:
            let stalled = reason == .slowConsumer || state == .waitingForWritability
            if stalled, !goodbyeWhenSlow { return closeNow() == .close ? .close : .none }
            state = .ending
            return .writeGoodbye
        case .attaching, .ending, .closing, .closed:
            return .none
        }
    }

    enum GoodbyeAction: Equatable {
        /// Nothing of the stream is left in NIO: close now.
        case close
        /// Close once NIO has written the rest (``pipelineWriteCompleted()`` says when).
        case waitForPipeline
    }

    mutating func goodbyeWritten() -> GoodbyeAction {
        guard state == .ending, pendingInPipeline == 0 else { return .waitForPipeline }
        state = .closing
        return .close
    }

    enum CloseAction: Equatable {
        case close
        case none
    }

    /// The stream must close now (a broken socket, a parked stream that ended, a protocol
    /// error): once.
    mutating func closeNow() -> CloseAction {
        switch state {
        case .closing, .closed:
            return .none
        case .attaching, .live, .waitingForWritability, .ending:
            state = .closing
            return .close
        }
    }

    enum InactiveAction: Equatable {
        /// Finish the subscription and take it off the bus.
        case leaveBus
        case none
    }

    /// The connection closed (by either side).
    mutating func channelInactive() -> InactiveAction {
        guard state != .closed else { return .none }
        state = .closed
        return .leaveBus
    }
}
