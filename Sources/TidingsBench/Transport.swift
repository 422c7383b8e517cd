/// How the load generator's streams reach the gateway.
public enum Transport: String, Sendable, CaseIterable, Codable {
    /// `GET /events`: Server-Sent Events.
    case sse
    /// `GET /ws`: a WebSocket carrying one JSON text frame per event.
    case ws
    /// `GET /poll`: long polling on a keep-alive connection, re-polled at once after each answer.
    case poll

    /// The request path of a stream (below the gateway's base path), its query included.
    func path(topic: String?) -> String {
        var query: [String] = []
        if let topic { query.append("topic=\(topic)") }
        let base: String
        switch self {
        case .sse: base = "/events"
        case .ws: base = "/ws"
        case .poll:
            base = "/poll"
            query.append("timeout=25s")
        }
        return query.isEmpty ? base : base + "?" + query.joined(separator: "&")
    }

    /// The status that opens a stream.
    var openStatus: Int { self == .ws ? 101 : 200 }
}
