import NIOCore

/// Writes the few HTTP/1.1 requests the load generator sends, straight into byte buffers.
enum RequestWriter {
    /// `GET /events?topic=…` with a bearer token and an optional resume point.
    static func subscribe(
        path: String, host: String, token: String?, lastEventID: Int64?, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 160 + path.utf8.count + (token?.utf8.count ?? 0))
        buffer.writeStaticString("GET ")
        buffer.writeString(path)
        buffer.writeStaticString(" HTTP/1.1\r\nHost: ")
        buffer.writeString(host)
        buffer.writeStaticString("\r\nAccept: text/event-stream\r\n")
        if let token {
            buffer.writeStaticString("Authorization: Bearer ")
            buffer.writeString(token)
            buffer.writeStaticString("\r\n")
        }
        if let lastEventID {
            buffer.writeStaticString("Last-Event-ID: ")
            writeDecimal(UInt64(max(0, lastEventID)), into: &buffer)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("\r\n")
        return buffer
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
