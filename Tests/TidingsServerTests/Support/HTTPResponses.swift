import Foundation

/// The HTTP/1.1 responses in the bytes a ``RawConnection`` received, interim (`1xx`) ones
/// included: for comparing what two servers answered to the same bytes.
struct HTTPResponses {
    struct Response: Equatable, CustomStringConvertible {
        var status: Int
        /// Lowercased names, in order.
        var headers: [(name: String, value: String)]
        var body: [UInt8]

        func header(_ name: String) -> String? {
            headers.first { $0.name == name }?.value
        }

        var text: String { String(decoding: body, as: UTF8.self) }

        var description: String { "\(status) \(headers.map { "\($0.name): \($0.value)" }) \(text)" }

        static func == (a: Response, b: Response) -> Bool {
            a.status == b.status && a.body == b.body && a.headers.elementsEqual(b.headers) { $0 == $1 }
        }
    }

    /// Every complete response, in order.
    var responses: [Response] = []
    /// Bytes after the last complete response (a response still arriving, or garbage).
    var rest: [UInt8] = []

    init(_ bytes: [UInt8]) {
        var index = 0
        while let (response, next) = Self.response(in: bytes, from: index) {
            responses.append(response)
            index = next
        }
        rest = Array(bytes[index...])
    }

    /// The final (not `1xx`) responses.
    var final: [Response] { responses.filter { $0.status >= 200 } }

    private static func response(in bytes: [UInt8], from start: Int) -> (Response, Int)? {
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        guard let headEnd = firstIndex(of: separator, in: bytes, from: start) else { return nil }
        let lines = String(decoding: bytes[start..<headEnd], as: UTF8.self).components(separatedBy: "\r\n")
        let statusLine = lines[0].split(separator: " ")
        guard statusLine.count >= 2, statusLine[0].hasPrefix("HTTP/1."), let status = Int(statusLine[1]) else { return nil }
        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { return nil }
            headers.append((line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        var response = Response(status: status, headers: headers, body: [])
        var index = headEnd + separator.count
        if status < 200 || status == 204 || status == 304 { return (response, index) }
        if response.header("transfer-encoding")?.lowercased() == "chunked" {
            while true {
                guard let lineEnd = firstIndex(of: Array("\r\n".utf8), in: bytes, from: index),
                    let size = Int(String(decoding: bytes[index..<lineEnd], as: UTF8.self).prefix { $0 != ";" }, radix: 16)
                else { return nil }
                index = lineEnd + 2
                if size == 0 {
                    guard let end = firstIndex(of: Array("\r\n".utf8), in: bytes, from: index) else { return nil }
                    return (response, end + 2)
                }
                guard bytes.count >= index + size + 2 else { return nil }
                response.body += bytes[index..<index + size]
                index += size + 2
            }
        }
        let length = Int(response.header("content-length") ?? "0") ?? 0
        guard bytes.count >= index + length else { return nil }
        response.body = Array(bytes[index..<index + length])
        return (response, index + length)
    }

    private static func firstIndex(of needle: [UInt8], in bytes: [UInt8], from start: Int) -> Int? {
        guard bytes.count >= needle.count else { return nil }
        var index = start
        while index + needle.count <= bytes.count {
            if bytes[index] == needle[0], bytes[index..<index + needle.count].elementsEqual(needle) { return index }
            index += 1
        }
        return nil
    }
}
