import CLibPQ
import Logging
import Metrics
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One libpq connection. Every method blocks: call them only on a thread of a connection pool
/// or the listener's own thread, never on Swift's cooperative pool or an event loop.
///
/// `@unchecked Sendable`: a connection is used by one thread at a time — the pool hands it to
/// one job at once, the listener keeps its own — and libpq needs no more than that.
final class PGConnection: @unchecked Sendable {
    private let handle: OpaquePointer
    private let notices: Unmanaged<NoticeSink>
    private var closed = false
    /// Counts this connection's round trips (`tidings_database_round_trips_total`), when set.
    var roundTrips: Counter?
    /// Called once, when the connection is closed (the pool counts its connections).
    var onClose: (@Sendable () -> Void)?
    /// The statements prepared on this session, by their SQL: parsed and planned once, not at
    /// every run (a statement of the publish path or the listener's read runs thousands of
    /// times a second).
    private var preparedNames: [String: String] = [:]

    private init(handle: OpaquePointer, notices: Unmanaged<NoticeSink>) {
        self.handle = handle
        self.notices = notices
    }

    deinit {
        close()
    }

    /// Connects; libpq's `PG*` environment variables fill in whatever the parameters omit.
    static func connect(_ parameters: ConnectionParameters, logger: Logger) throws(PostgresError) -> PGConnection {
        let pairs = parameters.pairs
        let keywords = pairs.map { strdup($0.0) }
        let values = pairs.map { strdup($0.1) }
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        var keywordPointers = keywords.map { UnsafePointer($0) } + [nil]
        var valuePointers = values.map { UnsafePointer($0) } + [nil]
        let handle = keywordPointers.withUnsafeMutableBufferPointer { keywordBuffer in
            valuePointers.withUnsafeMutableBufferPointer { valueBuffer in
                PQconnectdbParams(keywordBuffer.baseAddress, valueBuffer.baseAddress, 1)
            }
        }
        guard let handle else {
            throw PostgresError(.connectionFailed, serverMessage: "out of memory")
        }
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(handle))
            PQfinish(handle)
            throw PostgresError(.connectionFailed, serverMessage: message)
        }
        let sink = Unmanaged.passRetained(NoticeSink(logger: logger))
        PQsetNoticeReceiver(handle, noticeReceiver, sink.toOpaque())
        return PGConnection(handle: handle, notices: sink)
    }

    /// Closes the connection (idempotent). Blocks like every call: never from a task.
    func close() {
        guard !closed else { return }
        closed = true
        if withUnsafeCurrentTask(body: { $0 != nil }) {
            Self.closedInTask.add(1, ordering: .relaxed)
        }
        PQfinish(handle)
        notices.release()
        onClose?()
    }

    /// How many connections were closed from a Swift task (on the cooperative pool) instead of
    /// a thread of their own: always 0 unless something is wrong (tests check it).
    static let closedInTask = Atomic<Int>(0)

    /// True when the connection is known to be unusable.
    var isBroken: Bool {
        closed || PQstatus(handle) != CONNECTION_OK
    }

    /// True inside a transaction block (also a failed one).
    var isInTransaction: Bool {
        let status = PQtransactionStatus(handle)
        return status == PQTRANS_INTRANS || status == PQTRANS_INERROR || status == PQTRANS_ACTIVE
    }

    /// The server process serving this connection.
    var backendPID: Int32 {
        PQbackendPID(handle)
    }

    /// The socket, for `poll()`.
    var socket: Int32 {
        PQsocket(handle)
    }

    /// Runs one parameterised statement (text format) and returns its rows.
    @discardableResult
    func query(_ sql: String, _ parameters: [String?] = []) throws(PostgresError) -> PGRows {
        let copies = parameters.map { $0.map { strdup($0) } ?? nil }
        defer { copies.forEach { free($0) } }
        let pointers = copies.map { UnsafePointer($0) }
        let result = pointers.withUnsafeBufferPointer { buffer in
            PQexecParams(handle, sql, Int32(buffer.count), nil, buffer.baseAddress, nil, nil, 0)
        }
        roundTrips?.increment()
        return try consume(result)
    }

    /// `query`, with the statement prepared on this session the first time it runs (in the same
    /// round trip) and only executed afterwards.
    @discardableResult
    func queryPrepared(_ sql: String, _ parameters: [String?] = []) throws(PostgresError) -> PGRows {
        guard let rows = try pipeline([Statement(sql: sql, parameters: parameters, prepared: true)]).first else {
            throw PostgresError(.unexpectedResult)
        }
        return rows
    }

    /// Runs one or more statements without parameters (simple query protocol); returns the
    /// rows of the last one.
    @discardableResult
    func execute(_ sql: String) throws(PostgresError) -> PGRows {
        roundTrips?.increment()
        return try consume(PQexec(handle, sql))
    }

    /// One parameterised statement of a ``pipeline(_:)``.
    struct Statement {
        var sql: String
        var parameters: [String?] = []
        /// Prepared on the session the first time (in the same pipeline), then only executed.
        var prepared = false
    }

    /// What a pipeline sent, in order: each sends one result.
    private enum Sent {
        case prepare(name: String, sql: String)
        case statement
    }

    /// Sends `statements` at once and reads their answers: one round trip (libpq's pipeline
    /// mode). The server runs them in order and stops at the first that fails; that failure is
    /// thrown once every answer is read, and the statements after it did not run. Inside a
    /// transaction block a failure leaves the block aborted: the caller rolls back.
    @discardableResult
    func pipeline(_ statements: [Statement]) throws(PostgresError) -> [PGRows] {
        try pipeline(segments: [statements])[0].get()
    }

    /// Several pipelines in one round trip, each ended by its own sync: a failure in one skips
    /// the rest of that segment only, and each segment's answers (or its first failure) come
    /// back on their own. A segment after one that failed inside a transaction block runs in
    /// the aborted block (and fails). Throws only for a lost connection.
    func pipeline(segments: [[Statement]]) throws(PostgresError) -> [Result<[PGRows], PostgresError>] {
        guard PQenterPipelineMode(handle) == 1 else { throw failure(.queryFailed) }
        roundTrips?.increment()
        var sent: [[Sent]] = []
        var preparing: [String: String] = [:]
        for statements in segments {
            var segment: [Sent] = []
            for statement in statements {
                var name: String?
                if statement.prepared {
                    if let known = preparedNames[statement.sql] ?? preparing[statement.sql] {
                        name = known
                    } else {
                        let new = "tidings_\(preparedNames.count + preparing.count)"
                        guard PQsendPrepare(handle, new, statement.sql, Int32(statement.parameters.count), nil) == 1 else { throw abandon() }
                        preparing[statement.sql] = new
                        segment.append(.prepare(name: new, sql: statement.sql))
                        name = new
                    }
                }
                let copies = statement.parameters.map { $0.map { strdup($0) } ?? nil }
                defer { copies.forEach { free($0) } }
                let pointers = copies.map { UnsafePointer($0) }
                let queued = pointers.withUnsafeBufferPointer { buffer in
                    if let name {
                        PQsendQueryPrepared(handle, name, Int32(buffer.count), buffer.baseAddress, nil, nil, 0)
                    } else {
                        PQsendQueryParams(handle, statement.sql, Int32(buffer.count), nil, buffer.baseAddress, nil, nil, 0)
                    }
                }
                guard queued == 1 else { throw abandon() }
                segment.append(.statement)
            }
            guard PQpipelineSync(handle) == 1 else { throw abandon() }
            sent.append(segment)
        }
        var outcomes: [Result<[PGRows], PostgresError>] = []
        for segment in sent {
            var answers: [PGRows] = []
            answers.reserveCapacity(segment.count)
            var firstError: PostgresError?
            for command in segment {
                // Each command's answer is one result, then a nil that ends it.
                guard let result = PQgetResult(handle) else { throw abandon() }
                while let extra = PQgetResult(handle) { PQclear(extra) }
                if PQresultStatus(result) == PGRES_PIPELINE_ABORTED {
                    PQclear(result)
                    continue
                }
                do {
                    let rows = try consume(result)
                    switch command {
                    case .prepare(let name, let sql): preparedNames[sql] = name
                    case .statement: answers.append(rows)
                    }
                } catch {
                    if error.isConnectionError { throw abandon() }
                    firstError = firstError ?? error
                }
            }
            guard let sync = PQgetResult(handle) else { throw abandon() }
            let synced = PQresultStatus(sync) == PGRES_PIPELINE_SYNC
            PQclear(sync)
            guard synced else { throw abandon() }
            outcomes.append(firstError.map { .failure($0) } ?? .success(answers))
        }
        guard PQexitPipelineMode(handle) == 1 else { throw abandon() }
        return outcomes
    }

    /// The connection's last error, as `code` while it is still usable and as a lost
    /// connection when it is not.
    private func failure(_ code: PostgresError.Code) -> PostgresError {
        PostgresError(
            PQstatus(handle) == CONNECTION_OK ? code : .connectionLost,
            serverMessage: String(cString: PQerrorMessage(handle)))
    }

    /// A pipeline broke off half-way: what the server did is unknown, so the connection is
    /// closed (the pool drops it) and the error is a lost connection.
    private func abandon() -> PostgresError {
        let error = PostgresError(.connectionLost, serverMessage: String(cString: PQerrorMessage(handle)))
        close()
        return error
    }

    /// Runs `body` in a transaction: COMMIT when it returns, ROLLBACK when it throws.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN")
        return try inTransaction(body)
    }

    /// Like `transaction`, for a transaction block the caller has already begun; with
    /// `commit: false` the caller commits (ROLLBACK still follows a throwing `body`).
    func inTransaction<T>(commit: Bool = true, _ body: () throws -> T) throws -> T {
        let value: T
        do {
            value = try body()
        } catch {
            if !isBroken, isInTransaction { _ = try? execute("ROLLBACK") }
            throw error
        }
        guard commit else { return value }
        do {
            try execute("COMMIT")
        } catch {
            if !isBroken, isInTransaction { _ = try? execute("ROLLBACK") }
            throw error
        }
        return value
    }

    /// Reads whatever the server sent (notifications, errors) without blocking.
    func consumeInput() throws(PostgresError) {
        if PQconsumeInput(handle) == 0 || PQstatus(handle) != CONNECTION_OK {
            throw PostgresError(.connectionLost, serverMessage: String(cString: PQerrorMessage(handle)))
        }
    }

    /// The next notification received, if any.
    func nextNotification() -> PGNotification? {
        guard let notify = PQnotifies(handle) else { return nil }
        defer { PQfreemem(notify) }
        return PGNotification(
            channel: String(cString: notify.pointee.relname),
            payload: String(cString: notify.pointee.extra),
            senderPID: notify.pointee.be_pid
        )
    }

    private func consume(_ result: OpaquePointer?) throws(PostgresError) -> PGRows {
        guard let result else {
            throw PostgresError(
                PQstatus(handle) == CONNECTION_OK ? .queryFailed : .connectionLost,
                serverMessage: String(cString: PQerrorMessage(handle)))
        }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return PGRows(result)
        default:
            let sqlState = PQresultErrorField(result, fieldCode("C")).map { String(cString: $0) }
            let message = String(cString: PQresultErrorMessage(result))
            if PQstatus(handle) != CONNECTION_OK {
                throw PostgresError(.connectionLost, sqlState: sqlState, serverMessage: message)
            }
            throw PostgresError(.queryFailed, sqlState: sqlState, serverMessage: message)
        }
    }
}

