/// An incremental Server-Sent Events parser following the WHATWG event-stream interpretation:
/// lines end in CRLF, LF or CR (also across chunk boundaries); `data` lines accumulate; `id`
/// with a NUL is ignored; comments are reported so keep-alives can be observed.
public struct SSEParser: Sendable {
    /// What the stream said.
    public enum Message: Sendable, Equatable {
        case event(SSEEvent)
        case comment(String)
        case retry(Int)
    }

    private var line: [UInt8] = []
    private var afterCR = false
    private var data: [UInt8] = []
    private var hasData = false
    private var eventType = ""
    /// The last event id seen (persists across events, as in a browser).
    public private(set) var lastEventID = ""

    public init() {}

    /// Feeds bytes; returns the messages completed by them.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [Message] {
        var messages: [Message] = []
        for byte in bytes {
            if afterCR {
                afterCR = false
                if byte == UInt8(ascii: "\n") { continue }
            }
            switch byte {
            case UInt8(ascii: "\r"):
                afterCR = true
                processLine(into: &messages)
            case UInt8(ascii: "\n"):
                processLine(into: &messages)
            default:
                line.append(byte)
            }
        }
        return messages
    }

    private mutating func processLine(into messages: inout [Message]) {
        defer { line.removeAll(keepingCapacity: true) }
        if line.isEmpty {
            dispatch(into: &messages)
            return
        }
        if line[0] == UInt8(ascii: ":") {
            var text = line.dropFirst()
            if text.first == UInt8(ascii: " ") { text = text.dropFirst() }
            messages.append(.comment(String(decoding: text, as: UTF8.self)))
            return
        }
        let field: ArraySlice<UInt8>
        var value: ArraySlice<UInt8>
        if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
            field = line[..<colon]
            value = line[(colon + 1)...]
            if value.first == UInt8(ascii: " ") { value = value.dropFirst() }
        } else {
            field = line[...]
            value = []
        }
        switch String(decoding: field, as: UTF8.self) {
        case "data":
            if hasData { data.append(UInt8(ascii: "\n")) }
            data.append(contentsOf: value)
            hasData = true
        case "event":
            eventType = String(decoding: value, as: UTF8.self)
        case "id":
            if !value.contains(0) { lastEventID = String(decoding: value, as: UTF8.self) }
        case "retry":
            if !value.isEmpty, value.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                let milliseconds = Int(String(decoding: value, as: UTF8.self))
            {
                messages.append(.retry(milliseconds))
            }
        default:
            break
        }
    }

    private mutating func dispatch(into messages: inout [Message]) {
        defer {
            data.removeAll(keepingCapacity: true)
            hasData = false
            eventType = ""
        }
        guard hasData else { return }
        messages.append(
            .event(
                SSEEvent(
                    id: lastEventID.isEmpty ? nil : lastEventID,
                    type: eventType.isEmpty ? "message" : eventType,
                    data: String(decoding: data, as: UTF8.self))))
    }
}

/// One dispatched event as a browser's EventSource would see it.
public struct SSEEvent: Sendable, Equatable, CustomStringConvertible {
    /// The last event id at dispatch (`lastEventId`); `nil` when none was ever set.
    public var id: String?
    public var type: String
    public var data: String

    public init(id: String?, type: String, data: String) {
        self.id = id
        self.type = type
        self.data = data
    }

    public var description: String { "\(id ?? "-") \(type) \(data)" }
}
