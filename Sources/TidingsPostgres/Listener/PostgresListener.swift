import Logging
import Metrics
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import TidingsCore

/// The listener service: one dedicated connection and thread that `LISTEN`s on
/// `tidings_wakeup` (notify mode) and `tidings` (plain NOTIFY events), reads new rows of
/// `tidings.events` and delivers them to the bus in id order with no gaps.
///
/// It waits with `poll()` on the connection's socket and a self-pipe, so it never busy-waits and
/// stops promptly. A dead connection (error, EOF, TCP keepalive) or a silent one (the periodic
/// read fails) is replaced with capped exponential backoff; on reconnect it catches up from
/// the last delivered id, so nothing stored meanwhile is lost. Plain NOTIFY events sent while
/// it was away are lost — they are ephemeral by contract.
///
/// Readiness: `listener_disconnected` while it has no connection, `catching_up` until a read
/// after (re)connecting reaches the end of the log, `listener_stalled` while its statements
/// time out or wait for a lock (a DBA's lock on the schema's tables) or one read has run for
/// longer than `stallLimit`. The gauge `tidings_delivery_lag_seconds`, updated every second,
/// shows how far live delivery is behind what the database has committed.
public final class PostgresListener: Service, ReadinessSource {
    private let loop: ListenerLoop
    private let lagGauge: Gauge
    /// A read cycle running longer than this makes the listener stalled.
    let stallLimit: TimeAmount = .seconds(5)

    init(
        parameters: ConnectionParameters,
        bus: EventBus,
        horizon: EventID,
        configuration: PostgresConfiguration,
        logger: Logger,
        metricsFactory: any MetricsFactory
    ) {
        var settings = ListenerLoop.Settings(
            wakeup: configuration.wakeup,
            pollInterval: configuration.pollInterval,
            safetyPollInterval: configuration.safetyPollInterval,
            busyPollInterval: configuration.busyPollInterval,
            sleepAfter: configuration.sleepAfter,
            orderWait: configuration.orderWait,
            pageSize: max(1, configuration.pageSize)
        )
        settings.horizonWriteInterval = configuration.horizonWriteInterval
        let metrics = ListenerMetrics(factory: metricsFactory)
        self.lagGauge = metrics.deliveryLag
        self.loop = ListenerLoop(
            parameters: parameters,
            bus: bus,
            horizon: horizon,
            settings: settings,
            logger: logger,
            metrics: metrics
        )
    }

    public func run() async throws {
        let thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        let loop = loop
        let lagGauge = lagGauge
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await withTaskGroup(of: Void.self) { tasks in
                    tasks.addTask {
                        // The loop's thread may be blocked in a statement: the gauge is set from here.
                        while !Task.isCancelled {
                            let lag = loop.status.withLock { $0.lag(now: .now()) }
                            lagGauge.record(Double(lag.nanoseconds) / 1e9)
                            try? await Task.sleep(for: .seconds(1))
                        }
                    }
                    _ = try? await thread.runIfActive { loop.run() }
                    tasks.cancelAll()
                }
            } onGracefulShutdown: {
                loop.stop()
            }
        } onCancel: {
            loop.stop()
        }
        try? await thread.shutdownGracefully()
    }

    public func readiness() -> Readiness {
        let status = loop.status.withLock { $0 }
        if !status.connected { return Readiness(isReady: false, reason: "listener_disconnected") }
        if status.isStalled(now: .now(), limit: stallLimit) { return Readiness(isReady: false, reason: "listener_stalled") }
        if !status.caughtUp { return Readiness(isReady: false, reason: "catching_up") }
        return .ready
    }

    /// How far live delivery is behind what the database has committed.
    public var deliveryLag: Duration {
        .nanoseconds(loop.status.withLock { $0.lag(now: .now()) }.nanoseconds)
    }

    /// The loop's state, for tests.
    var status: ListenerLoop.Status {
        loop.status.withLock { $0 }
    }

    /// The server process of the listener's connection, while connected.
    public var backendPID: Int32? {
        loop.status.withLock { $0.backendPID }
    }
}
