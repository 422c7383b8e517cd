#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A forward-only walk over JSON text: just enough to find the fields of an event (`id`,
/// `event`, the send time at the start of `data`) in a WebSocket frame or a long-poll answer, in
/// any key order, without building values. The load generator reads events with it, and
/// `tidings tail` splits messages into raw values with it.
///
/// Strings are skipped with `memchr`; nothing is allocated. Every function returns `false` (or
/// `nil`) when the bytes end or are not what JSON allows there: the caller keeps what it found.
public struct JSONScan {
    public let bytes: UnsafeRawBufferPointer
    public private(set) var offset: Int

    public init(_ bytes: UnsafeRawBufferPointer, from offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    @inline(__always)
    public mutating func skipSpace() {
        while offset < bytes.count {
            let byte = bytes[offset]
            guard byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 else { return }
            offset += 1
        }
    }

    /// Consumes `byte` (after white space) when it comes next.
    @inline(__always)
    public mutating func take(_ byte: UInt8) -> Bool {
        skipSpace()
        guard offset < bytes.count, bytes[offset] == byte else { return false }
        offset += 1
        return true
    }

    /// The next byte after white space, not consumed.
    public mutating func peek() -> UInt8? {
        skipSpace()
        return offset < bytes.count ? bytes[offset] : nil
    }

    /// A string's raw contents (escapes left as they are), after its closing quote.
    public mutating func string() -> UnsafeRawBufferPointer? {
        guard take(UInt8(ascii: "\"")), let base = bytes.baseAddress else { return nil }
        let start = offset
        var from = offset
        while from < bytes.count {
            guard let found = memchr(base + from, Int32(UInt8(ascii: "\"")), bytes.count - from) else { return nil }
            let quote = UnsafeRawPointer(found) - base
            // A quote preceded by an odd number of backslashes is escaped.
            var backslashes = 0
            while quote - backslashes - 1 >= start, bytes[quote - backslashes - 1] == UInt8(ascii: "\\") { backslashes += 1 }
            if backslashes % 2 == 0 {
                offset = quote + 1
                return UnsafeRawBufferPointer(rebasing: bytes[start..<quote])
            }
            from = quote + 1
        }
        return nil
    }

    /// A non-negative integer (up to 19 digits), or `nil` without consuming anything else.
    mutating func unsignedInteger() -> UInt64? {
        skipSpace()
        var result: UInt64 = 0
        var digits = 0
        while offset < bytes.count, digits < 19 {
            let byte = bytes[offset]
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { break }
            result = result &* 10 &+ UInt64(byte &- UInt8(ascii: "0"))
            offset += 1
            digits += 1
        }
        return digits > 0 ? result : nil
    }

    /// Skips one value of any kind, nested ones included.
    public mutating func skipValue() -> Bool {
        guard let first = peek() else { return false }
        switch first {
        case UInt8(ascii: "\""):
            return string() != nil
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            while offset < bytes.count {
                let byte = bytes[offset]
                switch byte {
                case UInt8(ascii: "\""):
                    guard string() != nil else { return false }
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 {
                        offset += 1
                        return true
                    }
                default:
                    break
                }
                offset += 1
            }
            return false
        default:
            // A number or a literal: up to the next delimiter.
            let start = offset
            while offset < bytes.count {
                let byte = bytes[offset]
                if byte == UInt8(ascii: ",") || byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") || byte == 0x20
                    || byte == 0x0A || byte == 0x0D || byte == 0x09
                {
                    break
                }
                offset += 1
            }
            return offset > start && offset < bytes.count
        }
    }

    /// Calls `member` for each key of the object that comes next, positioned at its value; the
    /// closure must consume the value (or return `false` to stop). True when the object ended.
    public mutating func object(_ member: (inout JSONScan, UnsafeRawBufferPointer) -> Bool) -> Bool {
        guard take(UInt8(ascii: "{")) else { return false }
        if take(UInt8(ascii: "}")) { return true }
        while true {
            guard let key = string(), take(UInt8(ascii: ":")), member(&self, key) else { return false }
            if take(UInt8(ascii: ",")) { continue }
            return take(UInt8(ascii: "}"))
        }
    }

    /// Calls `element` for each element of the array that comes next, positioned at it; the
    /// closure must consume it. True when the array ended.
    public mutating func array(_ element: (inout JSONScan) -> Bool) -> Bool {
        guard take(UInt8(ascii: "[")) else { return false }
        if take(UInt8(ascii: "]")) { return true }
        while true {
            guard element(&self) else { return false }
            if take(UInt8(ascii: ",")) { continue }
            return take(UInt8(ascii: "]"))
        }
    }

    static func equals(_ value: UnsafeRawBufferPointer, _ text: StaticString) -> Bool {
        guard value.count == text.utf8CodeUnitCount else { return false }
        return value.isEmpty || memcmp(value.baseAddress!, text.utf8Start, value.count) == 0
    }

    /// `{"t":123…` at the start of `value` → 123: the send time the bench publisher puts first
    /// in an event's `data`.
    static func sendTime(_ value: UnsafeRawBufferPointer) -> UInt64? {
        var probe = JSONScan(value)
        guard probe.take(UInt8(ascii: "{")), let key = probe.string(), equals(key, "t"), probe.take(UInt8(ascii: ":")) else {
            return nil
        }
        return probe.unsignedInteger()
    }

    /// A decimal id string (`"1042"`), as the gateway writes them.
    static func decimal(_ value: UnsafeRawBufferPointer) -> Int64? {
        guard !value.isEmpty, value.count <= 18 else { return nil }
        var result: Int64 = 0
        for byte in value {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            result = result * 10 + Int64(byte - UInt8(ascii: "0"))
        }
        return result
    }
}

/// The fields of one event object the load tool needs: `{"type":"event","id":"…","event":"…",
/// "data":{"t":…}}` on a WebSocket, `{"id":"…","event":"…","data":…}` in a long-poll answer.
struct EventFields {
    /// `type` (WebSocket): true when it was `"event"`; nil when there was none.
    var isEvent: Bool?
    var id: Int64?
    var isReset = false
    /// The publisher's send time: `"t"` as the first member of `data`.
    var sentAt: UInt64?

    /// Reads the object at `scan`'s position; true when it was read to its end. What was found
    /// before a cut (a prefix of a long frame) is kept either way.
    mutating func read(_ scan: inout JSONScan) -> Bool {
        scan.object { scan, key in
            switch key.count {
            case 2 where JSONScan.equals(key, "id"):
                guard let value = scan.string() else { return false }
                id = JSONScan.decimal(value)
            case 4 where JSONScan.equals(key, "type"):
                guard let value = scan.string() else { return false }
                isEvent = JSONScan.equals(value, "event")
            case 5 where JSONScan.equals(key, "event"):
                guard let value = scan.string() else { return false }
                isReset = JSONScan.equals(value, "tidings.reset")
            case 4 where JSONScan.equals(key, "data"):
                sentAt = JSONScan.sendTime(UnsafeRawBufferPointer(rebasing: scan.bytes[scan.offset...]))
                return scan.skipValue()
            default:
                return scan.skipValue()
            }
            return true
        }
    }
}
