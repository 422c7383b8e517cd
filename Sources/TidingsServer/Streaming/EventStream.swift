import Foundation
import Hummingbird
import Logging
import NIOCore
import Metrics
import ServiceLifecycle
import TidingsCore

/// Writes one subscriber's stream: preamble, replay, then live events until it ends.
struct EventStream: Sendable {
    let gateway: Gateway
    let channel: any Channel
    let subscription: Subscription
    let targets: Set<Target>
    let resumePoint: EventID?
    let horizon: EventID

    /// Writes the preamble and the replay, then hands the stream to a ``StreamSink``; throws
    /// ``StreamHandoff/HandedOver`` when it did: Hummingbird's handler does not wait for the end
    /// of the stream.
    func run(writer: inout any ResponseBodyWriter) async throws {
        let subscription = self.subscription
        do {
            try await withGracefulShutdownHandler {
                try await withTaskCancellationHandler {
                    try await stream(writer: &writer)
                } onCancel: {
                    subscription.finish(.clientClosed)
                }
            } onGracefulShutdown: {
                subscription.finish(.shutdown)
            }
        } catch {
            // The client went away mid-write, or the store failed during replay: end the stream;
            // the client resumes with Last-Event-ID.
            subscription.finish(.clientClosed)
            gateway.bus.unsubscribe(subscription)
            gateway.logger.debug("stream ended by an error", metadata: ["error.type": "\(String(reflecting: type(of: error)))"])
            return
        }
        // The stream's socket belongs to its own channel now. Throwing is how Hummingbird is
        // told to stop serving this connection: a request pipelined behind the stream, already
        // read and buffered, must never run (it logs this at trace level and ends the task).
        throw StreamHandoff.HandedOver()
    }

    private func stream(writer: inout any ResponseBodyWriter) async throws {
        let retry = Int(gateway.configuration.retry.milliseconds)
        try await writer.write(SSEFrame.preamble(retryMilliseconds: retry))
        if let resumePoint {
            let lastReplayed = try await replay(after: resumePoint, writer: &writer)
            subscription.release(afterReplayThrough: lastReplayed)
        }
        // Live events go straight from the bus into the connection on its event loop, and the
        // stream's end is written there too.
        let sink = StreamSink(
            channel: channel, subscription: subscription, framing: .sse, bus: gateway.bus, logger: gateway.logger,
            batcher: gateway.batchers.batcher(for: channel.eventLoop))
        try await sink.start()
    }

    /// Sends history up to the horizon (and a reset where history cannot continue from the
    /// resume point); returns the floor below which live events must not follow.
    private func replay(after resumePoint: EventID, writer: inout any ResponseBodyWriter) async throws -> EventID {
        let outcome = try await Replay.run(
            store: gateway.store, targets: targets, after: resumePoint, through: horizon
        ) { events in
            try await writer.write(contentsOf: events.lazy.map { $0.encoded(SSEFrameEncoding.self) })
        }
        gateway.metrics.replayed.increment(by: outcome.replayed)
        return outcome.floor
    }
}
