/// Where an event goes: the stream of one user or a named topic.
///
/// Written `user:<id>` or `topic:<name>`; an id or a name is 1–128 characters of `[A-Za-z0-9._@:-]`.
public enum Target: Hashable, Sendable, CustomStringConvertible {
    case user(String)
    case topic(String)

    /// The most characters a user id or topic name may have.
    public static let maxNameLength = 128

    /// Parses `user:<id>` or `topic:<name>`; `nil` when the text is not a valid target.
    public init?(_ text: String) {
        if text.hasPrefix("user:") {
            let name = String(text.dropFirst(5))
            guard Target.isValidName(name) else { return nil }
            self = .user(name)
        } else if text.hasPrefix("topic:") {
            let name = String(text.dropFirst(6))
            guard Target.isValidName(name) else { return nil }
            self = .topic(name)
        } else {
            return nil
        }
    }

    public var description: String {
        switch self {
        case .user(let id): "user:\(id)"
        case .topic(let name): "topic:\(name)"
        }
    }

    /// The user id or topic name without its kind.
    public var name: String {
        switch self {
        case .user(let id): id
        case .topic(let name): name
        }
    }

    /// True for 1–128 characters of `[A-Za-z0-9._@:-]`.
    public static func isValidName(_ name: String) -> Bool {
        let utf8 = name.utf8
        guard !utf8.isEmpty, utf8.count <= maxNameLength else { return false }
        return utf8.allSatisfy(isNameByte)
    }

    @inline(__always)
    static func isNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"),
            UInt8(ascii: "@"), UInt8(ascii: ":"), UInt8(ascii: "-"):
            true
        default:
            false
        }
    }
}
