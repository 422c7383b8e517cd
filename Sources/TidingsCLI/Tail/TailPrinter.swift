import Foundation
import Synchronization

/// The lines `tidings tail` prints, whichever the transport: `id<TAB>event<TAB>data`, `-` for
/// an event without id; and the resume point, the last id printed.
///
/// A class behind a lock because the WebSocket client delivers messages in a closure of its own.
final class TailPrinter: Sendable {
    private struct State {
        var lastID: String?
        var printed = 0
    }

    private let state: Mutex<State>
    /// `--count`: stop after this many events.
    let limit: Int?

    init(lastID: String?, limit: Int?) {
        state = Mutex(State(lastID: lastID))
        self.limit = limit
    }

    /// The id to resume after.
    var lastID: String? {
        get { state.withLock { $0.lastID } }
    }

    /// Moves the resume point without printing (a long-poll answer's `last_event_id`).
    func resume(after id: String) {
        state.withLock { $0.lastID = id }
    }

    /// True once `--count` events were printed.
    var isDone: Bool {
        guard let limit else { return false }
        return state.withLock { $0.printed >= limit }
    }

    /// Prints one event (`id` nil for an ephemeral one); true when that was the last one wanted.
    func print(id: String?, event: String, data: String) -> Bool {
        let line = "\(id ?? "-")\t\(event)\t\(data)\n"
        let done = state.withLock { state in
            if let id { state.lastID = id }
            state.printed += 1
            return limit.map { state.printed >= $0 } ?? false
        }
        FileHandle.standardOutput.write(Data(line.utf8))
        return done
    }
}
