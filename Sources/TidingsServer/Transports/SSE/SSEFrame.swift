public import NIOCore
public import TidingsCore

/// Server-Sent Events wire format.
///
/// Every function returns complete frames; an event is encoded once and the same bytes go to all
/// of its subscribers. Data is split on CR, LF and CRLF into several `data:` lines, so no input
/// can break the framing; `id:` and `event:` only ever carry validated values.
public enum SSEFrame {
    private static let allocator = ByteBufferAllocator()

    /// `id: <id>\nevent: <type>\ndata: <line>\n…\n`
    public static func event(id: EventID?, type: EventType, data: String) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: data.utf8.count + type.rawValue.utf8.count + 40)
        if let id {
            buffer.writeStaticString("id: ")
            buffer.writeString(String(id))
            buffer.writeInteger(UInt8(ascii: "\n"))
        }
        buffer.writeStaticString("event: ")
        buffer.writeString(type.rawValue)
        buffer.writeInteger(UInt8(ascii: "\n"))
        writeData(data, into: &buffer)
        buffer.writeInteger(UInt8(ascii: "\n"))
        return buffer
    }

    /// The first bytes of every stream: the reconnection delay and a comment.
    public static func preamble(retryMilliseconds: Int) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 48)
        buffer.writeString("retry: \(retryMilliseconds)\n: tidings\n\n")
        return buffer
    }

    /// `: keep-alive\n\n`
    public static let keepAlive: ByteBuffer = {
        var buffer = allocator.buffer(capacity: 14)
        buffer.writeStaticString(": keep-alive\n\n")
        return buffer
    }()

    /// `frame` as one HTTP/1.1 chunk (`<hex length>\r\n<frame>\r\n`): what a live stream writes
    /// straight to its socket, encoded once per event for all subscribers.
    public static func httpChunk(_ frame: ByteBuffer) -> ByteBuffer {
        let header = String(frame.readableBytes, radix: 16)
        var buffer = allocator.buffer(capacity: frame.readableBytes + header.utf8.count + 4)
        buffer.writeString(header)
        buffer.writeStaticString("\r\n")
        buffer.writeImmutableBuffer(frame)
        buffer.writeStaticString("\r\n")
        return buffer
    }

    /// ``keepAlive`` as an HTTP/1.1 chunk.
    public static let keepAliveChunk: ByteBuffer = httpChunk(keepAlive)

    /// The zero-length chunk that ends a chunked HTTP/1.1 response (no trailers).
    public static let lastChunk = ByteBuffer(string: "0\r\n\r\n")

    /// Writes `data: …` lines, one per line of `data` (CR, LF and CRLF all end a line).
    static func writeData(_ data: String, into buffer: inout ByteBuffer) {
        var utf8 = data.utf8[...]
        while true {
            buffer.writeStaticString("data: ")
            guard let end = utf8.firstIndex(where: { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }) else {
                buffer.writeBytes(utf8)
                buffer.writeInteger(UInt8(ascii: "\n"))
                return
            }
            buffer.writeBytes(utf8[..<end])
            buffer.writeInteger(UInt8(ascii: "\n"))
            var next = utf8.index(after: end)
            if utf8[end] == UInt8(ascii: "\r"), next < utf8.endIndex, utf8[next] == UInt8(ascii: "\n") {
                next = utf8.index(after: next)
            }
            utf8 = utf8[next...]
        }
    }
}

/// An event as its SSE frame: what a replay writes through Hummingbird's body writer (which
/// chunks it).
enum SSEFrameEncoding: EventEncoding {
    static var slot: EncodingSlot { .sseFrame }

    static func encode(_ event: Event) -> ByteBuffer {
        SSEFrame.event(id: event.id, type: event.type, data: event.data)
    }
}

/// An event as its SSE frame in one HTTP/1.1 chunk: what a live stream writes straight to its
/// socket.
enum SSEChunkEncoding: EventEncoding {
    static var slot: EncodingSlot { .sseChunk }

    static func encode(_ event: Event) -> ByteBuffer {
        SSEFrame.httpChunk(SSEFrame.event(id: event.id, type: event.type, data: event.data))
    }
}
