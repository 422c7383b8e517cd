/// How TidingsPostgres talks to the database.
///
/// | Property | CLI flag | Default |
/// | --- | --- | --- |
/// | `url` | `--database-url` / `DATABASE_URL` | `nil`: libpq's `PG*` environment variables |
/// | `wakeup` | `--wakeup notify\|poll` | `.notify` |
/// | `pollInterval` | `--poll-interval` | 100 ms |
/// | `orderWait` | `--order-wait` | 10 s |
/// | `retention` | `--retention` | 24 h |
/// | `poolSize` | — | 4 connections |
/// | `presenceInterval` | — | 2 s |
public struct PostgresConfiguration: Sendable {
    /// How the listener learns that events were stored.
    public enum Wakeup: String, Sendable, CaseIterable {
        /// Adaptive: while events flow the listener reads every few milliseconds and nobody
        /// notifies it; once idle it sleeps, and only then does a transaction that stores events
        /// send `NOTIFY tidings_wakeup` (one per transaction). Asleep, it still reads every
        /// `safetyPollInterval`.
        case notify
        /// No NOTIFY is sent; the listener reads every `pollInterval`.
        case poll
    }

    /// A `postgresql://` URL or a `key=value` conninfo string; `nil` leaves everything to
    /// libpq's `PG*` environment variables and defaults. TCP keepalives and a connect timeout
    /// are added unless the URL sets them.
    public var url: String?
    /// Wake-up mode, this gateway's own: gateways sharing a database may differ.
    public var wakeup: Wakeup
    /// How often the listener reads in `.poll` mode.
    public var pollInterval: Duration
    /// How often the listener reads in `.notify` mode without a notification (and checks that
    /// its connection is alive).
    public var safetyPollInterval: Duration
    /// How long delivery waits for an older transaction that is still open before it moves on.
    public var orderWait: Duration
    /// How long events (and idempotency keys) are kept.
    public var retention: Duration
    /// How often the pruner runs.
    public var pruneInterval: Duration
    /// Connections (and threads) for publishing, replay and tickets.
    public var poolSize: Int
    /// Most events the listener reads at once.
    public var pageSize: Int
    /// How often this gateway reports its open streams for presence; the others count it for
    /// three of them after its last report (tests shorten it).
    public var presenceInterval: Duration = .seconds(2)
    /// How often the listener records `tidings.state.settled_through` (tests shorten it).
    var horizonWriteInterval: Duration = .seconds(1)
    /// `.notify` mode: how often the listener reads while events flow, and how long reads find
    /// nothing before it sleeps until notified (tests change them).
    var busyPollInterval: Duration = .milliseconds(5)
    var sleepAfter: Duration = .milliseconds(50)
    /// How long a group-commit slot keeps an open transaction for the next publish after its
    /// last one (see ``PostgresEventStore``; tests change it).
    var publishLinger: Duration = PostgresEventStore.defaultLinger

    public init(
        url: String? = nil,
        wakeup: Wakeup = .notify,
        pollInterval: Duration = .milliseconds(100),
        safetyPollInterval: Duration = .seconds(2),
        orderWait: Duration = .seconds(10),
        retention: Duration = .seconds(24 * 3600),
        pruneInterval: Duration = .seconds(60),
        poolSize: Int = 4,
        pageSize: Int = 500
    ) {
        self.url = url
        self.wakeup = wakeup
        self.pollInterval = pollInterval
        self.safetyPollInterval = safetyPollInterval
        self.orderWait = orderWait
        self.retention = retention
        self.pruneInterval = pruneInterval
        self.poolSize = poolSize
        self.pageSize = pageSize
    }
}

extension Duration {
    /// Whole milliseconds (at least 1), for PostgreSQL settings such as `lock_timeout`.
    var milliseconds: Int64 {
        max(1, nanosecondsClamped / 1_000_000)
    }

    /// Seconds as a `Double`.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
