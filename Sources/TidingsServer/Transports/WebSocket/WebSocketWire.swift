import NIOCore
import TidingsCore

/// Server-to-client WebSocket frames (RFC 6455 §5.2), written whole. A server frame is never
/// masked, so an event's frame is the same bytes for every receiver and is encoded once per
/// event (``WebSocketEventEncoding``). Client frames are read by NIO's `WebSocketFrameDecoder`.
enum WebSocketWire {
    private static let allocator = ByteBufferAllocator()

    enum Opcode: UInt8 {
        case text = 0x1
        case close = 0x8
        case ping = 0x9
        case pong = 0xA
    }

    /// One final frame of `opcode` around `payload`.
    static func frame(_ opcode: Opcode, payloadLength: Int, writePayload: (inout ByteBuffer) -> Void) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: payloadLength + 10)
        buffer.writeInteger(0x80 | opcode.rawValue)
        if payloadLength < 126 {
            buffer.writeInteger(UInt8(payloadLength))
        } else if payloadLength <= Int(UInt16.max) {
            buffer.writeInteger(UInt8(126))
            buffer.writeInteger(UInt16(payloadLength))
        } else {
            buffer.writeInteger(UInt8(127))
            buffer.writeInteger(UInt64(payloadLength))
        }
        let before = buffer.writerIndex
        writePayload(&buffer)
        precondition(buffer.writerIndex - before == payloadLength, "a frame's payload must be as long as its header says")
        return buffer
    }

    static func frame(_ opcode: Opcode, payload: ByteBuffer) -> ByteBuffer {
        frame(opcode, payloadLength: payload.readableBytes) { $0.writeImmutableBuffer(payload) }
    }

    /// A text frame of `text` (valid UTF-8 by construction).
    static func text(_ text: String) -> ByteBuffer {
        frame(.text, payloadLength: text.utf8.count) { $0.writeString(text) }
    }

    /// A ping without payload: the WebSocket keep-alive, which the client must answer.
    static let ping: ByteBuffer = frame(.ping, payload: ByteBuffer())

    static func pong(_ payload: ByteBuffer) -> ByteBuffer {
        frame(.pong, payload: payload)
    }

    /// A close frame with `code` and no reason.
    static func close(_ code: UInt16) -> ByteBuffer {
        frame(.close, payloadLength: 2) { $0.writeInteger(code) }
    }

    /// Close codes of the contract.
    enum CloseCode {
        static let normal: UInt16 = 1000
        static let goingAway: UInt16 = 1001
        static let protocolError: UInt16 = 1002
        static let unsupportedData: UInt16 = 1003
        static let invalidPayload: UInt16 = 1007
        static let policyViolation: UInt16 = 1008
        static let messageTooBig: UInt16 = 1009
        static let tokenExpired: UInt16 = 4401
    }

    /// How a stream that ended for `reason` closes: 1001 on shutdown, 1008 for a slow consumer
    /// (it resumes with its last id), 4401 when the token expired, 1000 otherwise.
    static func closeCode(for reason: StreamEnd) -> UInt16 {
        switch reason {
        case .shutdown: CloseCode.goingAway
        case .slowConsumer: CloseCode.policyViolation
        case .tokenExpired: CloseCode.tokenExpired
        case .clientClosed: CloseCode.normal
        case .keepAliveTimeout: CloseCode.goingAway
        case .protocolError: CloseCode.protocolError
        }
    }
}

/// An event as a WebSocket text frame: `{"type":"event","id":"…","event":"…","data":…}` (no `id`
/// for an ephemeral event). Nothing needs escaping: the id is digits, the type is validated
/// (`[A-Za-z0-9._:-]`) and `data` is already compact JSON.
enum WebSocketEventEncoding: EventEncoding {
    static var slot: EncodingSlot { .webSocketFrame }

    static func encode(_ event: Event) -> ByteBuffer {
        let id = event.id.map(String.init)
        let length = 35 + (id.map { $0.utf8.count + 8 } ?? 0) + event.type.rawValue.utf8.count + event.data.utf8.count
        return WebSocketWire.frame(.text, payloadLength: length) { buffer in
            buffer.writeStaticString(#"{"type":"event","#)
            if let id {
                buffer.writeStaticString(#""id":""#)
                buffer.writeString(id)
                buffer.writeStaticString(#"","#)
            }
            buffer.writeStaticString(#""event":""#)
            buffer.writeString(event.type.rawValue)
            buffer.writeStaticString(#"","data":"#)
            buffer.writeString(event.data)
            buffer.writeStaticString("}")
        }
    }
}
