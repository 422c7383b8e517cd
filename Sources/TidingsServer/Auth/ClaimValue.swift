import JWTKit

/// A JSON value of a token's payload. Claims are read from it by path, so a token may carry its
/// subject, topics and publish rights wherever its issuer puts them (`realm_access.roles`,
/// `scope`, a number as `sub`).
public indirect enum ClaimValue: Codable, Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int64)
    case number(Double)
    case string(String)
    case array([ClaimValue])
    case object([String: ClaimValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let flag = try? container.decode(Bool.self) {
            self = .bool(flag)
        } else if let integer = try? container.decode(Int64.self) {
            self = .integer(integer)
        } else if let number = try? container.decode(Double.self) {
            self = .number(number)
        } else if let string = try? container.decode(String.self) {
            self = .string(string)
        } else if let array = try? container.decode([ClaimValue].self) {
            self = .array(array)
        } else {
            self = .object(try container.decode([String: ClaimValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let flag): try container.encode(flag)
        case .integer(let integer): try container.encode(integer)
        case .number(let number): try container.encode(number)
        case .string(let string): try container.encode(string)
        case .array(let array): try container.encode(array)
        case .object(let object): try container.encode(object)
        }
    }

    /// The value at a dotted `path` through nested objects (`realm_access.roles`). A key that
    /// itself contains dots (`https://example.com/roles`, as Auth0 names its claims) is found
    /// too: the longest key that matches is taken first.
    public func value(at path: Substring) -> ClaimValue? {
        guard case .object(let members) = self else { return nil }
        if let whole = members[String(path)] { return whole }
        var dot = path.lastIndex(of: ".")
        while let split = dot {
            if let head = members[String(path[..<split])], let found = head.value(at: path[path.index(after: split)...]) {
                return found
            }
            dot = path[..<split].lastIndex(of: ".")
        }
        return nil
    }

    /// Seconds since 1970 for a NumericDate claim (`exp`, `nbf`, `iat`).
    var seconds: Double? {
        switch self {
        case .integer(let integer): Double(integer)
        case .number(let number): number
        default: nil
        }
    }

    /// A list of strings from an array of strings or from a space-separated string (as OAuth's
    /// `scope`); `nil` for any other shape.
    var strings: [String]? {
        switch self {
        case .string(let string): string.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        case .array(let values):
            values.reduce(into: [String]?.some([])) { list, value in
                guard case .string(let string) = value else { list = nil; return }
                list?.append(string)
            }
        default: nil
        }
    }
}

/// A token's whole payload, whatever its issuer put in it.
struct TokenPayload: JWTPayload {
    var claims: ClaimValue

    init(from decoder: any Decoder) throws {
        claims = .object(try [String: ClaimValue](from: decoder))
    }

    init(_ claims: [String: ClaimValue]) {
        self.claims = .object(claims)
    }

    func encode(to encoder: any Encoder) throws {
        try claims.encode(to: encoder)
    }

    /// Nothing beyond the signature: `TokenRules` checks the claims against its clock.
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}
