import Foundation

/// Sends a resuming stream its history: the events of its targets after the resume point up to
/// the horizon (the id the bus had delivered when the stream registered), in id order, paged.
///
/// Live events above the horizon wait in the subscription's queue meanwhile, so history and live
/// meet without a gap or a duplicate. The result's ``Outcome/floor`` tells the subscription
/// which live ids the client already has: it never gets an id at or below its resume point,
/// even from an instance whose horizon is behind it.
///
/// `tidings.reset` comes first when events after the resume point may be gone
/// (`history_expired`), when the resume point is one the store cannot account for
/// (`unknown_position`: above every id issued, or from before a memory store's history), and
/// before any later page whose events the expiry frontier or the pruner overtook while the
/// client read the previous one. A reset's `id:` is never above the horizon: an id above an open
/// hole would make a reconnecting client skip the hole's event.
public enum Replay {
    /// Events fetched per store query.
    public static let defaultPageSize = 500

    /// Why a stream starts over.
    public enum ResetReason: String, Sendable {
        case historyExpired = "history_expired"
        case unknownPosition = "unknown_position"
    }

    /// What a replay did.
    public struct Outcome: Sendable, Equatable {
        /// Events replayed (reset frames not counted).
        public var replayed: Int
        /// Live events at or below it must not reach the stream: replayed, covered by a reset,
        /// or at or below the client's resume point.
        public var floor: EventID
        /// The resets sent.
        public var resets: Int
    }

    /// - Parameter emit: sends a group of events, resets included, in order (one call per page);
    ///   the transport encodes them.
    @discardableResult
    public static func run(
        store: any EventStore,
        targets: Set<Target>,
        after resumePoint: EventID,
        through horizon: EventID,
        pageSize: Int = defaultPageSize,
        emit: ([Event]) async throws -> Void
    ) async throws -> Outcome {
        var outcome = Outcome(replayed: 0, floor: max(resumePoint, horizon), resets: 0)
        if resumePoint > horizon {
            // Either this instance is behind the one the client read from (nothing to replay
            // yet: live events up to the resume point are skipped), or the position is bogus.
            let lastIssued = try await store.lastIssuedID()
            guard resumePoint > lastIssued else { return outcome }
            let oldest = try await store.replay(targets: targets, after: horizon, through: horizon, limit: 0).oldestRetained
            let data = resetData(.unknownPosition, given: resumePoint, oldest: oldest)
            try await emit([reset(id: horizon, data: data)])
            outcome.floor = horizon
            outcome.resets = 1
            return outcome
        }
        let beforeHistory = resumePoint != 0 && resumePoint < store.historyStart
        var after = resumePoint
        var first = true
        while first || after < horizon {
            let page = try await store.replay(targets: targets, after: after, through: horizon, limit: pageSize)
            var events = page.events
            let reason: ResetReason? =
                first && beforeHistory ? .unknownPosition : page.hasGap(after: after) ? .historyExpired : nil
            if let reason {
                let uncapped = reason == .unknownPosition && page.oldestRetained == nil
                    ? max(page.cut, store.historyStart) : page.resetID
                let id = max(after, min(uncapped, horizon))
                events.insert(reset(id: id, data: resetData(reason, given: after, oldest: page.oldestRetained)), at: 0)
                outcome.resets += 1
            }
            first = false
            if !events.isEmpty { try await emit(events) }
            guard let last = page.events.last?.id else { break }
            outcome.replayed += page.events.count
            after = last
            if page.events.count < pageSize { break }
        }
        return outcome
    }

    /// A `tidings.reset` event for one stream.
    static func reset(id: EventID, data: String) -> Event {
        Event(id: id, targets: [], type: .reset, data: data, createdAt: Date())
    }

    /// `{"reason":…,"last_event_id":"<given>","oldest_available":"<id>"|null}`.
    public static func resetData(_ reason: ResetReason, given: EventID, oldest: EventID?) -> String {
        let oldest = oldest.map { "\"\($0)\"" } ?? "null"
        return #"{"reason":"\#(reason.rawValue)","last_event_id":"\#(given)","oldest_available":\#(oldest)}"#
    }
}
