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
    let subscription: Subscription
    let targets: Set<Target>
    let resumePoint: EventID?
    let horizon: EventID

    /// Events fetched per replay query.
    static let replayPageSize = 500

    func run(writer: inout any ResponseBodyWriter) async throws {
        defer { gateway.bus.unsubscribe(subscription) }
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
            gateway.logger.debug("stream ended by an error", metadata: ["error.type": "\(String(reflecting: type(of: error)))"])
            return
        }
        try? await writer.finish(nil)
    }

    private func stream(writer: inout any ResponseBodyWriter) async throws {
        let retry = Int(gateway.configuration.retry.milliseconds)
        try await writer.write(SSEFrame.preamble(retryMilliseconds: retry))
        if let resumePoint {
            let lastReplayed = try await replay(after: resumePoint, writer: &writer)
            subscription.release(afterReplayThrough: lastReplayed)
        }
        var batch: [Delivery] = []
        while true {
            switch await subscription.next(into: &batch) {
            case .events:
                if batch.count == 1 {
                    try await writer.write(batch[0].frame)
                } else {
                    try await writer.write(contentsOf: batch.lazy.map(\.frame))
                }
                batch.removeAll(keepingCapacity: true)
            case .keepAlive:
                try await writer.write(SSEFrame.keepAlive)
            case .end(let reason):
                gateway.logger.debug("stream ended", metadata: ["tidings.reason": .string(reason.rawValue)])
                return
            }
        }
    }

    /// Sends history after the resume point up to the horizon, with a reset first when part of
    /// it is gone. Returns the horizon: live events at or below it were in history.
    private func replay(after resumePoint: EventID, writer: inout any ResponseBodyWriter) async throws -> EventID {
        var after = resumePoint
        var first = true
        var replayed = 0
        while after < horizon || first {
            let page = try await gateway.store.replay(targets: targets, after: after, through: horizon, limit: Self.replayPageSize)
            if first {
                first = false
                if page.hasGap(after: resumePoint) {
                    try await writer.write(Self.resetFrame(resumePoint: resumePoint, page: page))
                }
            }
            guard let last = page.events.last?.id else { break }
            try await writer.write(contentsOf: page.events.lazy.map(\.frame))
            replayed += page.events.count
            after = last
            if page.events.count < Self.replayPageSize { break }
        }
        gateway.metrics.replayed.increment(by: replayed)
        return horizon
    }

    static func resetFrame(resumePoint: EventID, page: ReplayPage) -> ByteBuffer {
        let oldest = page.oldestRetained.map { "\"\($0)\"" } ?? "null"
        let data = #"{"reason":"history_expired","last_event_id":"\#(resumePoint)","oldest_available":\#(oldest)}"#
        return SSEFrame.event(id: page.resetID, type: .reset, data: data)
    }
}
