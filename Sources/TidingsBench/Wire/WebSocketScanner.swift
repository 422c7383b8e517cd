/// A lean WebSocket (RFC 6455) frame scanner for the load generator's `GET /ws` streams.
///
/// Like ``SSEScanner`` it keeps no message: it follows the frame headers (7-, 16- and 64-bit
/// lengths), reads the gateway's JSON text messages in place with ``EventFields`` — `id`,
/// `event` and the send time at the start of `data` — and hands out control frames. Only a
/// message split across reads is copied, its first ``carryLimit`` bytes (the fields come first
/// in the gateway's frames); the rest of a long payload is skipped by count.
struct WebSocketScanner {
    /// What the scanned bytes completed, in order.
    enum Output {
        /// An `{"type":"event",…}` message.
        case event(ScannedEvent)
        /// A ping with its payload (at most 125 bytes), to be answered with a pong.
        case ping(UnsafeRawBufferPointer)
        /// A close frame with its status code, if it had one. Nothing after it is read.
        case close(code: UInt16?)
    }

    struct ProtocolError: Error, CustomStringConvertible {
        var description: String
    }

    static let carryLimit = 1024

    private enum State {
        case header
        case payload
        case closed
    }

    private var state = State.header
    /// The frame header so far (2 to 14 bytes).
    private var header: [UInt8] = []
    private var headerNeeded = 2
    private var opcode: UInt8 = 0
    private var fin = false
    private var remaining: UInt64 = 0
    private var payloadSeen: UInt64 = 0
    /// A data message is open (a frame without FIN was seen), and whether it is text.
    private var messageOpen = false
    private var messageIsText = false
    /// The first bytes of a text message that did not arrive in one read.
    private var carry: [UInt8] = []
    /// The payload of a control frame.
    private var control: [UInt8] = []
    /// The last event id seen (kept across messages: the resume point).
    private(set) var lastID: Int64?

    init() {
        header.reserveCapacity(14)
    }

