import ArgumentParser
import Foundation
import Logging
import Hummingbird
import ServiceLifecycle
import UnixSignals
import TidingsServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the gateway (memory mode, or PostgreSQL mode with --database-url).")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on (0 picks a free one).") var port = 8080
    @Option(help: "PostgreSQL URL or conninfo; without it the gateway runs in memory mode. Also DATABASE_URL.")
    var databaseUrl: String?
    @Option(help: "HS256 secret for tokens (at least 32 bytes).") var jwtSecret: String?
    @Option(help: "PEM file with an RS256 or ES256 public key.") var jwtPublicKey: String?
    @Option(help: "JWKS file (JSON) with verification keys.") var jwks: String?
    @Option(help: "JWKS URL of an identity provider (repeatable); fetched at start, refreshed in the background.")
    var jwksUrl: [String] = []
    @Option(help: "How often the JWKS URLs are fetched again (the provider's Cache-Control max-age wins).")
    var jwksRefresh = DurationArgument(.seconds(300))
    @Option(help: "Required iss claim.") var jwtIssuer: String?
    @Option(help: "Required aud claim (the token's aud is a string or a list).") var jwtAudience: String?
    @Option(help: "Allowed clock skew for exp, nbf and iat.") var jwtLeeway = DurationArgument(.seconds(30))
    @Flag(inversion: .prefixedNo, help: "Refuse tokens without an exp claim.") var jwtRequireExp = true
    @Option(help: "Claim (dotted path) with the user id; a number is read as its decimal digits.") var jwtSubjectClaim = "sub"
    @Option(help: "Claim (dotted path) with the topics a user may read: a list or a space-separated string.")
    var jwtTopicsClaim = "topics"
    @Option(help: "Claim (dotted path) with what a token may publish: true, a list or a space-separated string.")
    var jwtPublishClaim = "publish"
    @Option(help: "Static publish key (repeatable, at least 16 characters).") var publishKey: [String] = []
    @Option(help: "Send a keep-alive comment after this much silence.") var keepalive = DurationArgument(.seconds(15))
    @Option(help: "Reconnection delay sent to clients (retry:).") var retry = DurationArgument(.seconds(3))
    @Option(help: "How long events are kept for replay.") var retention = DurationArgument(.seconds(86_400))
    @Option(help: "Most events kept in memory mode.") var memoryMaxEvents = 100_000
    @Option(help: "Most queued events per subscriber before it is disconnected.") var maxQueue = 1_000
    @Option(help: "Most open streams (503 beyond).") var maxConnections: Int?
    @Option(help: "Most open streams per user (503 beyond).") var maxConnectionsPerUser: Int?
    @Option(help: "Largest publish body (bytes, or 64KiB, 1MiB).") var maxBody = ByteSize(1 << 20)
    @Option(help: "Largest data of one event (bytes, or 64KiB).") var maxEventBytes = ByteSize(64 << 10)
    @Option(help: "How long a subscribe ticket is valid.") var ticketTtl = DurationArgument(.seconds(30))
    @Option(help: "Allowed CORS origin (repeatable); credentials are allowed for it.") var corsOrigin: [String] = []
    @Flag(help: "Accept a token in the access_token query parameter.") var allowQueryToken = false
    @Option(help: "trace, debug, info, notice, warning, error or critical.") var logLevel = "info"
    @Option(help: "text or json.") var logFormat = "text"
    @Option(help: "PostgreSQL mode: notify or poll.") var wakeup = "notify"
    @Option(help: "PostgreSQL mode: poll interval.") var pollInterval = DurationArgument(.milliseconds(100))
    @Option(help: "PostgreSQL mode: how long delivery waits for an older open transaction.")
    var orderWait = DurationArgument(.seconds(10))
    @Option(help: "JSON file of settings keyed by long flag name (flags and TIDINGS_* win over it).")
    var config: String?
    @Flag(help: "Print the effective configuration (secrets masked, with each value's source) and exit.")
    var printConfig = false
    @Option(help: "File holding the HS256 secret (instead of --jwt-secret).") var jwtSecretFile: String?
    @Option(help: "File of static publish keys, one a line (repeatable; adds to --publish-key).")
    var publishKeyFile: [String] = []
    @Option(help: "A request's head and body must arrive within it.") var requestTimeout = DurationArgument(.seconds(10))
    @Option(help: "An idle keep-alive connection is closed after it.") var idleTimeout = DurationArgument(.seconds(60))
    @Option(help: "On SIGTERM/SIGINT, open streams are ended spread over it.") var drainPeriod = DurationArgument(.seconds(10))
    @Option(help: "The process exits at the latest this long after SIGTERM/SIGINT.") var shutdownTimeout = DurationArgument(.seconds(30))
    @Option(help: "Address of the admin listener (with --admin-port).") var adminHost = "127.0.0.1"
    @Option(help: "Serve /metrics, /healthz, /readyz and the dashboard on this port instead of the public one.")
    var adminPort: Int?

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical") }
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format must be text or json") }
        guard TidingsConfiguration.Wakeup(rawValue: wakeup) != nil else { throw ValidationError("--wakeup must be notify or poll") }
        do {
            try makeConfiguration().validate()
        } catch let error as ConfigurationError {
            throw ValidationError(error.description)
        }
    }

    func makeConfiguration() throws -> TidingsConfiguration {
        var configuration = TidingsConfiguration()
        configuration.host = host
        configuration.port = port
        configuration.databaseURL = databaseUrl
        configuration.jwtSecret = try SecretFile.choose(jwtSecret, file: jwtSecretFile, flag: "--jwt-secret")
        configuration.jwtPublicKeyPEM = try jwtPublicKey.map { try Self.read($0, flag: "--jwt-public-key") }
        configuration.jwksJSON = try jwks.map { try Self.read($0, flag: "--jwks") }
        configuration.jwtIssuer = jwtIssuer
        configuration.jwtAudience = jwtAudience
        configuration.jwksURLs = jwksUrl
        configuration.jwksRefresh = jwksRefresh.duration
        configuration.jwtLeeway = jwtLeeway.duration
        configuration.jwtRequireExp = jwtRequireExp
        configuration.jwtSubjectClaim = jwtSubjectClaim
        configuration.jwtTopicsClaim = jwtTopicsClaim
        configuration.jwtPublishClaim = jwtPublishClaim
        configuration.publishKeys = try publishKey + publishKeyFile.flatMap { try SecretFile.lines($0, flag: "--publish-key-file") }
        configuration.keepAlive = keepalive.duration
        configuration.retry = retry.duration
        configuration.retention = retention.duration
        configuration.memoryMaxEvents = memoryMaxEvents
        configuration.maxQueue = maxQueue
        configuration.maxConnections = maxConnections
        configuration.maxConnectionsPerUser = maxConnectionsPerUser
        configuration.maxBody = maxBody.bytes
        configuration.maxEventBytes = maxEventBytes.bytes
        configuration.ticketTTL = ticketTtl.duration
        configuration.corsOrigins = corsOrigin
        configuration.allowQueryToken = allowQueryToken
        configuration.wakeup = TidingsConfiguration.Wakeup(rawValue: wakeup) ?? .notify
        configuration.pollInterval = pollInterval.duration
        configuration.orderWait = orderWait.duration
        configuration.requestTimeout = requestTimeout.duration
        configuration.idleTimeout = idleTimeout.duration
        configuration.drainPeriod = drainPeriod.duration
        configuration.shutdownTimeout = shutdownTimeout.duration
        configuration.adminHost = adminHost
        configuration.adminPort = adminPort
        return configuration
    }

    static func read(_ path: String, flag: String) throws -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError("\(flag): cannot read \(path)")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = json ? JSONLogHandler(label: label) : TextLogHandler(label: label)
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: "tidings")
        logger.logLevel = level
        let configuration = try makeConfiguration()
        DescriptorLimit.check(maxConnections: configuration.maxConnections, logger: logger)
        let app: TidingsApplication
        do {
            app = try await buildApplication(configuration: configuration, logger: logger)
        } catch let error as ConfigurationError {
            logger.critical("cannot start", metadata: ["error": "\(error.description)"])
            throw ExitCode(ExitCodes.usage)
        } catch let error as DependencyUnavailable {
            logger.critical("dependency unreachable", metadata: ["error": "\(error.description)"])
            throw ExitCode(ExitCodes.unavailable)
        }
        logger.info(
            "tidings listening",
            metadata: [
                "tidings.address": "\(configuration.host):\(configuration.port)",
                "tidings.mode": configuration.databaseURL == nil ? "memory" : "postgresql",
                "tidings.admin_address": configuration.adminPort.map { "\(configuration.adminHost):\($0)" } ?? "none",
            ])
        // SIGTERM/SIGINT drain first (the drain is the group's last service, stopped first); a
        // shutdown that outlasts --shutdown-timeout is escalated to cancellation.
        var group = ServiceGroupConfiguration(services: app.services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        group.maximumGracefulShutdownDuration = configuration.shutdownTimeout
        try await ServiceGroup(configuration: group).run()
    }
}

/// A size on the command line: bytes, or with `KiB`/`MiB`/`KB`/`MB`.
struct ByteSize: ExpressibleByArgument, Sendable {
    var bytes: Int

    init(_ bytes: Int) {
        self.bytes = bytes
    }

    init?(argument: String) {
        let units: [(String, Int)] = [("KiB", 1024), ("MiB", 1 << 20), ("KB", 1000), ("MB", 1_000_000), ("k", 1024), ("m", 1 << 20), ("B", 1)]
        for (suffix, scale) in units where argument.hasSuffix(suffix) {
            guard let value = Int(argument.dropLast(suffix.count)), value >= 0 else { return nil }
            bytes = value * scale
            return
        }
        guard let value = Int(argument), value >= 0 else { return nil }
        bytes = value
    }

    var defaultValueDescription: String {
        if bytes % (1 << 20) == 0 { return "\(bytes >> 20)MiB" }
        if bytes % 1024 == 0 { return "\(bytes >> 10)KiB" }
        return "\(bytes)"
    }
}
