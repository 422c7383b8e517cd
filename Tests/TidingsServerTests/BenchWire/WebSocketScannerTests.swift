import Testing

@testable import TidingsBench

/// The load generator's WebSocket frame scanner, fed the frames a gateway sends, whole and cut
/// at every position.
@Suite("bench: WebSocket frames")
struct WebSocketScannerTests {
    /// A server frame (unmasked) with the shortest length encoding for `payload`, or the one
    /// `length` forces (7, 16 or 64 bits).
    static func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, lengthBits: Int? = nil) -> [UInt8] {
        var out: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        let bits = lengthBits ?? (payload.count < 126 ? 7 : payload.count <= 0xFFFF ? 16 : 64)
        switch bits {
        case 7:
            out.append(UInt8(payload.count))
        case 16:
            out.append(126)
            out += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        default:
            out.append(127)
            for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8((UInt64(payload.count) >> UInt64(shift)) & 0xFF)) }
        }
        return out + payload
    }

    static func text(_ json: String, fin: Bool = true, lengthBits: Int? = nil) -> [UInt8] {
        frame(0x1, Array(json.utf8), fin: fin, lengthBits: lengthBits)
    }

    static func event(id: Int?, t: UInt64, type: String = "bench", padding: Int = 0) -> String {
        let pad = padding > 0 ? #","p":""# + String(repeating: "x", count: padding) + "\"" : ""
        return #"{"type":"event","# + (id.map { #""id":"\#($0)","# } ?? "") + #""event":"\#(type)","data":{"t":\#(t),"n":1\#(pad)}}"#
    }

    enum Seen: Equatable {
        case event(sentAt: UInt64?, id: Int64?, reset: Bool)
        case ping([UInt8])
        case close(UInt16?)
    }

    /// Feeds `bytes` in pieces cut at `cuts`.
    static func scan(_ bytes: [UInt8], cuts: [Int] = [], scanner: inout WebSocketScanner) throws -> [Seen] {
        var seen: [Seen] = []
        var start = 0
        for end in (cuts.filter { $0 > 0 && $0 < bytes.count }.sorted() + [bytes.count]) where end >= start {
            let piece = Array(bytes[start..<end])
            try piece.withUnsafeBytes { buffer in
                try scanner.scan(buffer) { output in
                    switch output {
                    case .event(let event): seen.append(.event(sentAt: event.sentAt, id: event.id, reset: event.isReset))
                    case .ping(let payload): seen.append(.ping(Array(payload)))
                    case .close(let code): seen.append(.close(code))
                    }
                }
            }
            start = end
        }
        return seen
    }

    static func scan(_ bytes: [UInt8], cuts: [Int] = []) throws -> [Seen] {
        var scanner = WebSocketScanner()
        return try scan(bytes, cuts: cuts, scanner: &scanner)
    }

    @Test func anEventFrameGivesItsIdAndSendTime() throws {
        let bytes = Self.text(Self.event(id: 1042, t: 123_456_789))
        #expect(try Self.scan(bytes) == [.event(sentAt: 123_456_789, id: 1042, reset: false)])
    }

    @Test func framesCutAtEveryPositionGiveTheSameEvents() throws {
        let bytes = Self.text(Self.event(id: 7, t: 99)) + Self.frame(0x9, Array("hi".utf8)) + Self.text(Self.event(id: 8, t: 100))
        let whole = try Self.scan(bytes)
        #expect(whole == [.event(sentAt: 99, id: 7, reset: false), .ping(Array("hi".utf8)), .event(sentAt: 100, id: 8, reset: false)])
        for cut in 1..<bytes.count {
            #expect(try Self.scan(bytes, cuts: [cut]) == whole, "cut at \(cut)")
        }
        // Every byte on its own.
        #expect(try Self.scan(bytes, cuts: Array(1..<bytes.count)) == whole)
    }

    @Test func sixteenAndSixtyFourBitLengths() throws {
        let medium = Self.text(Self.event(id: 1, t: 5, padding: 300))
        #expect(medium[1] == 126, "a 16-bit length")
        let large = Self.text(Self.event(id: 2, t: 6, padding: 70_000))
        #expect(large[1] == 127, "a 64-bit length")
        // A short payload may also be sent with a longer length field than it needs.
        let padded = Self.text(Self.event(id: 3, t: 7), lengthBits: 64)
        let bytes = medium + large + padded
        let expected: [Seen] = [
            .event(sentAt: 5, id: 1, reset: false), .event(sentAt: 6, id: 2, reset: false), .event(sentAt: 7, id: 3, reset: false),
        ]
        #expect(try Self.scan(bytes) == expected)
        // Cut inside each header (length bytes included), inside the fields and inside the padding.
        let second = medium.count
        let third = medium.count + large.count
        let cuts = [1, 2, 3, 4, 40, 200, second + 1, second + 2, second + 5, second + 9, second + 10, second + 30, second + 50_000, third + 3, third + 9]
        for cut in cuts {
            #expect(try Self.scan(bytes, cuts: [cut]) == expected, "cut at \(cut)")
        }
        #expect(try Self.scan(bytes, cuts: Array(stride(from: 1, to: bytes.count, by: 1000))) == expected)
    }

    @Test func fragmentedMessagesCountOnceWhenComplete() throws {
        let json = Array(Self.event(id: 11, t: 42).utf8)
        let bytes = Self.frame(0x1, Array(json[..<20]), fin: false) + Self.frame(0x9, [1, 2, 3])
            + Self.frame(0x0, Array(json[20..<30]), fin: false) + Self.frame(0x0, Array(json[30...]), fin: true)
        let expected: [Seen] = [.ping([1, 2, 3]), .event(sentAt: 42, id: 11, reset: false)]
        #expect(try Self.scan(bytes) == expected)
        for cut in 1..<bytes.count { #expect(try Self.scan(bytes, cuts: [cut]) == expected, "cut at \(cut)") }
    }

    @Test func resetsEphemeralEventsAndOtherMessages() throws {
        let reset = #"{"type":"event","id":"99","event":"tidings.reset","data":{"reason":"history_expired","last_event_id":"3","oldest_available":"100"}}"#
        let ack = #"{"type":"ack","ref":"1","ids":["5"]}"#
        let bytes = Self.text(Self.event(id: 98, t: 1)) + Self.text(reset) + Self.text(ack)
            + Self.text(Self.event(id: nil, t: 2, type: "typing")) + Self.frame(0x2, [0, 1]) + Self.frame(0xA, [])
        #expect(
            try Self.scan(bytes) == [
                .event(sentAt: 1, id: 98, reset: false), .event(sentAt: nil, id: 99, reset: true),
                // No id of its own: the stream's resume point stays the last id.
                .event(sentAt: 2, id: 99, reset: false),
            ])
    }

    @Test func keysInAnotherOrderAndEscapedStrings() throws {
        let json = #"{"data":{"t":77,"s":"a \"quoted\" }{ value"},"event":"x","id":"5","type":"event"}"#
        #expect(try Self.scan(Self.text(json)) == [.event(sentAt: 77, id: 5, reset: false)])
    }

    @Test func aCloseFrameEndsTheScan() throws {
        let bytes = Self.frame(0x8, [0x03, 0xF0] + Array("slow consumer".utf8)) + Self.text(Self.event(id: 1, t: 1))
        #expect(try Self.scan(bytes) == [.close(1008)])
        #expect(try Self.scan(Self.frame(0x8, [])) == [.close(nil)])
        #expect(try Self.scan(Self.frame(0x8, [0x11, 0x31])) == [.close(4401)])
    }

    @Test func protocolViolationsAreErrors() {
        // A masked frame from the server, a long control frame, a reserved opcode, a stray continuation.
        #expect(throws: WebSocketScanner.ProtocolError.self) { try Self.scan([0x81, 0x81, 1, 2, 3, 4, 0x41]) }
        #expect(throws: WebSocketScanner.ProtocolError.self) { try Self.scan(Self.frame(0x9, Array(repeating: 0, count: 126))) }
        #expect(throws: WebSocketScanner.ProtocolError.self) { try Self.scan(Self.frame(0x3, [])) }
        #expect(throws: WebSocketScanner.ProtocolError.self) { try Self.scan(Self.frame(0x0, [1])) }
    }

    @Test func pongsAndClosesAreMaskedAndEchoThePayload() {
        var out: [UInt8] = []
        let payload: [UInt8] = Array("ping-payload".utf8)
        payload.withUnsafeBytes { WebSocketFrameWriter.appendPong(echoing: $0, mask: 0xA1B2_C3D4, to: &out) }
        #expect(out[0] == 0x8A, "FIN and opcode pong")
        #expect(out[1] == 0x80 | UInt8(payload.count), "the mask bit and the length")
        #expect(Array(out[2..<6]) == [0xA1, 0xB2, 0xC3, 0xD4])
        let unmasked = out[6...].enumerated().map { $0.element ^ out[2 + $0.offset % 4] }
        #expect(unmasked == payload)
        #expect(Array(out[6...]) != payload, "the payload is not sent in the clear")

        var close: [UInt8] = []
        WebSocketFrameWriter.appendClose(code: 1008, mask: 0x0102_0304, to: &close)
        #expect(close == [0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xF0 ^ 2])
    }
}
