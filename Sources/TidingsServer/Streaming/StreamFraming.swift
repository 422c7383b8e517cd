import NIOCore
import TidingsCore

/// What differs between the transports whose streams live on a connection of their own: the
/// bytes of an event (encoded once per event for every stream of the transport), of a
/// keep-alive and of the goodbye, and how a peer is expected to behave.
enum StreamFraming: Sendable {
    /// `GET /events`: SSE frames in HTTP/1.1 chunks.
    case sse
    /// `GET /ws`: WebSocket text frames.
    case webSocket

    @inline(__always)
    func encoded(_ event: Event) -> ByteBuffer {
        switch self {
        case .sse: event.encoded(SSEChunkEncoding.self)
        case .webSocket: event.encoded(WebSocketEventEncoding.self)
        }
    }

    /// Sent when the stream was silent for `--keepalive` (SSE) or every `--keepalive` (WebSocket).
    var keepAlive: ByteBuffer {
        switch self {
        case .sse: SSEFrame.keepAliveChunk
        case .webSocket: WebSocketWire.ping
        }
    }

    /// The last bytes of a stream that ended for `reason`.
    func goodbye(_ reason: StreamEnd) -> ByteBuffer {
        switch self {
        case .sse: SSEFrame.lastChunk
        case .webSocket: WebSocketWire.close(WebSocketWire.closeCode(for: reason))
        }
    }

    /// The last bytes of a stream a drain ended: an SSE stream first gets `retry: <ms>`, so the
    /// clients of a draining instance reconnect spread out.
    func drainGoodbye(retryMilliseconds: Int?) -> ByteBuffer {
        guard self == .sse, let retryMilliseconds else { return goodbye(.shutdown) }
        var bytes = SSEFrame.httpChunk(ByteBuffer(string: "retry: \(retryMilliseconds)\n\n"))
        bytes.writeImmutableBuffer(SSEFrame.lastChunk)
        return bytes
    }

    /// A client that stopped reading still gets a goodbye (it says "resume": close code 1008);
    /// an SSE stream has nothing to say that `Last-Event-ID` does not.
    var goodbyeWhenSlow: Bool {
        self == .webSocket
    }

    /// Keep-alives that may go unanswered before the peer counts as gone: two WebSocket pings.
    var maxUnansweredKeepAlives: Int? {
        self == .webSocket ? 2 : nil
    }

    /// The client speaks after its request (WebSocket frames); an SSE client's bytes are dropped.
    var readsClient: Bool {
        self == .webSocket
    }
}
