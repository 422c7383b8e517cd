import Foundation
import Logging
import Metrics
import NIOCore
import Synchronization
import TidingsCore

/// The listener's loop: runs on one dedicated thread, owns one connection, delivers stored
/// events to the bus in id order and plain NOTIFY events at once.
///
/// `@unchecked Sendable`: everything but `status`, `stopRequested` and `pipe` (which are
/// thread-safe) is touched only by the thread running `run()`.
final class ListenerLoop: @unchecked Sendable {
    struct Settings: Sendable {
        var wakeup: PostgresConfiguration.Wakeup
        var pollInterval: Duration
        var safetyPollInterval: Duration
        var orderWait: Duration
        var pageSize: Int
        /// First and largest delay between failed connection attempts.
        var backoff: (first: Duration, cap: Duration) = (.milliseconds(100), .seconds(5))
        /// Polling while a hole blocks delivery: first and largest interval.
        var waitPoll: (first: Duration, cap: Duration) = (.milliseconds(2), .milliseconds(50))
        /// How often `tidings.state.settled_through` is updated.
        var horizonWriteInterval: Duration = .seconds(1)
    }

    /// What `/readyz` sees.
    struct Status: Sendable {
        var connected = false
        var caughtUp = false
        /// The connection's server process (tests terminate it).
        var backendPID: Int32?
        /// True while a hole blocks delivery.
        var waitingOnHole = false
        /// Reads done so far (tests await "a read after this").
        var reads: UInt64 = 0
    }

    private enum CycleResult {
        case more
        case waiting
        case idle
    }

    private static let readSQL = """
        SELECT s.snapshot, NULL::text, \(StoredEvent.columns)
        FROM (SELECT pg_current_snapshot()::text AS snapshot) AS s
        LEFT JOIN LATERAL (
            SELECT id, targets, event, data, created_at FROM tidings.events WHERE id > $1 ORDER BY id LIMIT $2
        ) AS e ON true
        ORDER BY e.id
        """

    /// The same read listing, after its snapshot, the transactions in progress: each holds an
    /// ExclusiveLock on its own transaction id (see `DeliveryOrder`).
    private static let holeReadSQL = """
        SELECT s.snapshot,
            (SELECT coalesce(string_agg(transactionid::text, ','), '') FROM pg_locks
             WHERE locktype = 'transactionid' AND mode = 'ExclusiveLock' AND granted),
            \(StoredEvent.columns)
        FROM (SELECT pg_current_snapshot()::text AS snapshot) AS s
        LEFT JOIN LATERAL (
            SELECT id, targets, event, data, created_at FROM tidings.events WHERE id > $1 ORDER BY id LIMIT $2
        ) AS e ON true
        ORDER BY e.id
        """

    let status = Mutex(Status())
    private let stopRequested = Atomic<Bool>(false)
    private let pipe = SelfPipe()

    private let parameters: ConnectionParameters
    private let bus: EventBus
    private let settings: Settings
    private let logger: Logger
    private let metrics: ListenerMetrics
    private var order: DeliveryOrder
    private var connection: PGConnection?
    private var persistedHorizon: EventID
    private var lastHorizonWrite = NIODeadline.uptimeNanoseconds(0)
    private var waitPollInterval: Duration

    init(
        parameters: ConnectionParameters,
        bus: EventBus,
        horizon: EventID,
        settings: Settings,
        logger: Logger,
        metrics: ListenerMetrics
    ) {
        self.parameters = parameters.named("tidings-listener")
        self.bus = bus
        self.settings = settings
        self.logger = logger
        self.metrics = metrics
        self.order = DeliveryOrder(lastDelivered: horizon, orderWait: .nanoseconds(settings.orderWait.nanosecondsClamped))
        self.persistedHorizon = horizon
        self.waitPollInterval = settings.waitPoll.first
    }

    /// Ends `run()` promptly, from any thread.
    func stop() {
        stopRequested.store(true, ordering: .sequentiallyConsistent)
        pipe.wake()
    }

    private var stopping: Bool {
        stopRequested.load(ordering: .sequentiallyConsistent)
    }

