import Testing

@testable import TidingsBench

/// The load generator's reading of `GET /poll` answers, whole and gathered from pieces.
@Suite("bench: long-poll answers")
struct PollScannerTests {
    struct Seen: Equatable {
        var sentAt: UInt64?
        var id: Int64?
        var reset: Bool
    }

    /// Feeds `body` as the reader would: every piece but the last appended, the last one as the tail.
    static func read(_ body: String, cuts: [Int] = [], scanner: inout PollScanner) throws -> [Seen] {
        let bytes = Array(body.utf8)
        let ends = cuts.filter { $0 > 0 && $0 < bytes.count }.sorted() + [bytes.count]
        var start = 0
        var seen: [Seen] = []
        for (number, end) in ends.enumerated() {
            let piece = Array(bytes[start..<end])
            try piece.withUnsafeBytes { buffer in
                if number == ends.count - 1 {
                    try scanner.finish(tail: buffer) { seen.append(Seen(sentAt: $0.sentAt, id: $0.id, reset: $0.isReset)) }
                } else {
                    scanner.append(buffer)
                }
            }
            start = end
        }
        return seen
    }

    static func read(_ body: String, cuts: [Int] = []) throws -> ([Seen], Int64?) {
        var scanner = PollScanner()
        let seen = try read(body, cuts: cuts, scanner: &scanner)
        return (seen, scanner.lastID)
    }

    static let answer = #"""
        {"events":[{"id":"41","event":"tidings.reset","data":{"reason":"history_expired","last_event_id":"3","oldest_available":"42"}},\#
        {"id":"42","event":"bench","data":{"t":1000,"n":1}},{"id":"43","event":"bench","data":{"t":1001,"n":2,"p":"x\"}"}}],\#
        "last_event_id":"43"}
        """#

    @Test func eventsAndTheCursorOfAnAnswer() throws {
        let (seen, cursor) = try Self.read(Self.answer)
        #expect(seen == [Seen(sentAt: nil, id: 41, reset: true), Seen(sentAt: 1000, id: 42, reset: false), Seen(sentAt: 1001, id: 43, reset: false)])
        #expect(cursor == 43)
    }

    @Test func anAnswerInPiecesReadsTheSame() throws {
        let whole = try Self.read(Self.answer)
        for cut in 1..<Self.answer.utf8.count {
            let cutOnce = try Self.read(Self.answer, cuts: [cut])
            #expect(cutOnce.0 == whole.0 && cutOnce.1 == whole.1, "cut at \(cut)")
        }
        let bytewise = try Self.read(Self.answer, cuts: Array(1..<Self.answer.utf8.count))
        #expect(bytewise.0 == whole.0)
    }

    @Test func anEmptyAnswerMovesTheCursorAndAScannerServesManyAnswers() throws {
        var scanner = PollScanner()
        #expect(try Self.read(#"{"events":[],"last_event_id":"1234"}"#, scanner: &scanner).isEmpty)
        #expect(scanner.lastID == 1234)
        // Keys in another order, white space between tokens.
        let seen = try Self.read(#"{ "last_event_id" : "1236" , "events" : [ { "data" : { "t" : 9 } , "event" : "e" , "id" : "1235" } ] }"#, cuts: [10], scanner: &scanner)
        #expect(seen == [Seen(sentAt: 9, id: 1235, reset: false)])
        #expect(scanner.lastID == 1236)
    }

    @Test func whatIsNotAnAnswerIsAnError() {
        var scanner = PollScanner()
        #expect(throws: PollScanner.ProtocolError.self) { try Self.read(#"{"events":[{"id":"1"#, scanner: &scanner) }
        #expect(throws: PollScanner.ProtocolError.self) { try Self.read("<html>", scanner: &scanner) }
    }
}
