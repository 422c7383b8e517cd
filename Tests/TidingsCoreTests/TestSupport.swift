import Foundation
import NIOCore
import Synchronization
@testable import TidingsCore

/// A wall clock tests move by hand.
final class ManualClock: WallClock {
    private let current: Mutex<Date>

    init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) {
        current = Mutex(start)
    }

    func now() -> Date { current.withLock { $0 } }

    func advance(by seconds: TimeInterval) {
        current.withLock { $0 = $0.addingTimeInterval(seconds) }
    }

    func set(_ date: Date) {
        current.withLock { $0 = date }
    }
}

func newEvent(_ targets: [Target], _ type: String = "test", data: String = "1", key: String? = nil) -> NewEvent {
    NewEvent(targets: targets, type: EventType(type)!, data: data, idempotencyKey: key)
}

/// Parses the ids out of the frames a subscription handed to its writer.
func ids(_ deliveries: [Delivery]) -> [EventID] {
    deliveries.compactMap(\.id)
}

/// Drives a subscription the way the server's stream does: attached as its driver once replay
/// is done, it drains whenever the subscription asks (at once, on the thread that asked; drains
/// of one stream never overlap) and records what each drain took.
final class DrainingDriver: SubscriptionDriver, DrainKick {
    enum Drained: Sendable {
        case events([Delivery])
        case keepAlive
        case end(StreamEnd)
    }

    let subscription: Subscription
    private let state = Mutex<(drained: [Drained], read: Int)>(([], 0))

    /// Attaches a new driver to `subscription` (after its `release`, if it held events).
    init(attachingTo subscription: Subscription) {
        self.subscription = subscription
        subscription.attach(self)
    }

    func schedule() -> (any DrainKick)? { self }

    func kick() {
        state.withLock { state in
            var buffer: [Delivery] = []
            switch subscription.drain(into: &buffer) {
            case .events: state.drained.append(.events(buffer))
            case .keepAlive: state.drained.append(.keepAlive)
            case .end(let reason):
                state.drained.append(.end(reason))
                subscription.detach()
            case nil: break
            }
        }
    }

    /// The next drain not read yet; waits for it up to `timeout`.
    func next(timeout: Duration = .seconds(10)) async throws -> Drained {
        let deadline = ContinuousClock.now + timeout
        while true {
            let next = state.withLock { state -> Drained? in
                guard state.read < state.drained.count else { return nil }
                defer { state.read += 1 }
                return state.drained[state.read]
            }
            if let next { return next }
            guard ContinuousClock.now < deadline else { throw DrainTimeout(timeout: timeout) }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    /// The next batch of events (keep-alives skipped), or the end reason.
    func nextBatch() async throws -> Result<[Delivery], StreamEndError> {
        while true {
            switch try await next() {
            case .events(let batch): return .success(batch)
            case .keepAlive: continue
            case .end(let reason): return .failure(StreamEndError(reason: reason))
            }
        }
    }

    /// Collects events until `count` have arrived (or the stream ends).
    func collect(_ count: Int) async throws -> [Delivery] {
        var all: [Delivery] = []
        while all.count < count {
            guard case .success(let batch) = try await nextBatch() else { break }
            all += batch
        }
        return all
    }
}

struct DrainTimeout: Error, CustomStringConvertible {
    var timeout: Duration
    var description: String { "nothing was drained within \(timeout)" }
}

struct StreamEndError: Error, Equatable {
    var reason: StreamEnd
}

/// An event as a client reads it (id as text, type, data), for comparing what a replay sent.
struct Received: Equatable, CustomStringConvertible {
    var id: String?
    var type: String
    var data: String

    init(id: String?, type: String, data: String) {
        self.id = id
        self.type = type
        self.data = data
    }

    init(_ event: Event) {
        self.init(id: event.id.map(String.init), type: event.type.rawValue, data: event.data)
    }

    var description: String { "\(id ?? "-") \(type) \(data)" }
}
