import TidingsCore

/// Where each transport's encoding of an event is cached on the event (see ``EventEncoding``):
/// every encoding in the process has its own slot, listed here so no two share one.
extension EncodingSlot {
    /// ``SSEFrameEncoding``: the SSE frame, for replay through Hummingbird's writer.
    static let sseFrame = EncodingSlot(0)
    /// ``SSEChunkEncoding``: the SSE frame as an HTTP/1.1 chunk, for live streams.
    static let sseChunk = EncodingSlot(1)
    /// ``WebSocketEventEncoding``: a complete server-to-client WebSocket text frame.
    static let webSocketFrame = EncodingSlot(2)
    /// ``PollEventEncoding``: the event's JSON object as a long-poll answer lists it.
    static let pollObject = EncodingSlot(3)
}
