/// Open streams of one user, over every instance that shares the store.
public struct UserPresence: Sendable, Equatable {
    public var connections: Int

    public init(connections: Int) {
        self.connections = connections
    }
}

/// Open streams subscribed to one topic, and how many distinct users hold them, over every
/// instance that shares the store.
public struct TopicPresence: Sendable, Equatable {
    public var connections: Int
    public var users: Int

    public init(connections: Int, users: Int) {
        self.connections = connections
        self.users = users
    }
}

/// Answers `GET /presence/…`: streams of any transport.
///
/// In memory mode the bus of this process is the whole deployment (``BusPresence``); in
/// PostgreSQL mode every instance reports to the database and the answer is their sum, at most
/// a few seconds old.
public protocol PresenceSource: Sendable {
    /// Open streams of the user `id`.
    func user(_ id: String) async throws -> UserPresence
    /// Open streams subscribed to the topic `name`, and their distinct users.
    func topic(_ name: String) async throws -> TopicPresence
}

/// Presence straight from this process's event bus (memory mode: one instance).
public struct BusPresence: PresenceSource {
    let bus: EventBus

    public init(bus: EventBus) {
        self.bus = bus
    }

    public func user(_ id: String) -> UserPresence {
        UserPresence(connections: bus.connections(user: id))
    }

    public func topic(_ name: String) -> TopicPresence {
        let (connections, users) = bus.presence(topic: name)
        return TopicPresence(connections: connections, users: users)
    }
}
