import Hummingbird
import HTTPTypes
import Logging
import Metrics
import NIOCore
import NIOWebSocket
import TidingsCore

/// `GET /ws`: the stream of `GET /events` over a WebSocket.
///
/// The upgrade request is checked exactly like `GET /events` before anything is answered (so a
/// refusal is a plain `400`/`401`/`403`/`503` with a problem document, see ``TidingsHTTPChannel``),
/// and the stream is registered on the bus then, holding live events. Once NIO has written the
/// `101`, the connection's pipeline becomes the stream's: the ``StreamSink`` (WebSocket framing)
/// nearest the socket, NIO's frame decoder, a fragment aggregator and the
/// ``WebSocketMessageHandler`` for what the client sends. The replay (if the client gave
/// `last_event_id`) goes out first, then live events — no task stays behind per connection.
struct WebSocketEndpoint: Sendable {
    static let path = "/ws"
    let gateway: Gateway

    /// A checked, registered stream waiting for its upgrade to complete.
    struct Opening: Sendable {
        let request: StreamRequest
        let subscription: Subscription
        let horizon: EventID
    }

    /// Whether `head` asks for this endpoint (anything else is served as plain HTTP).
    static func matches(_ head: HTTPRequest) -> Bool {
        guard let path = head.path else { return false }
        return path.prefix { $0 != "?" } == Self.path
    }

    /// Before the upgrade is answered: the checks of `GET /events`, then the stream joins the bus
    /// (holding live events until its replay is written).
    /// - Throws: a ``Problem`` to answer instead of the upgrade.
    func open(_ head: HTTPRequest, channel: any Channel) async throws -> Opening {
        let request = Request(head: head, body: .init(buffer: ByteBuffer()))
        let parsed = try await StreamRequest.parse(request, gateway: gateway)
        let (subscription, horizon) = try parsed.subscribe(
            on: gateway, hold: parsed.resumePoint != nil, transport: .webSocket, keepAlive: .always,
            interrupt: { [weak channel] in channel?.close(promise: nil) })
        // However the connection ends — before the upgrade completes included — the stream
        // leaves the bus (both calls are no-ops once done).
        let bus = gateway.bus
        channel.closeFuture.whenComplete { _ in
            subscription.finish(.clientClosed)
            bus.unsubscribe(subscription)
        }
        gateway.logger.debug(
            "websocket opened",
            metadata: [
                "tidings.user": .string(parsed.subscriber.user),
                "tidings.topics": .stringConvertible(parsed.targets.count - 1),
                "tidings.resume": parsed.resumePoint.map { .stringConvertible($0) } ?? "none",
            ])
        return Opening(request: parsed, subscription: subscription, horizon: horizon)
    }

    /// On the event loop, right after NIO wrote the `101` and installed its frame codec: the
    /// connection becomes the stream's.
    func start(_ opening: Opening, on channel: any Channel) throws {
        let sink = StreamSink(
            channel: channel, subscription: opening.subscription, framing: .webSocket, bus: gateway.bus,
            logger: gateway.logger, batcher: gateway.batchers.batcher(for: channel.eventLoop))
        try sink.adopt(channel)
        let maxMessage = gateway.configuration.maxBody
        try channel.pipeline.syncOperations.addHandler(
            NIOWebSocketFrameAggregator(
                minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1_024, maxAccumulatedFrameSize: maxMessage))
        try channel.pipeline.syncOperations.addHandler(
            WebSocketMessageHandler(session: WebSocketSession(gateway: gateway, sink: sink, subscriber: opening.request.subscriber)))
        guard let resumePoint = opening.request.resumePoint else {
            sink.attach()
            return
        }
        let gateway = self.gateway
        let targets = Set(opening.request.targets)
        let loop = channel.eventLoop
        Task {
            do {
                let outcome = try await Replay.run(
                    store: gateway.store, targets: targets, after: resumePoint, through: opening.horizon
                ) { events in
                    let frames = events.map { $0.encoded(WebSocketEventEncoding.self) }
                    try await loop.flatSubmit { sink.writeReplay(frames) }.get()
                }
                gateway.metrics.replayed.increment(by: outcome.replayed)
                opening.subscription.release(afterReplayThrough: outcome.floor)
                loop.execute { sink.attach() }
            } catch {
                // The client left mid-replay, or the store failed: it resumes with its last id.
                gateway.logger.debug("websocket replay ended by an error", metadata: ["error.type": "\(String(reflecting: type(of: error)))"])
                loop.execute { sink.closeNow() }
            }
        }
    }
}
