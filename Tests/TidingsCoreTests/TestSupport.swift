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

extension Subscription {
    /// The next batch, or the end reason.
    func nextBatch() async -> Result<[Delivery], StreamEndError> {
        var buffer: [Delivery] = []
        while true {
            switch await next(into: &buffer) {
            case .events: return .success(buffer)
            case .keepAlive: continue
            case .end(let reason): return .failure(StreamEndError(reason: reason))
            }
        }
    }

    /// Collects events until `count` have arrived (or the stream ends).
    func collect(_ count: Int) async -> [Delivery] {
        var all: [Delivery] = []
        while all.count < count {
            guard case .success(let batch) = await nextBatch() else { break }
            all += batch
        }
        return all
    }
}

struct StreamEndError: Error, Equatable {
    var reason: StreamEnd
}