    /// Scans bytes that follow the `101` answer; calls `output` for everything they complete.
    mutating func scan(_ bytes: UnsafeRawBufferPointer, _ output: (Output) -> Void) throws(ProtocolError) {
        var offset = 0
        let count = bytes.count
        while offset < count {
            switch state {
            case .closed:
                return
            case .header:
                let take = min(headerNeeded - header.count, count - offset)
                header.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + take)]))
                offset += take
                if header.count == 2 {
                    let length = header[1] & 0x7F
                    headerNeeded = 2 + (length == 126 ? 2 : length == 127 ? 8 : 0) + (header[1] & 0x80 != 0 ? 4 : 0)
                }
                if header.count == headerNeeded {
                    try startFrame(output)
                }
            case .payload:
                let available = count - offset
                let take = Int(min(remaining, UInt64(available)))
                let chunk = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + take)])
                offset += take
                if opcode >= 0x8 {
                    control.append(contentsOf: chunk)
                } else if messageIsText {
                    if payloadSeen == 0, UInt64(take) == remaining, fin, carry.isEmpty, opcode != 0 {
                        // The whole message is in this read: read it in place.
                        remaining = 0
                        payloadSeen = UInt64(take)
                        messageOpen = false
                        message(chunk, output)
                        endFrame()
                        continue
                    }
                    let room = Self.carryLimit - carry.count
                    if room > 0 { carry.append(contentsOf: chunk.prefix(room)) }
                }
                remaining -= UInt64(take)
                payloadSeen += UInt64(take)
                if remaining == 0 { finishFrame(output) }
            }
        }
    }

    private mutating func startFrame(_ output: (Output) -> Void) throws(ProtocolError) {
        let first = header[0]
        let second = header[1]
        fin = first & 0x80 != 0
        opcode = first & 0x0F
        guard first & 0x70 == 0 else { throw ProtocolError(description: "a WebSocket frame with RSV bits set (no extension was negotiated)") }
        guard second & 0x80 == 0 else { throw ProtocolError(description: "a masked WebSocket frame from the server") }
        var length = UInt64(second & 0x7F)
        if length == 126 {
            length = UInt64(header[2]) << 8 | UInt64(header[3])
        } else if length == 127 {
            length = 0
            for index in 2..<10 { length = length << 8 | UInt64(header[index]) }
            guard length >> 63 == 0 else { throw ProtocolError(description: "a WebSocket frame length with the top bit set") }
        }
        switch opcode {
        case 0x0:
            guard messageOpen else { throw ProtocolError(description: "a continuation frame outside a message") }
        case 0x1, 0x2:
            guard !messageOpen else { throw ProtocolError(description: "a new message inside a fragmented one") }
            messageIsText = opcode == 0x1
            messageOpen = true
            carry.removeAll(keepingCapacity: true)
        case 0x8, 0x9, 0xA:
            guard fin, length <= 125 else { throw ProtocolError(description: "a fragmented or long control frame") }
            control.removeAll(keepingCapacity: true)
        default:
            throw ProtocolError(description: "a WebSocket frame with the reserved opcode \(opcode)")
        }
        remaining = length
        payloadSeen = 0
        state = .payload
        if length == 0 { finishFrame(output) }
    }

    private mutating func finishFrame(_ output: (Output) -> Void) {
        switch opcode {
        case 0x0, 0x1, 0x2:
            if fin {
                messageOpen = false
                if messageIsText {
                    let text = carry
                    text.withUnsafeBytes { message($0, output) }
                }
            }
        case 0x8:
            let code = control.count >= 2 ? UInt16(control[0]) << 8 | UInt16(control[1]) : nil
            state = .closed
            header.removeAll(keepingCapacity: true)
            output(.close(code: code))
            return
        case 0x9:
            control.withUnsafeBytes { output(.ping($0)) }
        default:
            break  // pong
        }
        endFrame()
    }

    private mutating func endFrame() {
        state = .header
        header.removeAll(keepingCapacity: true)
        headerNeeded = 2
    }

    /// One complete text message (or the first `carryLimit` bytes of it).
    private mutating func message(_ payload: UnsafeRawBufferPointer, _ output: (Output) -> Void) {
        var scan = JSONScan(payload)
        var fields = EventFields()
        _ = fields.read(&scan)
        guard fields.isEvent == true else { return }  // ack, error
        if let id = fields.id { lastID = id }
        output(.event(ScannedEvent(sentAt: fields.sentAt, id: lastID, isReset: fields.isReset)))
    }
}

/// Client frames, masked as RFC 6455 requires of a client.
enum WebSocketFrameWriter {
    /// Appends one masked frame (`opcode` with FIN) carrying `payload` (at most 125 bytes: the
    /// pongs and close frames the tool sends) with mask key `mask`.
    static func appendControl(opcode: UInt8, payload: UnsafeRawBufferPointer, mask: UInt32, to out: inout [UInt8]) {
        precondition(payload.count <= 125, "control frames carry at most 125 bytes")
        out.append(0x80 | opcode)
        out.append(0x80 | UInt8(payload.count))
        let key: (UInt8, UInt8, UInt8, UInt8) = (UInt8(mask >> 24), UInt8(truncatingIfNeeded: mask >> 16), UInt8(truncatingIfNeeded: mask >> 8), UInt8(truncatingIfNeeded: mask))
        out.append(key.0)
        out.append(key.1)
        out.append(key.2)
        out.append(key.3)
        for (index, byte) in payload.enumerated() {
            let k: UInt8
            switch index & 3 {
            case 0: k = key.0
            case 1: k = key.1
            case 2: k = key.2
            default: k = key.3
            }
            out.append(byte ^ k)
        }
    }

    /// A pong echoing a ping's payload.
    static func appendPong(echoing payload: UnsafeRawBufferPointer, mask: UInt32, to out: inout [UInt8]) {
        appendControl(opcode: 0xA, payload: payload, mask: mask, to: &out)
    }

    /// A close frame with `code` (the answer to the server's close).
    static func appendClose(code: UInt16?, mask: UInt32, to out: inout [UInt8]) {
        guard let code else {
            appendControl(opcode: 0x8, payload: UnsafeRawBufferPointer(start: nil, count: 0), mask: mask, to: &out)
            return
        }
        withUnsafeBytes(of: code.bigEndian) { appendControl(opcode: 0x8, payload: $0, mask: mask, to: &out) }
    }
}
