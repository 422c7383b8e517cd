// Fuzz target: the SSE framer (SSEFrame).
//
// Two events made from the input (an optional id, a valid type, arbitrary text as data) are
// framed after the stream's preamble and a keep-alive, and the stream is read back, fed in two
// pieces split where the input says, by the project's SSEParser and by an independent parser
// written here from the WHATWG HTML standard's "event stream interpretation" (§9.2.6). Both must
// see exactly the two events: the id (the last one set, as a browser's lastEventId), the type,
// and the data with its line ends (CR, LF, CRLF) as LF. The HTTP chunk around a frame must say
// its length.
import Foundation
import FuzzSupport
import NIOCore
import TidingsCore
import TidingsServer

/// Reads the input front to back.
struct Input {
    var bytes: ArraySlice<UInt8>
    mutating func byte() -> UInt8 { bytes.popFirst() ?? 0 }
    mutating func take(_ count: Int) -> ArraySlice<UInt8> {
        let piece = bytes.prefix(count)
        bytes = bytes.dropFirst(piece.count)
        return piece
    }
}

let typeAlphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-".utf8)

struct Sample {
    var id: EventID?
    var type: EventType
    var data: String

    init(_ input: inout Input) {
        let flags = input.byte()
        if flags & 1 == 1 {
            id = input.take(8).reduce(EventID(0)) { $0 << 8 | EventID($1) }
        }
        let typeBytes = input.take(Int(input.byte() % 64) + 1)
        let typeText = typeBytes.map { typeAlphabet[Int($0) % typeAlphabet.count] }
        type = EventType(String(decoding: typeText.isEmpty ? Array("e".utf8) : typeText, as: UTF8.self))!
        data = String(decoding: input.take(Int(input.byte())), as: UTF8.self)
    }
}

/// What a browser would dispatch: `lastEventId` ("" when none), type, data.
struct Dispatched: Equatable, CustomStringConvertible {
    var id: String
    var type: String
    var data: String
    var description: String { "id \(id.debugDescription) type \(type.debugDescription) data \(data.debugDescription)" }
}

/// The WHATWG event stream interpretation, step by step as the standard writes it: decode UTF-8
/// (a leading BOM dropped), split lines at CRLF, LF or CR, and process fields; the last
/// incomplete event is discarded.
struct WHATWGEventStream {
    var events: [Dispatched] = []
    var retries: [Int] = []
    private var dataBuffer = ""
    private var eventTypeBuffer = ""
    private var lastEventIDBuffer = ""
    private var lastEventID = ""

    init(_ stream: [UInt8]) {
        var scalars = Array(String(decoding: stream, as: UTF8.self).unicodeScalars)
        if scalars.first == "\u{FEFF}" { scalars.removeFirst() }
        var line: [Unicode.Scalar] = []
        var index = 0
        while index < scalars.count {
            let scalar = scalars[index]
            index += 1
            if scalar == "\r" || scalar == "\n" {
                if scalar == "\r", index < scalars.count, scalars[index] == "\n" { index += 1 }
                process(line)
                line = []
            } else {
                line.append(scalar)
            }
        }
        // Whatever follows the last line end is not a line: it is dropped with the pending event.
    }

    private mutating func process(_ line: [Unicode.Scalar]) {
        if line.isEmpty { return dispatch() }
        if line[0] == ":" { return }
        let field: String
        var value: ArraySlice<Unicode.Scalar>
        if let colon = line.firstIndex(of: ":") {
            field = String(String.UnicodeScalarView(line[..<colon]))
            value = line[(colon + 1)...]
            if value.first == " " { value = value.dropFirst() }
        } else {
            field = String(String.UnicodeScalarView(line))
            value = []
        }
        let text = String(String.UnicodeScalarView(value))
        switch field {
        case "event": eventTypeBuffer = text
        case "data": dataBuffer += text + "\n"
        case "id": if !value.contains("\u{0}") { lastEventIDBuffer = text }
        case "retry":
            if !value.isEmpty, value.allSatisfy({ ("0"..."9").contains($0) }) { retries.append(Int(text) ?? Int.max) }
        default: break
        }
    }

    private mutating func dispatch() {
        lastEventID = lastEventIDBuffer
        if dataBuffer.isEmpty {
            eventTypeBuffer = ""
            return
        }
        if dataBuffer.hasSuffix("\n") { dataBuffer.unicodeScalars.removeLast() }
        events.append(Dispatched(id: lastEventID, type: eventTypeBuffer.isEmpty ? "message" : eventTypeBuffer, data: dataBuffer))
        dataBuffer = ""
        eventTypeBuffer = ""
    }
}

/// `text` with every CRLF, CR and LF as LF: what `data:` lines carry back.
func normalizedLineEnds(_ text: String) -> String {
    var out = String.UnicodeScalarView()
    var afterCR = false
    for scalar in text.unicodeScalars {
        if afterCR, scalar == "\n" {
            afterCR = false
            continue
        }
        afterCR = scalar == "\r"
        out.append(scalar == "\r" ? "\n" : scalar)
    }
    return String(out)
}

func check(_ bytes: [UInt8]) {
    var input = Input(bytes: bytes[...])
    let split = Int(input.byte()) << 8 | Int(input.byte())
    let retry = Int(input.byte()) * 1000
    let samples = [Sample(&input), Sample(&input)]

    var stream = Array(SSEFrame.preamble(retryMilliseconds: retry).readableBytesView)
    stream += SSEFrame.keepAlive.readableBytesView
    var expected: [Dispatched] = []
    var lastID = ""
    for sample in samples {
        let frame = SSEFrame.event(id: sample.id, type: sample.type, data: sample.data)
        stream += frame.readableBytesView
        if let id = sample.id { lastID = String(id) }
        expected.append(Dispatched(id: lastID, type: sample.type.rawValue, data: normalizedLineEnds(sample.data)))

        let chunk = Array(SSEFrame.httpChunk(frame).readableBytesView)
        let header = String(frame.readableBytes, radix: 16) + "\r\n"
        fuzzCheck(chunk == Array(header.utf8) + Array(frame.readableBytesView) + Array("\r\n".utf8), "chunk of \(sample)")
    }

    let reference = WHATWGEventStream(stream)
    fuzzCheck(reference.events == expected, "WHATWG reading \(reference.events) != \(expected)")
    fuzzCheck(reference.retries == [retry], "retry \(reference.retries)")

    var parser = SSEParser()
    let cut = stream.isEmpty ? 0 : split % (stream.count + 1)
    let messages = parser.feed(stream[..<cut]) + parser.feed(stream[cut...])
    var events: [Dispatched] = []
    var retries: [Int] = []
    var comments: [String] = []
    for message in messages {
        switch message {
        case .event(let event): events.append(Dispatched(id: event.id ?? "", type: event.type, data: event.data))
        case .retry(let milliseconds): retries.append(milliseconds)
        case .comment(let text): comments.append(text)
        }
    }
    fuzzCheck(events == expected, "SSEParser reading \(events) != \(expected)")
    fuzzCheck(retries == [retry] && comments == ["tidings", "keep-alive"], "SSEParser retry \(retries), comments \(comments)")
}
