public import NIOCore

/// Sends a resuming stream its history: the events of its targets after the resume point up to
/// the horizon (the id the bus had delivered when the stream registered), in id order, paged.
///
/// Live events above the horizon wait in the subscription's queue meanwhile, so history and live
/// meet without a gap or a duplicate. When events after the resume point may be gone, a
/// `tidings.reset` frame comes first.
public enum Replay {
    /// Events fetched per store query.
    public static let defaultPageSize = 500

    /// - Parameter emit: writes a group of frames (one write per page).
    /// - Returns: the number of events replayed (the reset frame not counted).
    @discardableResult
    public static func run(
        store: any EventStore,
        targets: Set<Target>,
        after resumePoint: EventID,
        through horizon: EventID,
        pageSize: Int = defaultPageSize,
        emit: ([ByteBuffer]) async throws -> Void
    ) async throws -> Int {
        var after = resumePoint
        var replayed = 0
        var first = true
        while first || after < horizon {
            let page = try await store.replay(targets: targets, after: after, through: horizon, limit: pageSize)
            var frames = page.events.map(\.frame)
            if first {
                first = false
                if page.hasGap(after: resumePoint) {
                    frames.insert(resetFrame(resumePoint: resumePoint, page: page), at: 0)
                }
            }
            if !frames.isEmpty { try await emit(frames) }
            guard let last = page.events.last?.id else { break }
            replayed += page.events.count
            after = last
            if page.events.count < pageSize { break }
        }
        return replayed
    }

    /// `event: tidings.reset` with the reason, the resume point given and the oldest id available.
    public static func resetFrame(resumePoint: EventID, page: ReplayPage) -> ByteBuffer {
        let oldest = page.oldestRetained.map { "\"\($0)\"" } ?? "null"
        let data = #"{"reason":"history_expired","last_event_id":"\#(resumePoint)","oldest_available":\#(oldest)}"#
        return SSEFrame.event(id: page.resetID, type: .reset, data: data)
    }
}