    /// Runs until `stop()`: connects, reconnects with capped exponential backoff, delivers.
    func run() {
        var failures = 0
        var everConnected = false
        while !stopping {
            if connection == nil {
                do {
                    try connect()
                    if everConnected {
                        metrics.reconnects.increment()
                        logger.info("Listener reconnected", metadata: [PostgresLogKey.lastDelivered: "\(order.lastDelivered)"])
                    }
                    everConnected = true
                    failures = 0
                } catch {
                    failures += 1
                    let delay = backoff(failures)
                    logger.warning(
                        "Listener cannot connect",
                        metadata: [
                            PostgresLogKey.error: "\(error)",
                            PostgresLogKey.attempt: "\(failures)",
                            PostgresLogKey.delay: "\(delay.seconds)",
                        ])
                    _ = pipe.wait(socket: nil, timeout: delay)
                    pipe.drain()
                    continue
                }
            }
            do {
                try serve()
            } catch {
                logger.warning("Listener connection lost", metadata: [PostgresLogKey.error: "\(error)"])
                disconnect()
            }
        }
        if let connection {
            writeHorizon(on: connection, force: true)
        }
        disconnect()
    }

    private func backoff(_ failures: Int) -> Duration {
        let exponent = min(failures - 1, 16)
        let delay = settings.backoff.first * (1 << exponent)
        let capped = min(delay, settings.backoff.cap)
        // ±20 % jitter so that many gateways do not reconnect in step.
        return capped * Double.random(in: 0.8...1.2)
    }

    private func connect() throws {
        let connection = try PGConnection.connect(parameters, logger: logger)
        do {
            if settings.wakeup == .notify {
                try connection.execute("LISTEN tidings_wakeup; LISTEN tidings")
            } else {
                try connection.execute("LISTEN tidings")
            }
        } catch {
            connection.close()
            throw error
        }
        self.connection = connection
        let pid = connection.backendPID
        status.withLock { $0 = Status(connected: true, caughtUp: false, backendPID: pid, reads: $0.reads) }
        logger.debug("Listener connected", metadata: [PostgresLogKey.backendPID: "\(pid)"])
    }

    private func disconnect() {
        connection?.close()
        connection = nil
        status.withLock { $0 = Status(connected: false, caughtUp: false, backendPID: nil, reads: $0.reads) }
    }

    /// Serves one connection until `stop()` (returns) or a connection error (throws).
    private func serve() throws {
        guard let connection else { return }
        var wakeRequested = true
        var nextRead = NIODeadline.now()
        while !stopping {
            drainNotifications(connection, wakeRequested: &wakeRequested)
            if wakeRequested || NIODeadline.now() >= nextRead {
                wakeRequested = false
                let result = try readCycle(connection)
                writeHorizon(on: connection, force: false)
                switch result {
                case .more:
                    nextRead = .now()
                case .waiting:
                    nextRead = .now() + .nanoseconds(waitPollInterval.nanosecondsClamped)
                    waitPollInterval = min(waitPollInterval * 2, settings.waitPoll.cap)
                case .idle:
                    waitPollInterval = settings.waitPoll.first
                    let interval = settings.wakeup == .notify ? settings.safetyPollInterval : settings.pollInterval
                    nextRead = .now() + .nanoseconds(interval.nanosecondsClamped)
                }
                drainNotifications(connection, wakeRequested: &wakeRequested)
                if wakeRequested || result == .more { continue }
            }
            let remaining = nextRead - .now()
            guard remaining > .zero else { continue }
            let readiness = pipe.wait(socket: connection.socket, timeout: .nanoseconds(remaining.nanoseconds))
            if readiness.pipe { pipe.drain() }
            if readiness.socket { try connection.consumeInput() }
        }
    }

    private func drainNotifications(_ connection: PGConnection, wakeRequested: inout Bool) {
        while let notification = connection.nextNotification() {
            if notification.channel == "tidings" {
                deliverPlain(notification.payload)
            } else {
                wakeRequested = true
            }
        }
    }

    /// Reads new rows and delivers what order allows; a hole read follows at once when needed.
    private func readCycle(_ connection: PGConnection) throws -> CycleResult {
        var (rows, snapshot, _) = try read(connection, hole: false)
        var outcome = order.process(rows: rows, id: \.id, snapshot: snapshot, inProgress: nil, now: .now())
        apply(outcome)
        if outcome.status == .needsHoleRead {
            let inProgress: Set<UInt64>?
            (rows, snapshot, inProgress) = try read(connection, hole: true)
            outcome = order.process(rows: rows, id: \.id, snapshot: snapshot, inProgress: inProgress, now: .now())
            apply(outcome)
        }
        let fullPage = rows.count >= settings.pageSize
        let waiting = outcome.status != .idle
        status.withLock { status in
            if !fullPage { status.caughtUp = true }
            status.waitingOnHole = waiting
            status.reads &+= 1
        }
        switch outcome.status {
        case .idle: return fullPage ? .more : .idle
        case .waiting, .needsHoleRead: return .waiting
        }
    }

