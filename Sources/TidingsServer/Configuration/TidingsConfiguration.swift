import Foundation

/// Everything `tidings serve` can be told. Each property is one command-line flag and one
/// `TIDINGS_<FLAG>` environment variable (see the README's flag table).
///
/// | flag | property | default |
/// |---|---|---|
/// | `--host` | ``host`` | `127.0.0.1` |
/// | `--port` | ``port`` | `8080` |
/// | `--database-url` | ``databaseURL`` | none: memory mode |
/// | `--jwt-secret` | ``jwtSecret`` | none |
/// | `--jwt-public-key` | ``jwtPublicKeyPEM`` (file contents) | none |
/// | `--jwks` | ``jwksJSON`` (file contents) | none |
/// | `--jwks-url`, `--jwks-refresh` | ``jwksURLs``, ``jwksRefresh`` | none, 5 min |
/// | `--jwt-issuer`, `--jwt-audience` | ``jwtIssuer``, ``jwtAudience`` | not checked |
/// | `--jwt-leeway`, `--[no-]jwt-require-exp` | ``jwtLeeway``, ``jwtRequireExp`` | 30 s, on |
/// | `--jwt-subject-claim`, `--jwt-topics-claim`, `--jwt-publish-claim` | ``jwtSubjectClaim``, … | `sub`, `topics`, `publish` |
/// | `--publish-key` | ``publishKeys`` | none |
/// | `--keepalive` | ``keepAlive`` | 15 s |
/// | `--retry` | ``retry`` | 3 s |
/// | `--retention` | ``retention`` | 24 h |
/// | `--memory-max-events` | ``memoryMaxEvents`` | 100,000 |
/// | `--max-queue` | ``maxQueue`` | 1,000 |
/// | `--max-connections`, `--max-connections-per-user` | ``maxConnections``, ``maxConnectionsPerUser`` | unlimited |
/// | `--max-body` | ``maxBody`` | 1 MiB |
/// | `--max-event-bytes` | ``maxEventBytes`` | 64 KiB |
/// | `--ticket-ttl` | ``ticketTTL`` | 30 s |
/// | `--cors-origin` | ``corsOrigins`` | none |
/// | `--allow-query-token` | ``allowQueryToken`` | false |
/// | `--wakeup` | ``wakeup`` | `notify` |
/// | `--poll-interval` | ``pollInterval`` | 100 ms |
/// | `--order-wait` | ``orderWait`` | 10 s |
/// | `--request-timeout` | ``requestTimeout`` | 10 s |
/// | `--idle-timeout` | ``idleTimeout`` | 60 s |
/// | `--drain-period` | ``drainPeriod`` | 10 s |
/// | `--shutdown-timeout` | ``shutdownTimeout`` | 30 s |
/// | `--admin-host`, `--admin-port` | ``adminHost``, ``adminPort`` | none: operations on the public port |
public struct TidingsConfiguration: Sendable {
    public enum Wakeup: String, Sendable, CaseIterable {
        case notify
        case poll
    }

