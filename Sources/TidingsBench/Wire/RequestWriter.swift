import NIOCore

/// Writes the few HTTP/1.1 requests the load generator sends, straight into byte buffers.
enum RequestWriter {
    /// The request that opens a stream with a bearer token and an optional resume point:
    /// `GET /events?topic=…` (`Last-Event-ID`), the WebSocket upgrade `GET /ws?topic=…`, or the
    /// first `GET /poll?topic=…` (both with `last_event_id` in the query).
    static func subscribe(
        path: String, host: String, token: String?, lastEventID: Int64?, transport: Transport = .sse,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 240 + path.utf8.count + (token?.utf8.count ?? 0))
        buffer.writeStaticString("GET ")
        buffer.writeString(path)
        if transport != .sse, let lastEventID {
            buffer.writeString(path.contains("?") ? "&" : "?")
            buffer.writeStaticString("last_event_id=")
            writeDecimal(UInt64(max(0, lastEventID)), into: &buffer)
        }
        buffer.writeStaticString(" HTTP/1.1\r\nHost: ")
        buffer.writeString(host)
        switch transport {
        case .sse:
            buffer.writeStaticString("\r\nAccept: text/event-stream\r\n")
        case .ws:
            buffer.writeStaticString("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ")
            buffer.writeString(webSocketKey())
            buffer.writeStaticString("\r\n")
        case .poll:
            buffer.writeStaticString("\r\nAccept: application/json\r\n")
        }
        if let token {
            buffer.writeStaticString("Authorization: Bearer ")
            buffer.writeString(token)
            buffer.writeStaticString("\r\n")
        }
        if transport == .sse, let lastEventID {
            buffer.writeStaticString("Last-Event-ID: ")
            writeDecimal(UInt64(max(0, lastEventID)), into: &buffer)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("\r\n")
        return buffer
    }

    /// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64.
    static func webSocketKey() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return base64(bytes)
    }

    static func base64(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        var index = 0
        while index < bytes.count {
            let chunk = bytes[index..<min(index + 3, bytes.count)]
            var value = UInt32(0)
            for (offset, byte) in chunk.enumerated() { value |= UInt32(byte) << (16 - 8 * offset) }
            for position in 0..<4 {
                out.append(position <= chunk.count ? alphabet[Int(value >> (18 - 6 * position)) & 63] : UInt8(ascii: "="))
            }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The parts of a re-poll on a keep-alive connection: `GET <path>` and the rest of the
    /// request after the cursor, so that ``appendPoll(_:lastEventID:to:)`` allocates nothing.
    struct PollRequest {
        var head: [UInt8]
        var separator: UInt8
        var tail: [UInt8]
    }

    static func pollRequest(path: String, host: String, token: String?) -> PollRequest {
        var tail = Array(" HTTP/1.1\r\nHost: \(host)\r\nAccept: application/json\r\n".utf8)
        if let token { tail += Array("Authorization: Bearer \(token)\r\n".utf8) }
        tail += Array("\r\n".utf8)
        return PollRequest(head: Array("GET \(path)".utf8), separator: path.contains("?") ? UInt8(ascii: "&") : UInt8(ascii: "?"), tail: tail)
    }

    /// Appends `GET /poll?…&last_event_id=N` to `out` (no cursor: the gateway answers at once
    /// with the current position).
    static func appendPoll(_ request: PollRequest, lastEventID: Int64?, to out: inout [UInt8]) {
        out.append(contentsOf: request.head)
        if let lastEventID {
            out.append(request.separator)
            out.append(contentsOf: "last_event_id=".utf8)
            appendDecimal(UInt64(max(0, lastEventID)), to: &out)
        }
        out.append(contentsOf: request.tail)
    }

    static func appendDecimal(_ value: UInt64, to out: inout [UInt8]) {
        var divisor: UInt64 = 1
        while value / divisor >= 10 { divisor *= 10 }
        while divisor > 0 {
            out.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
            divisor /= 10
        }
    }

    /// `POST /events` with a JSON body.
    static func publish(path: String, host: String, token: String?, body: ByteBuffer, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("POST ")
        buffer.writeString(path)
        buffer.writeStaticString(" HTTP/1.1\r\nHost: ")
        buffer.writeString(host)
        buffer.writeStaticString("\r\nContent-Type: application/json\r\n")
        if let token {
            buffer.writeStaticString("Authorization: Bearer ")
            buffer.writeString(token)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("Content-Length: ")
        writeDecimal(UInt64(body.readableBytes), into: &buffer)
        buffer.writeStaticString("\r\n\r\n")
        buffer.writeImmutableBuffer(body)
    }

    /// Writes a non-negative integer in decimal without allocating.
    static func writeDecimal(_ value: UInt64, into buffer: inout ByteBuffer) {
        if value == 0 {
            buffer.writeInteger(UInt8(ascii: "0"))
            return
        }
        var digits = 0
        var probe = value
        while probe > 0 {
            digits += 1
            probe /= 10
        }
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: digits) { pointer in
            var rest = value
            var index = digits
            while index > 0 {
                index -= 1
                pointer[index] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            }
            return digits
        }
    }
}

/// The body of one publish request: the event data starts with the send time so that a
/// subscriber can compute publish-to-receive latency (`{"t":<monotonic ns>,"n":<seq>…}`).
struct PublishBody {
    enum Targeting: Sendable {
        /// Every event to one topic.
        case topic(String)
        /// Event `n` to user `<prefix><n % count>`.
        case users(prefix: String, count: Int)
    }

    let targeting: Targeting
    let eventType: String
    let batch: Int
    /// Padding added to `data` (`"p":"xxx…"`), to reach a payload size.
    let padding: String

    /// Writes the body for events `sequence ..< sequence + batch`, all stamped `sentAt`.
    func write(sequence: UInt64, sentAt: UInt64, into buffer: inout ByteBuffer) {
        if batch > 1 { buffer.writeStaticString("[") }
        for offset in 0..<UInt64(max(1, batch)) {
            if offset > 0 { buffer.writeStaticString(",") }
            let n = sequence + offset
            buffer.writeStaticString(#"{"event":""#)
            buffer.writeString(eventType)
            switch targeting {
            case .topic(let topic):
                buffer.writeStaticString(#"","topic":""#)
                buffer.writeString(topic)
            case .users(let prefix, let count):
                buffer.writeStaticString(#"","user":""#)
                buffer.writeString(prefix)
                RequestWriter.writeDecimal(n % UInt64(max(1, count)), into: &buffer)
            }
            // data last: the C reference server takes everything after "data": as the data.
            buffer.writeStaticString(#"","data":{"t":"#)
            RequestWriter.writeDecimal(sentAt, into: &buffer)
            buffer.writeStaticString(#","n":"#)
            RequestWriter.writeDecimal(n, into: &buffer)
            if !padding.isEmpty {
                buffer.writeStaticString(#","p":""#)
                buffer.writeString(padding)
                buffer.writeStaticString("\"")
            }
            buffer.writeStaticString("}}")
        }
        if batch > 1 { buffer.writeStaticString("]") }
    }
}