    private func read(_ connection: PGConnection, hole: Bool) throws -> (rows: [StoredRow], snapshot: PGSnapshot, inProgress: Set<UInt64>?) {
        let result = try connection.query(
            hole ? Self.holeReadSQL : Self.readSQL,
            [String(order.lastDelivered), String(settings.pageSize)])
        let first = try result.single(orMore: true)
        guard let snapshot = PGSnapshot(try first.string(0)) else { throw PostgresError(.unexpectedResult) }
        var inProgress: Set<UInt64>?
        if hole {
            var xids = Set<UInt64>()
            for item in try first.string(1).split(separator: ",") {
                guard let xid = UInt32(item) else { throw PostgresError(.unexpectedResult) }
                xids.insert(snapshot.widen(xid))
            }
            inProgress = xids
        }
        var rows: [StoredRow] = []
        rows.reserveCapacity(result.count)
        for row in result.rows where !row.isNull(2) {
            let (id, event) = try StoredEvent.decode(row, at: 2)
            rows.append(StoredRow(id: id, event: event))
        }
        return (rows, snapshot, inProgress)
    }

    private func apply(_ outcome: DeliveryOrder.Outcome<StoredRow>) {
        if let expired = outcome.expired {
            metrics.orderWaitExpired.increment()
            logger.warning(
                "Order wait expired; moving past a hole",
                metadata: [
                    PostgresLogKey.holeFrom: "\(expired.from)",
                    PostgresLogKey.holeThrough: "\(expired.through)",
                    PostgresLogKey.waited: "\(Double(expired.waited.nanoseconds) / 1e9)",
                ])
        }
        guard !outcome.steps.isEmpty else { return }
        let now = Date()
        for step in outcome.steps {
            switch step {
            case .advance(let id):
                bus.advance(to: id)
            case .deliver(let row):
                if let event = row.event {
                    bus.deliver(event)
                    metrics.deliveryLag.record(max(0, now.timeIntervalSince(event.createdAt)))
                } else {
                    logger.error("Skipping an undecodable stored event", metadata: [PostgresLogKey.eventID: "\(row.id)"])
                    bus.advance(to: row.id)
                }
            }
        }
    }

    private func deliverPlain(_ payload: String) {
        do {
            let request = try PublishRequest.decode(Array(payload.utf8))
            let now = Date()
            for new in request.events {
                bus.deliver(Event(id: nil, targets: new.targets, type: new.type, data: new.data, createdAt: now))
            }
        } catch {
            metrics.notifyInvalid.increment()
            let kind: String
            switch error {
            case .malformed: kind = "malformed JSON"
            case .invalid: kind = "invalid fields"
            case .tooLarge: kind = "data too large"
            }
            logger.warning(
                "Ignoring an invalid NOTIFY tidings payload",
                metadata: [
                    PostgresLogKey.error: .string(kind),
                    PostgresLogKey.payloadPrefix: .string(Self.prefix(of: payload)),
                    PostgresLogKey.payloadBytes: "\(payload.utf8.count)",
                ])
        }
    }

    /// At most 32 printable characters of a payload, for a log line.
    static func prefix(of payload: String) -> String {
        String(payload.unicodeScalars.prefix(32).map { $0.properties.isWhitespace || $0.value < 0x20 ? " " : Character($0) })
    }

    /// Records how far delivery is settled, so a gateway that starts later begins there.
    private func writeHorizon(on connection: PGConnection, force: Bool) {
        let horizon = order.lastDelivered
        guard horizon > persistedHorizon else { return }
        let now = NIODeadline.now()
        guard force || now - lastHorizonWrite >= .nanoseconds(settings.horizonWriteInterval.nanosecondsClamped) else { return }
        do {
            try connection.query(
                "UPDATE tidings.state SET value = $1 WHERE name = 'settled_through' AND value < $1",
                [String(horizon)])
            persistedHorizon = horizon
            lastHorizonWrite = now
        } catch {
            logger.debug("Cannot record the delivery horizon", metadata: [PostgresLogKey.error: "\(error)"])
        }
    }
}

/// A stored event as the listener read it; `event` is `nil` for a row no event can carry.
struct StoredRow: Sendable {
    var id: EventID
    var event: Event?
}

extension PGRows {
    /// The first row of a result that has at least one.
    func single(orMore: Bool) throws(PostgresError) -> PGRow {
        guard let first = rows.first, orMore || rows.count == 1 else { throw PostgresError(.unexpectedResult) }
        return first
    }
}

extension Duration {
    /// Nanoseconds, clamped to `Int64`.
    var nanosecondsClamped: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return product + attoseconds / 1_000_000_000
    }
}
