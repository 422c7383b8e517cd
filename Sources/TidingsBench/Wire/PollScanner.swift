/// Reads the answers of `GET /poll` for the load generator:
/// `{"events":[{"id":"…","event":"…","data":{"t":…}},…],"last_event_id":"…"}`.
///
/// An answer that arrives in one read is scanned in place; one split over several reads is
/// gathered in a buffer that keeps its capacity from answer to answer (no allocation once it
/// has grown to the largest answer). Events are handed out when the answer is complete.
struct PollScanner {
    struct ProtocolError: Error, CustomStringConvertible {
        var description: String
    }

    /// Answers larger than this are refused (the gateway's are at most `limit` = 1,000 events).
    static let bodyLimit = 64 << 20

    private var gathered: [UInt8] = []
    private var overflow = false
    /// The last answer's `last_event_id` (else the last event id seen): the next poll's cursor.
    private(set) var lastID: Int64?

    init() {}

    /// A body part of the current answer that will not stay valid (the read buffer is reused).
    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard !overflow else { return }
        guard gathered.count + bytes.count <= Self.bodyLimit else {
            overflow = true
            return
        }
        gathered.append(contentsOf: bytes)
    }

    /// The answer is complete: `tail` is its last body part (still in the read buffer, possibly
    /// all of it); calls `onEvent` for each event in it.
    mutating func finish(tail: UnsafeRawBufferPointer, _ onEvent: (ScannedEvent) -> Void) throws(ProtocolError) {
        defer {
            gathered.removeAll(keepingCapacity: true)
            overflow = false
        }
        guard !overflow else { throw ProtocolError(description: "a long-poll answer larger than \(Self.bodyLimit) bytes") }
        let failure: ProtocolError?
        if gathered.isEmpty {
            failure = read(tail, onEvent)
        } else {
            append(tail)
            let body = gathered
            failure = body.withUnsafeBytes { read($0, onEvent) }
        }
        if let failure { throw failure }
    }

    /// Reads one whole answer; what was wrong with it, if anything.
    private mutating func read(_ body: UnsafeRawBufferPointer, _ onEvent: (ScannedEvent) -> Void) -> ProtocolError? {
        var scan = JSONScan(body)
        var cursor: Int64?
        var last = lastID
        let complete = scan.object { scan, key in
            if JSONScan.equals(key, "events") {
                return scan.array { scan in
                    var fields = EventFields()
                    guard fields.read(&scan) else { return false }
                    if let id = fields.id { last = id }
                    onEvent(ScannedEvent(sentAt: fields.sentAt, id: last, isReset: fields.isReset))
                    return true
                }
            }
            if JSONScan.equals(key, "last_event_id"), scan.peek() == UInt8(ascii: "\"") {
                guard let value = scan.string() else { return false }
                cursor = JSONScan.decimal(value)
                return true
            }
            return scan.skipValue()
        }
        lastID = cursor ?? last
        guard complete else {
            return ProtocolError(description: "a long-poll answer that is not the expected JSON: \(String(decoding: body.prefix(120), as: UTF8.self))")
        }
        return nil
    }
}
