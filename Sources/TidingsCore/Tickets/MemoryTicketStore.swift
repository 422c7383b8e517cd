import Foundation
import Synchronization

/// Tickets kept in this process (memory mode).
public final class MemoryTicketStore: TicketStore {
    private struct Entry {
        var grant: TicketGrant
        var expiresAt: Date
    }

    private let clock: any WallClock
    private let tickets = Mutex<[String: Entry]>([:])

    public init(clock: any WallClock = SystemClock()) {
        self.clock = clock
    }

    public func issue(_ grant: TicketGrant, ttl: Duration) async throws -> String {
        let ticket = TicketID.make()
        let now = clock.now()
        let expiresAt = now.addingTimeInterval(ttl.timeInterval)
        tickets.withLock { tickets in
            tickets = tickets.filter { $0.value.expiresAt > now }
            tickets[ticket] = Entry(grant: grant, expiresAt: expiresAt)
        }
        return ticket
    }

    public func redeem(_ ticket: String) async throws -> TicketGrant? {
        let now = clock.now()
        let entry = tickets.withLock { $0.removeValue(forKey: ticket) }
        guard let entry, entry.expiresAt > now else { return nil }
        return entry.grant
    }
}
