public import Foundation
public import NIOCore

/// An event id: strictly increasing in delivery order across a deployment.
public typealias EventID = Int64

/// An event a publisher asked for, validated, before it has an id.
public struct NewEvent: Sendable, Equatable {
    /// Targets without duplicates, in the order first given.
    public var targets: [Target]
    public var type: EventType
    /// `data` as compact JSON text (one line).
    public var data: String
    public var idempotencyKey: String?

    public init(targets: [Target], type: EventType, data: String, idempotencyKey: String? = nil) {
        self.targets = targets
        self.type = type
        self.data = data
        self.idempotencyKey = idempotencyKey
    }
}

/// A stored (or, without `id`, ephemeral) event with its SSE frame, encoded once.
public struct Event: Sendable {
    /// `nil` for an ephemeral event (plain `NOTIFY`): delivered live, never replayed.
    public let id: EventID?
    public let targets: [Target]
    public let type: EventType
    public let data: String
    public let createdAt: Date
    /// The complete SSE frame, shared by every subscriber.
    public let frame: ByteBuffer
    /// The frame as an HTTP/1.1 chunk, for writing straight to a live stream's socket.
    public let chunk: ByteBuffer

    public init(id: EventID?, targets: [Target], type: EventType, data: String, createdAt: Date) {
        self.id = id
        self.targets = targets
        self.type = type
        self.data = data
        self.createdAt = createdAt
        self.frame = SSEFrame.event(id: id, type: type, data: data)
        self.chunk = SSEFrame.httpChunk(frame)
    }
}
