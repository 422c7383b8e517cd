import Logging
import Metrics
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A small pool of libpq connections whose calls run on threads of their own (an
/// `NIOThreadPool` with one thread per connection), never on Swift's cooperative pool.
///
/// Connections are opened on first use and reused. One that broke is dropped; an idle one is
/// checked without blocking before reuse, so a server restart or `pg_terminate_backend` costs a
/// reconnect, not a failed request.
final class ConnectionPool: Sendable {
    /// Connections (and threads) at most.
    let size: Int
    private let parameters: ConnectionParameters
    private let threads: NIOThreadPool
    private let idle = Mutex<[PGConnection]>([])
    private let logger: Logger
    private let roundTrips: Counter?
    /// Run once on each new connection, before its first use.
    private let sessionSetup: String?
    /// Run when shutdown begins, before the threads are waited for (``beforeShutdown(_:)``).
    private let shutdownHooks = Mutex<[@Sendable () -> Void]>([])
    /// The pool's connections open now: idle, in use, or held by a user between uses.
    private let live = Atomic<Int>(0)
    /// Hands back a connection its user holds while it waits for work (``reclaim(with:)``).
    private let reclaimer = Mutex<(@Sendable () -> PGConnection?)?>(nil)

    init(parameters: ConnectionParameters, size: Int, logger: Logger, roundTrips: Counter? = nil, sessionSetup: String? = nil) {
        self.parameters = parameters
        self.logger = logger
        self.roundTrips = roundTrips
        self.sessionSetup = sessionSetup
        self.size = max(1, size)
        self.threads = NIOThreadPool(numberOfThreads: self.size)
        threads.start()
    }

    /// Runs `body` with a connection on a pool thread.
    func withConnection<T: Sendable>(_ body: @escaping @Sendable (PGConnection) throws -> T) async throws -> T {
        do {
            return try await threads.runIfActive { [self] in try withConnectionHere(body) }
        } catch is NIOThreadPoolError.ThreadPoolInactive {
            throw PostgresError(.shutDown)
        }
    }

    /// Runs `body` on a pool thread, where it may block and use ``withConnectionHere(_:)``;
    /// `body(false)` instead, on no particular thread, once the pool is shut down.
    func submit(_ body: @escaping @Sendable (_ active: Bool) -> Void) {
        threads.submit { state in body(state == .active) }
    }

    /// `withConnection` for code already running on a pool thread (``submit(_:)``).
    func withConnectionHere<T>(_ body: (PGConnection) throws -> T) throws -> T {
        let connection = try checkOut()
        defer { checkIn(connection) }
        return try body(connection)
    }

    /// Runs `hook` when shutdown begins, before the pool waits for its threads: to wake work
    /// that waits on a pool thread for something to do.
    func beforeShutdown(_ hook: @escaping @Sendable () -> Void) {
        shutdownHooks.withLock { $0.append(hook) }
    }

    /// Lets ``checkOut()`` take a connection that a user holds between uses (the event store's
    /// parked transactions) when no connection is idle and the pool has `size` open already:
    /// `reclaim` hands one back, idle, or nil. So the pool keeps to `size` connections.
    func reclaim(with reclaim: @escaping @Sendable () -> PGConnection?) {
        reclaimer.withLock { $0 = reclaim }
    }

    /// Closes every connection and stops the threads. `PQfinish` blocks (it says goodbye to the
    /// server), so the connections are closed on a blocking-pool thread, never on Swift's
    /// cooperative pool.
    func shutdown() async {
        for hook in shutdownHooks.withLock({ $0 }) { hook() }
        try? await threads.shutdownGracefully()
        let connections = idle.withLock { idle in
            defer { idle.removeAll() }
            return idle
        }
        guard !connections.isEmpty else { return }
        let closing = ClosingConnections(connections)
        _ = try? await NIOThreadPool.singleton.runIfActive { closing.closeAll() }
    }

    /// A connection for the calling pool thread, to be handed back with ``checkIn(_:)``.
    func checkOut() throws(PostgresError) -> PGConnection {
        while let connection = idle.withLock({ $0.popLast() }) {
            if isUsable(connection) { return connection }
            connection.close()
        }
        if live.load(ordering: .relaxed) >= size, let reclaim = reclaimer.withLock({ $0 }), let connection = reclaim() {
            return connection
        }
        let connection = try PGConnection.connect(parameters, logger: logger)
        live.add(1, ordering: .relaxed)
        connection.onClose = { [weak self] in self?.live.subtract(1, ordering: .relaxed) }
        if let sessionSetup {
            do {
                try connection.execute(sessionSetup)
            } catch {
                connection.close()
                throw error
            }
        }
        connection.roundTrips = roundTrips
        return connection
    }

    /// Takes a connection back: kept when it is usable and idle, closed otherwise.
    func checkIn(_ connection: PGConnection) {
        if connection.isBroken || connection.isInTransaction {
            connection.close()
            return
        }
        idle.withLock { $0.append(connection) }
    }

    /// An idle pool connection has nothing to read: if it has, the server closed it or sent a
    /// FATAL error (terminated backend, restart) — possibly not yet seen as a broken connection
    /// by libpq — so it is not reused.
    func isUsable(_ connection: PGConnection) -> Bool {
        guard !connection.isBroken else { return false }
        var descriptor = pollfd(fd: connection.socket, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, 0) == 0
    }
}

/// Connections handed to a blocking-pool thread to be closed there.
///
/// `@unchecked Sendable`: the connections are no longer used by anyone else; only the one
/// thread that closes them touches them.
private final class ClosingConnections: @unchecked Sendable {
    private let connections: [PGConnection]

    init(_ connections: [PGConnection]) {
        self.connections = connections
    }

    func closeAll() {
        for connection in connections { connection.close() }
    }
}
