/// An error talking to PostgreSQL.
///
/// `description` says what failed and nothing more: no connection string, password, host, query
/// or data. The server's message (which may quote values) and libpq's message are only in
/// `debugDescription` and `serverMessage`, for logs that may hold them.
public struct PostgresError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// What kind of failure this is.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Base: String, Sendable, Hashable {
            case connectionFailed = "connection failed"
            case connectionLost = "connection lost"
            case queryFailed = "query failed"
            case unexpectedResult = "unexpected result"
            case shutDown = "shut down"
        }

        private let base: Base

        private init(_ base: Base) {
            self.base = base
        }

        /// Connecting failed (server unreachable, authentication refused, …).
        public static let connectionFailed = Code(.connectionFailed)
        /// An established connection broke.
        public static let connectionLost = Code(.connectionLost)
        /// The server rejected a statement; see `sqlState`.
        public static let queryFailed = Code(.queryFailed)
        /// A result did not have the expected shape.
        public static let unexpectedResult = Code(.unexpectedResult)
        /// The connection pool was shut down.
        public static let shutDown = Code(.shutDown)

        public var description: String { base.rawValue }
    }

    public let code: Code
    /// The SQLSTATE the server sent, such as `23505` or `P0001`.
    public let sqlState: String?
    /// The server's or libpq's message. It may quote data: never show it to clients.
    public let serverMessage: String?

    init(_ code: Code, sqlState: String? = nil, serverMessage: String? = nil) {
        self.code = code
        self.sqlState = sqlState
        self.serverMessage = serverMessage
    }

    public var description: String {
        if let sqlState { return "PostgreSQL \(code) (SQLSTATE \(sqlState))" }
        return "PostgreSQL \(code)"
    }

    public var debugDescription: String {
        guard let serverMessage else { return description }
        return "\(description): \(serverMessage.trimmingSuffixWhitespace)"
    }

    /// True when the connection that raised it cannot be used again.
    var isConnectionError: Bool {
        code == .connectionFailed || code == .connectionLost
    }

    /// The database refused a statement or answered unexpectedly: about the statement or its
    /// data, not the connection (lost, refused, shut down).
    var isRequestError: Bool {
        code == .queryFailed || code == .unexpectedResult
    }

    /// A statement that hit `lock_timeout` (55P03) or `statement_timeout` (57014).
    var isTimeout: Bool {
        code == .queryFailed && (sqlState == "55P03" || sqlState == "57014")
    }
}

/// The database could not be reached when starting: the CLI exits with 69 (`EX_UNAVAILABLE`).
public struct DatabaseUnreachableError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// Why connecting failed.
    public let underlying: PostgresError

    public var description: String { "the PostgreSQL database is unreachable" }
    public var debugDescription: String { "\(description): \(underlying.debugDescription)" }
}

extension String {
    var trimmingSuffixWhitespace: Substring {
        var text = self[...]
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        return text
    }
}
