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
        /// `.notify` mode: how often the listener reads while events flow (nobody notifies it
        /// then), and how long reads must find nothing before it sleeps until notified.
        var busyPollInterval: Duration
        var sleepAfter: Duration
        var orderWait: Duration
        var pageSize: Int
        /// First and largest delay between failed connection attempts.
        var backoff: (first: Duration, cap: Duration) = (.milliseconds(100), .seconds(5))
        /// Polling while a hole blocks delivery: first and largest interval.
        var waitPoll: (first: Duration, cap: Duration) = (.milliseconds(2), .milliseconds(50))
        /// How often `tidings.state.settled_through` is updated.
        var horizonWriteInterval: Duration = .seconds(1)
        /// Bounds on the listener's statements (`statement_timeout`, `lock_timeout`): a DBA's
        /// lock on the schema's tables shows as a stalled listener instead of a silent one.
        var statementTimeout: Duration = .seconds(30)
        var lockTimeout: Duration = .seconds(1)
        /// The horizon write waits at most this long for a lock on `tidings.state`, then is
        /// retried later: live delivery never waits for it.
        var horizonLockTimeout: Duration = .milliseconds(50)
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
        /// When the last read began that found delivery caught up with what was committed.
        var caughtUpAt: NIODeadline?
        /// True while the listener waits for news with nothing left to deliver.
        var idle = false
        /// When the running read cycle began (`nil` between cycles).
        var cycleStarted: NIODeadline?
        /// Since when the listener's statements time out or wait for locks.
        var stalledSince: NIODeadline?
        /// True while the listener holds the sleep lock and waits for `NOTIFY tidings_wakeup`.
        var asleep = false

        /// How far live delivery is behind what the database has committed: 0 while idle,
        /// else the time since the listener last knew itself caught up.
        func lag(now: NIODeadline) -> TimeAmount {
            if idle && stalledSince == nil { return .zero }
            guard let caughtUpAt else { return .zero }
            return max(.zero, now - caughtUpAt)
        }

        /// True when one read cycle has run longer than `limit`, or statements keep failing on
        /// timeouts or locks.
        func isStalled(now: NIODeadline, limit: TimeAmount) -> Bool {
            if stalledSince != nil { return true }
            if let cycleStarted, now - cycleStarted > limit { return true }
            return false
        }
    }

    private enum CycleResult {
        case more
        case waiting
        case idle
    }

    private static let readSQL = """
        SELECT s.snapshot, NULL::text, NULL::bigint, \(StoredEvent.columns)
        FROM (SELECT pg_current_snapshot()::text AS snapshot) AS s
        LEFT JOIN LATERAL (
            SELECT id, targets, event, data, created_at FROM tidings.events WHERE id > $1 ORDER BY id LIMIT $2
        ) AS e ON true
        ORDER BY e.id
        """

    /// The same read listing, after its snapshot, the publishers in progress: the transaction
    /// ids of the holders of the order lock (see `DeliveryOrder`; pg_locks is read once); and
    /// how far the pruner has gone (a listener more than `--retention` behind finds pruned ids
    /// where it would otherwise see rolled-back ones).
    private static let holeReadSQL = """
        SELECT s.snapshot,
            (WITH locks AS MATERIALIZED (
                SELECT locktype, virtualtransaction, transactionid, database, classid, objid, objsubid, mode
                FROM pg_locks WHERE granted AND locktype IN ('advisory', 'transactionid'))
             SELECT coalesce(string_agg(x.transactionid::text, ','), '')
             FROM locks AS a JOIN locks AS x ON x.virtualtransaction = a.virtualtransaction
             WHERE a.locktype = 'advisory' AND a.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                AND a.classid = \(OrderLock.classID) AND a.objid = \(OrderLock.objectID) AND a.objsubid = 1
                AND x.locktype = 'transactionid' AND x.mode = 'ExclusiveLock'),
            (SELECT value FROM tidings.state WHERE name = 'pruned_through'),
            \(StoredEvent.columns)
        FROM (SELECT pg_current_snapshot()::text AS snapshot) AS s
        LEFT JOIN LATERAL (
            SELECT id, targets, event, data, created_at FROM tidings.events WHERE id > $1 ORDER BY id LIMIT $2
        ) AS e ON true
        ORDER BY e.id
        """

    /// While a hole's wait is pending: only a snapshot, to see whether the candidates ended.
    private static let probeSQL = "SELECT pg_current_snapshot()::text"

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
    /// The listener holds `SleepLock` on `connection` (publishers notify).
    private var asleep = false {
        didSet { status.withLock { $0.asleep = asleep } }
    }

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
        var stalls = 0
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
            } catch let error as PostgresError where error.isTimeout && connection?.isBroken == false {
                // A lock held on the schema (or a statement over its bound): the connection is
                // fine; report the stall and try again after a pause that grows while it lasts.
                let now = NIODeadline.now()
                let firstOfEpisode = status.withLock { status -> Bool in
                    defer {
                        if status.stalledSince == nil { status.stalledSince = now }
                        status.idle = false
                        status.cycleStarted = nil
                    }
                    return status.stalledSince == nil
                }
                stalls = firstOfEpisode ? 1 : stalls + 1
                let delay = backoff(stalls)
                logger.warning(
                    "Listener stalled: a statement timed out or waited too long for a lock",
                    metadata: [PostgresLogKey.error: "\(error)", PostgresLogKey.delay: "\(delay.seconds)"])
                _ = pipe.wait(socket: nil, timeout: delay)
                pipe.drain()
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
        connection.roundTrips = metrics.roundTrips
        do {
            let bounds = "SET statement_timeout = \(settings.statementTimeout.milliseconds); "
                + "SET lock_timeout = \(settings.lockTimeout.milliseconds); "
            if settings.wakeup == .notify {
                try connection.execute(bounds + "LISTEN \(SleepLock.channel); LISTEN tidings")
            } else {
                try connection.execute(bounds + "LISTEN tidings")
            }
        } catch {
            connection.close()
            throw error
        }
        self.connection = connection
        let pid = connection.backendPID
        status.withLock {
            $0 = Status(connected: true, caughtUp: false, backendPID: pid, reads: $0.reads, caughtUpAt: $0.caughtUpAt)
        }
        logger.debug("Listener connected", metadata: [PostgresLogKey.backendPID: "\(pid)"])
    }

    private func disconnect() {
        connection?.close()
        connection = nil
        asleep = false  // the session, and its lock, are gone
        status.withLock {
            $0 = Status(connected: false, caughtUp: false, backendPID: nil, reads: $0.reads, caughtUpAt: $0.caughtUpAt)
        }
    }

    /// Serves one connection until `stop()` (returns) or a connection error (throws).
    ///
    /// `.notify` mode: while events flow the listener reads every `busyPollInterval` and nobody
    /// notifies it; once reads have found nothing for `sleepAfter` it falls asleep (see
    /// `fallAsleep`) and waits for `NOTIFY tidings_wakeup`, reading every `safetyPollInterval`
    /// anyway. `.poll` mode: it reads every `pollInterval` and never sleeps.
    private func serve() throws {
        guard let connection else { return }
        if asleep {
            // Left asleep by a statement that timed out: start awake.
            try wake(connection)
        }
        var wakeRequested = true
        var nextRead = NIODeadline.now()
        // Since when reads found nothing new (nil while events flow).
        var quietSince: NIODeadline?
        while !stopping {
            drainNotifications(connection, wakeRequested: &wakeRequested)
            if wakeRequested || NIODeadline.now() >= nextRead {
                if asleep { try wake(connection) }
                wakeRequested = false
                let delivered = order.lastDelivered
                var result = try readCycle(connection)
                writeHorizon(on: connection, force: false)
                if result == .idle && order.lastDelivered == delivered {
                    let now = NIODeadline.now()
                    if quietSince == nil { quietSince = now }
                    if settings.wakeup == .notify, let since = quietSince,
                        now - since >= .nanoseconds(settings.sleepAfter.nanosecondsClamped),
                        !(try fallAsleep(connection))
                    {
                        result = .more
                        quietSince = nil
                    }
                } else {
                    quietSince = nil
                }
                switch result {
                case .more:
                    nextRead = .now()
                case .waiting:
                    if order.lastDelivered != delivered { waitPollInterval = settings.waitPoll.first }
                    nextRead = .now() + .nanoseconds(waitPollInterval.nanosecondsClamped)
                    waitPollInterval = min(waitPollInterval * 2, settings.waitPoll.cap)
                case .idle:
                    waitPollInterval = settings.waitPoll.first
                    let interval: Duration
                    switch settings.wakeup {
                    case .poll: interval = settings.pollInterval
                    case .notify: interval = asleep ? settings.safetyPollInterval : settings.busyPollInterval
                    }
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

    /// Takes the sleep lock, so that publishers notify from now on, then makes sure nothing
    /// slipped through while they did not: a publisher that decided not to notify did so while
    /// holding the order lock, so it is either still a holder (stay awake) or done, and then a
    /// read that begins after the check sees its events. Returns `true` when asleep.
    private func fallAsleep(_ connection: PGConnection) throws -> Bool {
        try connection.execute(SleepLock.takeSQL)
        asleep = true
        let publishing = try connection.query(OrderLock.heldSQL).single(orMore: false).bool(0)
        let delivered = order.lastDelivered
        if !publishing, try readCycle(connection) == .idle, order.lastDelivered == delivered {
            logger.trace("Listener asleep until notified")
            return true
        }
        try wake(connection)
        return false
    }

    /// Lets the sleep lock go: publishers stop notifying.
    private func wake(_ connection: PGConnection) throws {
        try connection.execute(SleepLock.releaseSQL)
        asleep = false
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
        let started = NIODeadline.now()
        status.withLock { status in
            status.cycleStarted = started
            status.idle = false
        }
        if order.wait != nil {
            // Rows read now could not be delivered unless the wait is over: probe first.
            let probe = try connection.query(Self.probeSQL).single(orMore: false)
            guard let snapshot = PGSnapshot(try probe.string(0)) else { throw PostgresError(.unexpectedResult) }
            if !order.mayRead(snapshot: snapshot, now: .now()) {
                status.withLock { status in
                    status.waitingOnHole = true
                    status.reads &+= 1
                    status.cycleStarted = nil
                    status.stalledSince = nil
                }
                return .waiting
            }
        }
        var read = try self.read(connection, hole: false)
        var outcome = order.process(rows: read.rows, id: \.id, snapshot: read.snapshot, inProgress: nil, now: .now())
        apply(outcome)
        if outcome.status == .needsHoleRead {
            read = try self.read(connection, hole: true)
            if let pruned = read.prunedThrough, pruned > order.lastDelivered {
                passPruned(through: pruned, oldestAvailable: read.rows.first { $0.id > pruned }?.id)
            }
            outcome = order.process(
                rows: read.rows, id: \.id, snapshot: read.snapshot, inProgress: read.inProgress, now: .now())
            apply(outcome)
        }
        let fullPage = read.rows.count >= settings.pageSize
        let waiting = outcome.status != .idle
        status.withLock { status in
            if !fullPage { status.caughtUp = true }
            status.waitingOnHole = waiting
            status.reads &+= 1
            status.cycleStarted = nil
            status.stalledSince = nil
            if !fullPage, !waiting {
                status.caughtUpAt = started
                status.idle = true
            }
        }
        switch outcome.status {
        case .idle: return fullPage ? .more : .idle
        case .waiting, .needsHoleRead: return .waiting
        }
    }

    private struct Read {
        var rows: [StoredRow]
        var snapshot: PGSnapshot
        /// For a hole read: the publishers in progress after the snapshot.
        var inProgress: Set<UInt64>?
        /// For a hole read: `tidings.state.pruned_through`.
        var prunedThrough: EventID?
    }

    /// The listener is more than `--retention` behind: events after what it delivered were
    /// pruned before it read them. Live subscribers get `tidings.reset` (they reload, as a
    /// resuming client would) instead of a silent gap, and delivery goes on after the cut.
    private func passPruned(through pruned: EventID, oldestAvailable: EventID?) {
        logger.warning(
            "Listener fell behind retention; live subscribers get tidings.reset",
            metadata: [PostgresLogKey.lastDelivered: "\(order.lastDelivered)", PostgresLogKey.horizon: "\(pruned)"])
        let data = Replay.resetData(.historyExpired, given: order.lastDelivered, oldest: oldestAvailable)
        bus.broadcast(Event(id: pruned, targets: [], type: .reset, data: data, createdAt: Date()))
        order.pass(through: pruned)
    }

    private func read(_ connection: PGConnection, hole: Bool) throws -> Read {
        let result = try connection.queryPrepared(
            hole ? Self.holeReadSQL : Self.readSQL,
            [String(order.lastDelivered), String(settings.pageSize)])
        let first = try result.single(orMore: true)
        guard let snapshot = PGSnapshot(try first.string(0)) else { throw PostgresError(.unexpectedResult) }
        var inProgress: Set<UInt64>?
        var prunedThrough: EventID?
        if hole {
            var xids = Set<UInt64>()
            for item in try first.string(1).split(separator: ",") {
                guard let xid = UInt32(item) else { throw PostgresError(.unexpectedResult) }
                xids.insert(snapshot.widen(xid))
            }
            inProgress = xids
            prunedThrough = try first.optionalInt64(2)
        }
        var rows: [StoredRow] = []
        rows.reserveCapacity(result.count)
        for row in result.rows where !row.isNull(3) {
            let (id, event) = try StoredEvent.decode(row, at: 3)
            rows.append(StoredRow(id: id, event: event))
        }
        return Read(rows: rows, snapshot: snapshot, inProgress: inProgress, prunedThrough: prunedThrough)
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
                    metrics.commitToDelivery.record(max(0, now.timeIntervalSince(event.createdAt)))
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
            // A lock on tidings.state (a DBA's) must not hold live delivery: give up quickly and
            // try again at the next interval.
            try connection.execute(
                "BEGIN; SET LOCAL lock_timeout = \(settings.horizonLockTimeout.milliseconds); "
                    + "UPDATE tidings.state SET value = \(horizon) WHERE name = 'settled_through' AND value < \(horizon); COMMIT")
            persistedHorizon = horizon
            lastHorizonWrite = now
        } catch {
            if !connection.isBroken, connection.isInTransaction { _ = try? connection.execute("ROLLBACK") }
            lastHorizonWrite = now
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
