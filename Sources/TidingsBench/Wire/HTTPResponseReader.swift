#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A minimal HTTP/1.1 response reader for the load generator: status line and headers, then a
/// body framed by `Transfer-Encoding: chunked`, `Content-Length`, or the end of the connection.
///
/// Body bytes are handed out in place (no copy); only the head is accumulated.
struct HTTPResponseReader {
    enum Part {
        case head(status: Int)
        case body(UnsafeRawBufferPointer)
        case end
    }

    struct ProtocolError: Error, CustomStringConvertible {
        var description: String
    }

    private enum Framing {
        case chunked
        case length(Int)
        case untilClose
    }

    private enum ChunkState {
        case size
        case sizeLine
        case data
        case dataCR
        case dataLF
        case trailer
    }

    private enum State {
        case head
        case body(Framing)
        case done
    }

    private static let headLimit = 16 * 1024
    private var state = State.head
    private var head: [UInt8] = []
    private var chunkState = ChunkState.size
    private var chunkRemaining = 0
    private var trailerLineEmpty = true

    init() {}

    /// Prepares for the next response on a keep-alive connection.
    mutating func reset() {
        state = .head
        head.removeAll(keepingCapacity: true)
        chunkState = .size
        chunkRemaining = 0
    }

    var isDone: Bool {
        if case .done = state { return true }
        return false
    }

    /// Reads `bytes`; returns how many were consumed (less than all only after `.end`, when the
    /// rest belongs to the next response).
    @discardableResult
    mutating func feed(_ bytes: UnsafeRawBufferPointer, _ handler: (Part) -> Void) throws(ProtocolError) -> Int {
        var offset = 0
        while offset < bytes.count {
            switch state {
            case .done:
                return offset
            case .head:
                offset = try readHead(bytes, from: offset, handler)
            case .body(let framing):
                switch framing {
                case .untilClose:
                    handler(.body(UnsafeRawBufferPointer(rebasing: bytes[offset...])))
                    offset = bytes.count
                case .length(let remaining):
                    let take = min(remaining, bytes.count - offset)
                    handler(.body(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + take)])))
                    offset += take
                    if remaining - take == 0 {
                        state = .done
                        handler(.end)
                    } else {
                        state = .body(.length(remaining - take))
                    }
                case .chunked:
                    offset = try readChunked(bytes, from: offset, handler)
                }
            }
        }
        return offset
    }

    /// The connection ended: a body framed by its end is complete now.
    mutating func finish(_ handler: (Part) -> Void) {
        if case .body(.untilClose) = state {
            state = .done
            handler(.end)
        }
    }

    private mutating func readHead(_ bytes: UnsafeRawBufferPointer, from start: Int, _ handler: (Part) -> Void) throws(ProtocolError) -> Int {
        // Find the blank line, also when it straddles two reads.
        let previous = head.count
        let take = min(bytes.count - start, Self.headLimit - previous)
        head.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[start..<(start + take)]))
        guard let end = Self.headEnd(head, searchFrom: max(0, previous - 3)) else {
            if head.count >= Self.headLimit { throw ProtocolError(description: "response head larger than 16 KiB") }
            return start + take
        }
        let consumed = end - previous
        let (status, framing) = try Self.parseHead(head[..<end])
        head.removeAll(keepingCapacity: true)
        handler(.head(status: status))
        if case .length(0) = framing {
            state = .done
            handler(.end)
        } else {
            state = .body(framing)
        }
        return start + consumed
    }

    /// The index just after `\r\n\r\n`.
    private static func headEnd(_ bytes: [UInt8], searchFrom: Int) -> Int? {
        guard bytes.count >= 4 else { return nil }
        var index = searchFrom
        while index + 3 < bytes.count {
            if bytes[index] == 13, bytes[index + 1] == 10, bytes[index + 2] == 13, bytes[index + 3] == 10 {
                return index + 4
            }
            index += 1
        }
        return nil
    }

    private static func parseHead(_ head: ArraySlice<UInt8>) throws(ProtocolError) -> (Int, Framing) {
        let text = String(decoding: head, as: UTF8.self)
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: true)
        guard !lines.isEmpty else { throw ProtocolError(description: "empty response head") }
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let status = Int(parts[1]) else {
            throw ProtocolError(description: "bad status line: \(statusLine.prefix(80))")
        }
        var framing = Framing.untilClose
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingSpaces()
            if name == "transfer-encoding", value.lowercased().contains("chunked") {
                framing = .chunked
            } else if name == "content-length", case .untilClose = framing, let length = Int(value) {
                framing = .length(length)
            }
        }
        if status == 204 || status == 304 { framing = .length(0) }
        // 101 Switching Protocols: what follows the head is the new protocol's, to the end.
        if status == 101 { framing = .untilClose }
        return (status, framing)
    }

    private mutating func readChunked(_ bytes: UnsafeRawBufferPointer, from start: Int, _ handler: (Part) -> Void) throws(ProtocolError) -> Int {
        var offset = start
        while offset < bytes.count {
            switch chunkState {
            case .data:
                let take = min(chunkRemaining, bytes.count - offset)
                handler(.body(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + take)])))
                offset += take
                chunkRemaining -= take
                if chunkRemaining == 0 { chunkState = .dataCR }
            case .size:
                let byte = bytes[offset]
                offset += 1
                if let digit = Self.hexValue(byte) {
                    guard chunkRemaining < (1 << 40) else { throw ProtocolError(description: "chunk too large") }
                    chunkRemaining = chunkRemaining * 16 + digit
                } else if byte == UInt8(ascii: "\n") {
                    try endSizeLine(handler)
                    if case .done = state { return offset }
                } else {
                    chunkState = .sizeLine  // chunk extensions or CR
                }
            case .sizeLine:
                let byte = bytes[offset]
                offset += 1
                if byte == UInt8(ascii: "\n") {
                    try endSizeLine(handler)
                    if case .done = state { return offset }
                }
            case .dataCR:
                let byte = bytes[offset]
                offset += 1
                if byte == UInt8(ascii: "\r") {
                    chunkState = .dataLF
                } else if byte == UInt8(ascii: "\n") {
                    chunkState = .size
                } else {
                    throw ProtocolError(description: "missing CRLF after a chunk")
                }
            case .dataLF:
                let byte = bytes[offset]
                offset += 1
                guard byte == UInt8(ascii: "\n") else { throw ProtocolError(description: "missing LF after a chunk") }
                chunkState = .size
            case .trailer:
                let byte = bytes[offset]
                offset += 1
                if byte == UInt8(ascii: "\n") {
                    if trailerLineEmpty {
                        state = .done
                        handler(.end)
                        return offset
                    }
                    trailerLineEmpty = true
                } else if byte != UInt8(ascii: "\r") {
                    trailerLineEmpty = false
                }
            }
        }
        return offset
    }

    private mutating func endSizeLine(_ handler: (Part) -> Void) throws(ProtocolError) {
        if chunkRemaining == 0 {
            chunkState = .trailer
            trailerLineEmpty = true
        } else {
            chunkState = .data
        }
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): Int(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): Int(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): Int(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        var result = self
        while let first = result.first, first == " " || first == "\t" { result = result.dropFirst() }
        while let last = result.last, last == " " || last == "\t" { result = result.dropLast() }
        return result
    }
}
