import NIOCore
import TidingsCore

/// An event as a long-poll answer lists it: `{"id":"…","event":"…","data":…}`. Nothing needs
/// escaping (see ``WebSocketEventEncoding``).
enum PollEventEncoding: EventEncoding {
    static var slot: EncodingSlot { .pollObject }

    static func encode(_ event: Event) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(event.data.utf8.count + event.type.rawValue.utf8.count + 48)
        buffer.writeStaticString(#"{"id":""#)
        buffer.writeString(event.id.map(String.init) ?? "")
        buffer.writeStaticString(#"","event":""#)
        buffer.writeString(event.type.rawValue)
        buffer.writeStaticString(#"","data":"#)
        buffer.writeString(event.data)
        buffer.writeStaticString("}")
        return buffer
    }

    /// `{"events":[…],"last_event_id":"…"}`.
    static func answer(_ events: some Collection<Event>, lastEventID: EventID) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(events.reduce(40) { $0 + $1.data.utf8.count + 64 })
        buffer.writeStaticString(#"{"events":["#)
        var first = true
        for event in events {
            if !first { buffer.writeStaticString(",") }
            first = false
            buffer.writeImmutableBuffer(event.encoded(PollEventEncoding.self))
        }
        buffer.writeStaticString(#"],"last_event_id":""#)
        buffer.writeString(String(lastEventID))
        buffer.writeStaticString(#""}"#)
        return buffer
    }
}
