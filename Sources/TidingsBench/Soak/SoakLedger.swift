/// What the soak's tracked streams of one `StreamLoop` received: a log per stream index, across
/// its reconnects. Touched only on that loop's thread (it is the loop's `observer`).
final class SoakLedger: @unchecked Sendable {
    // @unchecked: only used on the thread of the StreamLoop it observes.
    /// Streams at or above this index (the churn) are not logged.
    let trackedBelow: Int
    private(set) var logs: [Int: [ReceivedEntry]] = [:]
    /// The last `id:` each stream saw (an event's or a reset's): where a resume starts.
    private(set) var lastIDs: [Int: Int64] = [:]

    init(trackedBelow: Int) {
        self.trackedBelow = trackedBelow
    }

    func record(index: Int, event: ScannedEvent) {
        guard index < trackedBelow, let id = event.id else { return }
        logs[index, default: []].append(event.isReset ? .reset(id) : .event(id))
        lastIDs[index] = id
    }

    /// A stream that began elsewhere (a slow client's own socket) continues here.
    func seed(index: Int, entries: [ReceivedEntry], lastID: Int64?) {
        logs[index, default: []].append(contentsOf: entries)
        if let lastID { lastIDs[index] = lastID }
    }
}
