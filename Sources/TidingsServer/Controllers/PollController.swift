public import Hummingbird
import HTTPTypes
import Logging
import Metrics
import NIOCore
import ServiceLifecycle
import TidingsCore

/// `GET /poll`: long polling with the stream's cursor.
///
/// A poll is a short-lived stream: it joins the bus like `GET /events` (so it counts against the
/// connection limits and in presence), replays what the store holds after the resume point (up
/// to `limit`, resets included), and answers at once if that is anything; else it waits for the
/// first live event of its targets, or the `timeout`. The position it answers is one the next
/// poll — on this instance or another — can resume from without a gap or a duplicate.
public struct PollController: Sendable {
    public typealias Context = TidingsRequestContext
    let gateway: Gateway

    static let defaultTimeout = Duration.seconds(25)
    static let maxTimeout = Duration.seconds(60)
    static let defaultLimit = 100
    static let maxLimit = 1_000

    public init(gateway: Gateway) {
        self.gateway = gateway
    }

    public func addRoutes(to router: Router<Context>) {
        router.get("/poll", use: poll)
    }

    @Sendable func poll(_ request: Request, context: Context) async throws -> Response {
        let parsed = try await StreamRequest.parse(request, gateway: gateway)
        let timeout = try Self.timeout(request)
        let limit = try Self.limit(request)
        guard let resumePoint = parsed.resumePoint else {
            // Where the stream is now: the next poll waits from here.
            return Self.answer([], lastEventID: gateway.bus.lastDelivered)
        }
        let deadline = NIODeadline.now() + .nanoseconds(Int64(timeout.milliseconds) * 1_000_000)
        let (subscription, horizon) = try parsed.subscribe(on: gateway, hold: true, transport: .longPoll)
        defer { gateway.bus.unsubscribe(subscription) }

        // History first: the first `limit` events after the resume point, resets included.
        var replayed: [Event] = []
        let outcome: Replay.Outcome?
        do {
            outcome = try await Replay.run(
                store: gateway.store, targets: Set(parsed.targets), after: resumePoint, through: horizon, pageSize: limit
            ) { events in
                replayed += events
                if replayed.count >= limit { throw EnoughEvents() }
            }
        } catch is EnoughEvents {
            outcome = nil
        } catch {
            subscription.finish(.clientClosed)
            gateway.logger.error("poll replay failed", metadata: ["error.type": "\(String(reflecting: type(of: error)))"])
            throw Problem.unavailable("the event store is unavailable, retry later", retryAfter: 2)
        }
        if !replayed.isEmpty || outcome == nil {
            subscription.finish(.clientClosed)
            let sent = replayed.prefix(limit)
            gateway.metrics.replayed.increment(by: sent.count)
            return Self.answer(sent, lastEventID: sent.last?.id ?? resumePoint)
        }

        // Nothing stored after the resume point: wait for the first live event. Graceful shutdown
        // ends the wait at once (the server does not wait out the timeout of every poll).
        subscription.release(afterReplayThrough: outcome?.floor)
        let waiter = PollWaiter(loop: context.channel.eventLoop)
        subscription.attach(waiter)
        defer { subscription.detach() }
        // A client that leaves ends the wait (it would hold its connection slot until the timeout).
        await ClientGoneHandler.watch(context.channel) { waiter.clientLeft() }
        defer { ClientGoneHandler.unwatch(context.channel) }
        var buffer: [Delivery] = []
        try await withGracefulShutdownHandler {
            while NIODeadline.now() < deadline, subscription.endReason == nil, !waiter.clientGone {
                try await waiter.wait(until: deadline)
                if case .events = subscription.drain(into: &buffer) {
                    if buffer.contains(where: { $0.id != nil }) { break }
                    buffer.removeAll(keepingCapacity: true)
                }
            }
        } onGracefulShutdown: {
            subscription.finish(.shutdown)
        }
        if let answer = Self.durable(buffer, limit: limit) {
            subscription.finish(.clientClosed)
            return answer
        }
        // The position every event of these targets delivered so far is covered by: read while
        // still on the bus, so any such event is in this subscription's queue (drained below).
        let position = gateway.bus.lastDelivered
        gateway.bus.unsubscribe(subscription)
        if subscription.endReason == nil, case .events = subscription.drain(into: &buffer),
           let answer = Self.durable(buffer, limit: limit) {
            subscription.finish(.clientClosed)
            return answer
        }
        // A stream that ended (shutdown, token expiry, an overflowing queue) dropped its queue:
        // stay where history was read to; the store still has whatever came after.
        let ended = subscription.endReason != nil
        subscription.finish(.clientClosed)
        return Self.answer([], lastEventID: max(resumePoint, ended ? horizon : position))
    }

    /// The answer for the durable events among `deliveries` (ephemeral ones cannot be resumed, so
    /// a poll does not carry them); `nil` when there are none.
    private static func durable(_ deliveries: [Delivery], limit: Int) -> Response? {
        let durable = deliveries.lazy.map(\.event).filter { $0.id != nil }.prefix(limit)
        guard let last = durable.last?.id else { return nil }
        return answer(Array(durable), lastEventID: last)
    }

    private struct EnoughEvents: Error {}

    static func answer(_ events: some Collection<Event>, lastEventID: EventID) -> Response {
        Response(
            status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: .init(byteBuffer: PollEventEncoding.answer(events, lastEventID: lastEventID)))
    }

    /// `timeout`: a duration, default 25 s, at most 60 s.
    static func timeout(_ request: Request) throws -> Duration {
        guard let text = request.query("timeout") else { return defaultTimeout }
        guard let duration = DurationParser.parse(text), duration <= maxTimeout else {
            throw Problem.badRequest("timeout must be a duration of at most 60s (e.g. 25s)", type: "invalid-timeout")
        }
        return duration
    }

    /// `limit`: 1–1000, default 100.
    static func limit(_ request: Request) throws -> Int {
        guard let text = request.query("limit") else { return defaultLimit }
        guard let limit = Int(text), (1...maxLimit).contains(limit) else {
            throw Problem.badRequest("limit must be an integer from 1 to \(maxLimit)", type: "invalid-limit")
        }
        return limit
    }
}
