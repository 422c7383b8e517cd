import Foundation
import TidingsBench

/// JSON text split into its parts without re-encoding any value, so that an event's `data` from
/// a WebSocket frame or a long-poll answer prints exactly as the gateway wrote it (as `data:`
/// does on SSE). The walk is the load generator's ``JSONScan``.
struct RawJSON {
    let bytes: [UInt8]

    init(_ text: String) {
        bytes = Array(text.utf8)
    }

    /// The members of the object that is the whole text (`nil` if it is not one).
    func members() -> [(key: String, value: Range<Int>)]? {
        members(in: 0..<bytes.count)
    }

    /// The members of the object in `range` (white space around it allowed).
    func members(in range: Range<Int>) -> [(key: String, value: Range<Int>)]? {
        var members: [(key: String, value: Range<Int>)] = []
        let whole = walk(range) { scan in
            scan.object { scan, key in
                guard let value = Self.value(&scan) else { return false }
                members.append((String(decoding: key, as: UTF8.self), value))
                return true
            }
        }
        return whole ? members : nil
    }

    /// The elements of the array in `range`.
    func elements(in range: Range<Int>) -> [Range<Int>]? {
        var elements: [Range<Int>] = []
        let whole = walk(range) { scan in
            scan.array { scan in
                guard let value = Self.value(&scan) else { return false }
                elements.append(value)
                return true
            }
        }
        return whole ? elements : nil
    }

    /// The text of `range`, as written.
    func text(_ range: Range<Int>) -> String {
        String(decoding: bytes[range], as: UTF8.self)
    }

    /// The JSON string in `range`, decoded; `nil` if it is not a string.
    func string(_ range: Range<Int>) -> String? {
        guard bytes[range].first == UInt8(ascii: "\"") else { return nil }
        return try? JSONDecoder().decode(String.self, from: Data(bytes[range]))
    }

    /// Runs `read` over `range`; true when it succeeded and used all of the range.
    private func walk(_ range: Range<Int>, _ read: (inout JSONScan) -> Bool) -> Bool {
        bytes.withUnsafeBytes { all in
            var scan = JSONScan(UnsafeRawBufferPointer(rebasing: all[..<range.upperBound]), from: range.lowerBound)
            guard read(&scan) else { return false }
            scan.skipSpace()
            return scan.offset == range.upperBound
        }
    }

    /// Skips the value at the scan's position; its range.
    private static func value(_ scan: inout JSONScan) -> Range<Int>? {
        scan.skipSpace()
        let start = scan.offset
        return scan.skipValue() ? start..<scan.offset : nil
    }
}

/// One event of a WebSocket frame or a long-poll answer: `{"id":"…","event":"…","data":…}`.
struct RawEvent: Equatable {
    var id: String?
    var event: String
    /// The `data` value as the gateway wrote it.
    var data: String

    /// The event object in `range` of `json`; `nil` when it lacks `event` or `data`.
    init?(_ json: RawJSON, _ range: Range<Int>) {
        guard let members = json.members(in: range) else { return nil }
        self.init(json, members)
    }

    init?(_ json: RawJSON, _ members: [(key: String, value: Range<Int>)]) {
        var event: String?
        var data: String?
        for (key, value) in members {
            switch key {
            case "id": id = json.string(value)
            case "event": event = json.string(value)
            case "data": data = json.text(value)
            default: break
            }
        }
        guard let event, let data else { return nil }
        self.event = event
        self.data = data
    }
}
