public import Foundation
public import NIOCore
import Synchronization

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

/// A stored (or, without `id`, ephemeral) event, shared by everything that sends it.
///
/// The core knows no wire format: each transport declares an ``EventEncoding`` and asks the event
/// for it. The first subscriber (or replay) that needs an encoding makes it, every later one of
/// any stream gets the same bytes — an event is encoded at most once per encoding, and only for
/// the transports that actually carry it.
public final class Event: Sendable {
    /// `nil` for an ephemeral event (plain `NOTIFY`): delivered live, never replayed.
    public let id: EventID?
    public let targets: [Target]
    public let type: EventType
    public let data: String
    public let createdAt: Date
    private let slot0 = AtomicLazyReference<EncodedBytes>()
    private let slot1 = AtomicLazyReference<EncodedBytes>()
    private let slot2 = AtomicLazyReference<EncodedBytes>()
    private let slot3 = AtomicLazyReference<EncodedBytes>()

    public init(id: EventID?, targets: [Target], type: EventType, data: String, createdAt: Date) {
        self.id = id
        self.targets = targets
        self.type = type
        self.data = data
        self.createdAt = createdAt
    }

    /// The event in `Encoding`'s wire form: made on first use (by whichever thread asks first;
    /// a racing second encoder's bytes are dropped), then shared.
    @inline(__always)
    public func encoded<Encoding: EventEncoding>(_: Encoding.Type) -> ByteBuffer {
        switch Encoding.slot.index {
        case 0: Self.load(slot0, self, Encoding.self)
        case 1: Self.load(slot1, self, Encoding.self)
        case 2: Self.load(slot2, self, Encoding.self)
        default: Self.load(slot3, self, Encoding.self)
        }
    }

    @inline(__always)
    private static func load<Encoding: EventEncoding>(
        _ slot: borrowing AtomicLazyReference<EncodedBytes>, _ event: Event, _: Encoding.Type
    ) -> ByteBuffer {
        if let made = slot.load() { return made.bytes }
        return slot.storeIfNil(EncodedBytes(Encoding.encode(event))).bytes
    }
}

/// One transport's wire form of an event (an SSE frame, a WebSocket frame, …), made once per
/// event and cached on it.
public protocol EventEncoding {
    /// Where the event caches this encoding; each encoding in a process has its own.
    static var slot: EncodingSlot { get }
    /// The event's bytes on this transport's wire.
    static func encode(_ event: Event) -> ByteBuffer
}

/// A cache place on every ``Event`` (there are four).
public struct EncodingSlot: Sendable, Equatable {
    public static let count = 4
    let index: Int

    public init(_ index: Int) {
        precondition(index >= 0 && index < Self.count, "an event has \(Self.count) encoding slots")
        self.index = index
    }
}

final class EncodedBytes: Sendable {
    let bytes: ByteBuffer

    init(_ bytes: ByteBuffer) {
        self.bytes = bytes
    }
}
