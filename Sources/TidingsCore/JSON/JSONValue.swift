/// A parsed JSON document that keeps numbers as written and where each value came from.
///
/// Tidings only looks into the envelope of a publish request; `data` is passed on as compact JSON
/// text made from the original bytes (`JSONParser.compact`), so numbers keep their exact digits.
public indirect enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number's text exactly as written (validated against the JSON grammar).
    case number(String)
    case string(String)
    case array([JSONValue])
    case object([Member])

    /// One `"key": value` of an object, with the byte range of the value in the source.
    public struct Member: Sendable, Equatable {
        public var key: String
        public var value: JSONValue
        public var range: Range<Int>
    }

    /// A short name of the value's kind for error messages.
    public var kindName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }
}

/// Why a document is not valid JSON, with the byte offset where parsing stopped.
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var offset: Int
    public var reason: String

    public var description: String { "\(reason) at byte \(offset)" }
}
