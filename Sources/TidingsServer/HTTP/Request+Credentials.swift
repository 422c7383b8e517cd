import Foundation
import Hummingbird

extension Request {
    /// The token of an `Authorization: Bearer …` header; `""` when the header has another scheme.
    var bearerCredential: String? { headers.bearerCredential }

    /// The `tidings_token` cookie.
    var tokenCookie: String? {
        cookies["tidings_token"]?.value
    }

    /// The first value of a query parameter.
    func query(_ name: String) -> String? {
        uri.queryParameters.get(name)
    }
}

extension HTTPFields {
    /// The token of an `Authorization: Bearer …` header; `""` when the header has another scheme.
    var bearerCredential: String? { Self.bearerCredential(self[.authorization]) }

    /// The token of an `Authorization` header `value`; `""` when it has another scheme.
    static func bearerCredential(_ value: String?) -> String? {
        guard let value else { return nil }
        // Byte-level on the hot path (every publish): no Foundation string bridging.
        let bytes = value.utf8
        let scheme = "bearer".utf8
        guard bytes.count > scheme.count,
            zip(bytes, scheme).allSatisfy({ $0 | 0x20 == $1 }),
            bytes[bytes.index(bytes.startIndex, offsetBy: scheme.count)] == UInt8(ascii: " ")
        else { return "" }
        let isSpace: (UInt8) -> Bool = { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
        var credential = bytes.dropFirst(scheme.count)
        while let first = credential.first, isSpace(first) { credential = credential.dropFirst() }
        while let last = credential.last, isSpace(last) { credential = credential.dropLast() }
        return String(Substring(credential))
    }
}