/// A notification received on a `LISTEN`ed channel.
struct PGNotification: Sendable {
    var channel: String
    var payload: String
    var senderPID: Int32
}

/// Routes the server's notices and warnings to swift-log instead of libpq's stderr.
private final class NoticeSink {
    let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }
}

@inline(__always)
private func fieldCode(_ ascii: Unicode.Scalar) -> Int32 {
    Int32(UInt8(ascii: ascii))
}

private let noticeReceiver: PQnoticeReceiver = { context, result in
    guard let context, let result else { return }
    let sink = Unmanaged<NoticeSink>.fromOpaque(context).takeUnretainedValue()
    let severity = PQresultErrorField(result, fieldCode("V")).map { String(cString: $0) } ?? "NOTICE"
    let message = PQresultErrorField(result, fieldCode("M")).map { String(cString: $0) } ?? ""
    let sqlState = PQresultErrorField(result, fieldCode("C")).map { String(cString: $0) } ?? ""
    let level: Logger.Level
    switch severity {
    case "WARNING": level = .warning
    case "NOTICE", "INFO", "LOG": level = .info
    default: level = .debug
    }
    sink.logger.log(
        level: level,
        "PostgreSQL notice",
        metadata: [
            PostgresLogKey.severity: .string(severity),
            PostgresLogKey.sqlState: .string(sqlState),
            PostgresLogKey.serverMessage: .string(message),
        ])
}
