#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One event as the load tool sees it.
struct ScannedEvent {
    /// The send time the publisher embedded (`"t":` at the start of `data`), monotonic nanoseconds.
    var sentAt: UInt64?
    /// The stream's last event id at dispatch.
    var id: Int64?
    /// True for `event: tidings.reset`.
    var isReset: Bool
}

/// A lean Server-Sent Events scanner for the load generator.
///
/// Unlike `SSEParser` it keeps no event data: it finds event boundaries, the `id:` and the send
/// time the publisher embedded at the start of `data:` (`{"t":<ns>,…}`). Lines are found with
/// `memchr`; only a line split across two reads is copied (its first 128 bytes are enough).
struct SSEScanner {
    private static let carryLimit = 128
    private var carry: [UInt8] = []
    private var hasData = false
    private var sentAt: UInt64?
    private var isReset = false
    /// The last `id:` seen (persists across events, as in a browser).
    private(set) var lastID: Int64?

    init() {
        carry.reserveCapacity(Self.carryLimit)
    }

    /// Scans bytes of the stream body; calls `onEvent` for every event they complete.
    mutating func scan(_ bytes: UnsafeRawBufferPointer, _ onEvent: (ScannedEvent) -> Void) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        var start = 0
        let count = bytes.count
        while start < count {
            guard let found = memchr(base + start, Int32(UInt8(ascii: "\n")), count - start) else {
                appendCarry(UnsafeRawBufferPointer(rebasing: bytes[start..<count]))
                return
            }
            let end = UnsafeRawPointer(found) - base
            if carry.isEmpty {
                processLine(UnsafeRawBufferPointer(rebasing: bytes[start..<end]), onEvent)
            } else {
                appendCarry(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
                let line = carry
                line.withUnsafeBytes { processLine($0, onEvent) }
                carry.removeAll(keepingCapacity: true)
            }
            start = end + 1
        }
    }

    private mutating func appendCarry(_ bytes: UnsafeRawBufferPointer) {
        let room = Self.carryLimit - carry.count
        guard room > 0 else { return }
        carry.append(contentsOf: bytes.prefix(room))
    }

    private mutating func processLine(_ raw: UnsafeRawBufferPointer, _ onEvent: (ScannedEvent) -> Void) {
        var line = raw
        if let last = line.last, last == UInt8(ascii: "\r") { line = UnsafeRawBufferPointer(rebasing: line.dropLast()) }
        guard let first = line.first else {
            if hasData { onEvent(ScannedEvent(sentAt: sentAt, id: lastID, isReset: isReset)) }
            hasData = false
            sentAt = nil
            isReset = false
            return
        }
        switch first {
        case UInt8(ascii: ":"):
            return
        case UInt8(ascii: "d"):
            guard let value = Self.value(of: "data", in: line) else { return }
            if !hasData { sentAt = JSONScan.sendTime(value) }
            hasData = true
        case UInt8(ascii: "i"):
            guard let value = Self.value(of: "id", in: line) else { return }
            lastID = JSONScan.decimal(value)
        case UInt8(ascii: "e"):
            guard let value = Self.value(of: "event", in: line) else { return }
            isReset = JSONScan.equals(value, "tidings.reset")
        default:
            return
        }
    }

    /// The value of `field: value` (one optional space after the colon).
    private static func value(of field: StaticString, in line: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        let name = UnsafeRawBufferPointer(start: field.utf8Start, count: field.utf8CodeUnitCount)
        guard line.count > name.count, line[name.count] == UInt8(ascii: ":") else { return nil }
        for index in 0..<name.count where line[index] != name[index] { return nil }
        var start = name.count + 1
        if start < line.count, line[start] == UInt8(ascii: " ") { start += 1 }
        return UnsafeRawBufferPointer(rebasing: line[start...])
    }
}
