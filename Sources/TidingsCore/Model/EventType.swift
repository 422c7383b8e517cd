/// An event type, the SSE `event:` field: 1–64 characters of `[A-Za-z0-9._:-]`.
///
/// Construction validates, so no CR, LF or NUL can ever reach an `event:` line.
public struct EventType: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public static let maxLength = 64

    public init?(_ rawValue: String) {
        let utf8 = rawValue.utf8
        guard !utf8.isEmpty, utf8.count <= EventType.maxLength, utf8.allSatisfy(EventType.isTypeByte) else {
            return nil
        }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }

    /// The event a stream sends first when history after the resume point is gone.
    public static let reset = EventType(uncheckedRawValue: "tidings.reset")

    init(uncheckedRawValue: String) {
        self.rawValue = uncheckedRawValue
    }

    @inline(__always)
    static func isTypeByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"),
            UInt8(ascii: ":"), UInt8(ascii: "-"):
            true
        default:
            false
        }
    }
}
