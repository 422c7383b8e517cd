import Foundation
public import TidingsCore

/// Foundation's reading of JSON, the independent side of the fuzz targets' comparisons.
public enum FoundationJSON {
    /// `bytes` parsed by `JSONSerialization` (fragments allowed); `nil` when it refuses them.
    public static func parse(_ bytes: some Sequence<UInt8>) -> Any? {
        try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
    }

    /// `value` as JSON text by `JSONSerialization`.
    public static func text(_ value: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// Two parsed values are the same JSON value.
    public static func equal(_ a: Any?, _ b: Any?) -> Bool {
        switch (a, b) {
        case (nil, nil): return true
        case (let x as [String: Any], let y as [String: Any]):
            return x.count == y.count && x.allSatisfy { key, value in y[key].map { equal(value, $0) } ?? false }
        case (let x as [Any], let y as [Any]):
            return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case (let x as String, let y as String):
            return x == y
        case (is NSNull, is NSNull):
            return true
        case (let x as NSNumber, let y as NSNumber):
            return isBoolean(x) == isBoolean(y) && x.isEqual(y)
        default:
            return false
        }
    }

    /// A JSON `true` or `false` as Foundation reads it (an integer 0 or 1 is not).
    public static func isBoolean(_ value: Any?) -> Bool {
        guard let number = value as? NSNumber else { return false }
        return String(cString: number.objCType) == "c"
    }

    /// A JSON number that is not a boolean, as a Double.
    public static func number(_ value: Any?) -> Double? {
        guard let number = value as? NSNumber, !isBoolean(number) else { return nil }
        return number.doubleValue
    }

    /// Whether `value` holds a number Foundation refuses to read ("not representable in Swift":
    /// beyond Double's range, or so small that it rounds to zero). Tidings passes numbers on as
    /// written, so such a document is valid to it and not to `JSONSerialization`.
    public static func hasUnrepresentableNumber(_ value: JSONValue) -> Bool {
        switch value {
        case .number(let text):
            guard let double = Double(text) else { return true }
            let mantissa = text.prefix { $0 != "e" && $0 != "E" }
            return !double.isFinite || (double == 0 && mantissa.contains { ("1"..."9").contains($0) })
        case .array(let values): return values.contains(where: hasUnrepresentableNumber)
        case .object(let members): return members.contains { hasUnrepresentableNumber($0.value) }
        default: return false
        }
    }

    /// The value an RFC 6901 pointer designates in `document`; `nil` when there is none.
    public static func resolve(_ pointer: String, in document: Any) -> Any? {
        guard !pointer.isEmpty else { return document }
        guard pointer.hasPrefix("/") else { return nil }
        var current: Any = document
        for raw in pointer.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            let token = raw.replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            switch current {
            case let object as [String: Any]:
                guard let next = object[token] else { return nil }
                current = next
            case let array as [Any]:
                guard let index = Int(token), String(index) == token, array.indices.contains(index) else { return nil }
                current = array[index]
            default:
                return nil
            }
        }
        return current
    }

    /// The pointer designates a value of `document`, or a member missing from an object that
    /// does exist (a required field not given).
    public static func locates(_ pointer: String, in document: Any) -> Bool {
        if resolve(pointer, in: document) != nil { return true }
        guard let slash = pointer.lastIndex(of: "/") else { return false }
        return resolve(String(pointer[..<slash]), in: document) is [String: Any]
    }
}