    public var host = "127.0.0.1"
    public var port = 8080
    public var databaseURL: String?
    public var jwtSecret: String?
    public var jwtPublicKeyPEM: String?
    public var jwksJSON: String?
    public var jwtIssuer: String?
    public var jwtAudience: String?
    public var jwksURLs: [String] = []
    public var jwksRefresh: Duration = .seconds(300)
    public var jwtLeeway: Duration = .seconds(30)
    public var jwtRequireExp = true
    public var jwtSubjectClaim = "sub"
    public var jwtTopicsClaim = "topics"
    public var jwtPublishClaim = "publish"
    public var publishKeys: [String] = []
    public var keepAlive: Duration = .seconds(15)
    public var retry: Duration = .seconds(3)
    public var retention: Duration = .seconds(24 * 3600)
    public var memoryMaxEvents = 100_000
    public var maxQueue = 1_000
    public var maxConnections: Int?
    public var maxConnectionsPerUser: Int?
    public var maxBody = 1 << 20
    public var maxEventBytes = 64 << 10
    public var ticketTTL: Duration = .seconds(30)
    public var corsOrigins: [String] = []
    public var allowQueryToken = false
    public var wakeup: Wakeup = .notify
    public var pollInterval: Duration = .milliseconds(100)
    public var orderWait: Duration = .seconds(10)
    // Operations: timeouts, drain, admin listener.
    /// A request's head and body must arrive within it (from its first byte, or from the
    /// connection's start for the first request).
    public var requestTimeout: Duration = .seconds(10)
    /// A keep-alive connection with no request in progress is closed after it.
    public var idleTimeout: Duration = .seconds(60)
    /// On SIGTERM/SIGINT open streams are ended spread over it.
    public var drainPeriod: Duration = .seconds(10)
    /// The process exits at the latest this long after the signal.
    public var shutdownTimeout: Duration = .seconds(30)
    /// With ``adminPort``: where `/metrics`, `/healthz`, `/readyz` and the dashboard are served
    /// instead of the public port.
    public var adminHost = "127.0.0.1"
    public var adminPort: Int?
    /// No flag: how often a gateway in PostgreSQL mode reports its open streams for presence
    /// (tests shorten it).
    var presenceInterval: Duration = .seconds(2)

    public init() {}

    /// The smallest HS256 secret accepted: 32 bytes, the size of the SHA-256 output.
    public static let minimumSecretBytes = 32

    /// Checks the configuration as a whole; the message says what to change.
    public func validate() throws(ConfigurationError) {
        if jwtSecret == nil, jwtPublicKeyPEM == nil, jwksJSON == nil, jwksURLs.isEmpty {
            throw ConfigurationError("no way to verify tokens: give --jwt-secret, --jwt-public-key, --jwks or --jwks-url")
        }
        try validateTokenRules()
        if let jwtSecret, jwtSecret.utf8.count < Self.minimumSecretBytes {
            throw ConfigurationError(
                "--jwt-secret is \(jwtSecret.utf8.count) bytes; HS256 needs at least \(Self.minimumSecretBytes) (try: openssl rand -hex 32)")
        }
        if !(0...65535).contains(port) { throw ConfigurationError("--port must be 0–65535") }
        if maxQueue < 1 { throw ConfigurationError("--max-queue must be at least 1") }
        if memoryMaxEvents < 1 { throw ConfigurationError("--memory-max-events must be at least 1") }
        if maxBody < 1 { throw ConfigurationError("--max-body must be at least 1 byte") }
        if maxEventBytes < 1 { throw ConfigurationError("--max-event-bytes must be at least 1 byte") }
        if keepAlive <= .zero { throw ConfigurationError("--keepalive must be positive") }
        if let maxConnections, maxConnections < 1 { throw ConfigurationError("--max-connections must be at least 1") }
        if let maxConnectionsPerUser, maxConnectionsPerUser < 1 {
            throw ConfigurationError("--max-connections-per-user must be at least 1")
        }
        try validateOperations()
        for key in publishKeys where key.utf8.count < 16 {
            throw ConfigurationError("a --publish-key must be at least 16 characters")
        }
    }
}

/// A configuration that cannot work, with what to change.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}

extension TidingsConfiguration {
    /// The operations flags (timeouts, drain, admin listener).
    func validateOperations() throws(ConfigurationError) {
        if requestTimeout <= .zero { throw ConfigurationError("--request-timeout must be positive") }
        if idleTimeout <= .zero { throw ConfigurationError("--idle-timeout must be positive") }
        if shutdownTimeout <= .zero { throw ConfigurationError("--shutdown-timeout must be positive") }
        if drainPeriod >= shutdownTimeout {
            throw ConfigurationError("--drain-period must be shorter than --shutdown-timeout (the streams' ends are spread over it)")
        }
        if let adminPort {
            if !(0...65535).contains(adminPort) { throw ConfigurationError("--admin-port must be 0–65535") }
            if adminPort != 0, adminPort == port, adminHost == host {
                throw ConfigurationError("--admin-port must differ from --port")
            }
        }
    }
}
