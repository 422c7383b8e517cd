/// What `tidings bench` runs, and how hard.
public struct BenchOptions: Sendable {
    public var scenario: Scenario
    /// Where the gateway listens (plain HTTP); the publishers go there.
    public var endpoint: Endpoint
    /// Where the streams go, round-robin by stream number (several gateways on one database);
    /// empty for `endpoint` alone.
    public var streamEndpoints: [Endpoint] = []
    /// A name for the report (`tidings`, `floor`, …).
    public var label = "tidings"
    /// Streams to open (`--connections`).
    public var subscribers: Int
    /// Events per second offered by the publishers; 0 for flat out.
    public var rate: Double
    /// Keep-alive publishing connections.
    public var publishConnections: Int
    /// Requests in flight per publishing connection (HTTP/1.1 pipelining when more than 1).
    public var pipeline = 1
    /// Events per publish request (an array when more than 1).
    public var batch = 1
    /// Padding added to each event's data, in bytes.
    public var payloadBytes = 0
    /// How the streams connect: `GET /events` (SSE), `GET /ws` (WebSocket) or `GET /poll`.
    public var transport = Transport.sse
    /// The topic of the fan-out and replay scenarios.
    public var topic = "bench"
    /// User ids are `<userPrefix><n>`.
    public var userPrefix = "bench-u"
    /// The event type published.
    public var eventType = "bench"
    public var duration: Duration = .seconds(10)
    public var warmup: Duration = .seconds(2)
    /// New connections per second while opening streams.
    public var rampPerSecond = 2_000
    /// Idle scenario: wait this long after the last stream opened before measuring memory.
    public var settle: Duration = .seconds(3)
    /// Replay scenario: events missed while disconnected.
    public var missed = 999
    /// Replay scenario: reconnects measured.
    public var iterations = 20
    /// Replay scenario: events published to another topic first, so the store is not empty.
    public var background = 0
    /// Event-loop threads of the load generator.
    public var threads = 1
    /// Reopen streams the server ends (with Last-Event-ID), as a browser does.
    public var reconnect = true
    /// A local server process to sample (CPU seconds, RSS) from /proc.
    public var serverPID: Int32?
    /// Where the server process runs (for the report only).
    public var serverCPU: String?
    /// Where the load runs (for the report only).
    public var loadCPU: String?
    /// A shell command run as `<command> start` and `<command> end` at the measurement window's
    /// bounds (right after the CPU samples), e.g. to sample the database; it must be quick.
    public var windowHook: String?

    /// Soak: short-lived streams opened (and closed again) per second.
    public var churnPerSecond = 1_000
    /// Soak: slow subscribers kept running at any time.
    public var slowClients = 8
    /// Soak: tracked streams closed and resumed with their last id, per second.
    public var resumesPerSecond = 5.0
    /// Soak: topics the tracked streams and the publisher spread over.
    public var soakTopics = 4
    /// Soak: the `timeout` of the long polls. A waiting poll whose client left holds its socket
    /// until then, so the server settles at least this long (plus 2 s) before it is sampled.
    public var pollTimeout: Duration = .seconds(25)

    public init(scenario: Scenario, endpoint: Endpoint) {
        self.scenario = scenario
        self.endpoint = endpoint
        switch scenario {
        case .fanout:
            subscribers = 2_000
            rate = 20
            publishConnections = 4
        case .users:
            subscribers = 2_000
            rate = 0
            publishConnections = 16
        case .idle:
            subscribers = 10_000
            rate = 0
            publishConnections = 0
        case .replay:
            subscribers = 1
            rate = 0
            publishConnections = 1
        case .soak:
            subscribers = 400
            rate = 200
            publishConnections = 1
            duration = .seconds(600)
            warmup = .seconds(30)
            payloadBytes = 512
        }
    }
}

/// Tokens for the streams and the publishers.
public protocol BenchCredentials: Sendable {
    /// The token of a subscriber `user` that may read `topics`; `nil` to send none.
    func subscriberToken(user: String, topics: [String]) async throws -> String?
    /// The publisher's token or publish key; `nil` to send none.
    func publisherToken() async throws -> String?
}

/// The same tokens for everyone (`--subscriber-token`, `--publisher-token`).
public struct StaticCredentials: BenchCredentials {
    public var subscriber: String?
    public var publisher: String?

    public init(subscriber: String?, publisher: String?) {
        self.subscriber = subscriber
        self.publisher = publisher
    }

    public func subscriberToken(user: String, topics: [String]) async throws -> String? { subscriber }
    public func publisherToken() async throws -> String? { publisher }
}

/// For a server without authentication (the C reference server): a stream's bearer token is its
/// user id, which is how that server routes `user` events.
public struct UserIDCredentials: BenchCredentials {
    public init() {}
    public func subscriberToken(user: String, topics: [String]) async throws -> String? { user }
    public func publisherToken() async throws -> String? { "bench" }
}
