import ArgumentParser
import Foundation
import JWTKit
import Logging
import TidingsBench
import TidingsServer

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load-test a gateway: fan-out, point-to-point, idle streams, replay, or a soak.",
        discussion: """
            Scenarios:
              fanout   --connections subscribers on one topic, a publisher at --rate events/s
                       (default 2000 × 20/s); delivered events/s, publish→receive latency.
              users    --connections users with one stream each, --publish-connections publishers
                       flat out (default 2000, 16); publishes/s accepted, delivery latency.
              idle     --connections idle streams (default 10000); server memory per connection.
              replay   reconnect with Last-Event-ID after --missed events (default 999); the time
                       until the last one arrives, over --iterations reconnects.
              soak     --duration (default 600s, after a --warmup of 30s) of --churn short-lived
                       streams a second (default 1000), --connections tracked streams (400) with
                       random resumes, --slow-clients slow subscribers (8) and --rate events/s
                       (200); fails unless the server's RSS and descriptors come back and every
                       stream holds every event once, in order. With --spawn in memory mode the
                       server gets --memory-max-events and --max-queue=100 sized for the run.

            --transport picks how the streams connect: sse (GET /events, the default), ws (GET /ws,
            one JSON text frame per event, server pings answered) or poll (GET /poll?timeout=25s on a
            keep-alive connection, polled again at once after each answer). Delivered events, latency
            and server CPU are counted the same way for all three.

            Point it at a deployment with --url (plain HTTP) and --jwt-secret (tokens are minted per
            user), or --subscriber-token/--publisher-token. --url is repeatable: several gateways
            on one database get the streams round-robin (stream i on the (i mod n)th URL) and the
            publishers use the first. With --spawn it starts `tidings serve`
            itself on a free port (optionally pinned with --server-cpu) and also reports the
            server's CPU seconds and memory from /proc. --server-pid samples a server you started.

            Examples:
              tidings bench fanout --spawn --server-cpu 0 --load-cpu 1
              tidings bench users --url http://127.0.0.1:8080 --jwt-secret "$SECRET" --json
              tidings bench users --url http://127.0.0.1:8081 --url http://127.0.0.1:8082 --jwt-secret "$SECRET" --rate 1000
              tidings bench idle --spawn --connections 10000
              tidings bench fanout --spawn --transport ws --server-cpu 0 --load-cpu 1
              tidings bench idle --spawn --transport ws --connections 10000
              tidings bench replay --spawn --missed 999 --background 99000
              tidings bench soak --spawn --duration 60s
            """)

    @Argument(help: "fanout, users, idle, replay or soak.") var scenario: String

    @Option(
        help: """
            Gateway URL (plain HTTP; default http://127.0.0.1:8080); ignored with --spawn. Repeatable: \
            streams round-robin over the URLs, publishers on the first.
            """)
    var url: [String] = []
    @Option(help: "HS256 secret: mint a token per subscriber and a publisher token.") var jwtSecret: String?
    @Option(help: "Token for every subscriber (instead of --jwt-secret).") var subscriberToken: String?
    @Option(help: "Publisher token or publish key (instead of --jwt-secret).") var publisherToken: String?

    @Flag(help: "Start `tidings serve` (this binary) on a free 127.0.0.1 port for the run.") var spawn = false
    @Option(help: "With --spawn: the tidings binary to start (default: this one).") var serverBinary: String?
    @Option(help: "With --spawn: an extra argument for `tidings serve` (repeatable), e.g. --server-arg=--max-queue=5000.")
    var serverArg: [String] = []
    @Option(help: "Start this server command instead of tidings (no authentication assumed); {port} is replaced by the port.")
    var spawnCommand: String?
    @Option(help: "With --spawn: pin the server to these CPUs (taskset -c), e.g. 0.") var serverCpu: String?
    @Option(help: "Pin the load generator to these CPUs, e.g. 1.") var loadCpu: String?
    @Option(help: "Sample this local server process's CPU and memory (when not spawned).") var serverPid: Int32?

    @Option(help: "Streams to open (default: fanout 2000, users 2000, idle 10000).") var connections: Int?
    @Option(help: "Events per second offered; 0 for flat out (default: fanout 20, users 0).") var rate: Double?
    @Option(help: "Keep-alive publishing connections (default: fanout 4, users 16).") var publishConnections: Int?
    @Option(help: "Requests in flight per publishing connection (HTTP/1.1 pipelining above 1).") var pipeline = 1
    @Option(help: "Events per publish request (sent as an array when more than 1).") var batch = 1
    @Option(help: "Extra bytes of padding in each event's data.") var payload = 0
    @Option(help: "How the streams connect: sse, ws (WebSocket) or poll (long polling).") var transport = "sse"
    @Option(help: "Topic of the fanout, idle and replay scenarios.") var topic = "bench"
    @Option(help: "Length of the measurement window (soak: of the soak; default 10s, soak 600s).") var duration: DurationArgument?
    @Option(help: "Load before the window starts (default 2s, soak 30s).") var warmup: DurationArgument?
    @Option(help: "New connections per second while opening streams.") var ramp = 2_000
    @Option(help: "Idle: wait after the last stream opened before measuring.") var settle = DurationArgument(.seconds(3))
    @Option(help: "Replay: events missed while disconnected.") var missed = 999
    @Option(help: "Replay: reconnects to time.") var iterations = 20
    @Option(help: "Replay: events published to another topic first (fills the store).") var background = 0
    @Option(help: "Soak: short-lived streams opened and closed per second.") var churn = 1_000
    @Option(help: "Soak: slow subscribers running at any time.") var slowClients = 8
    @Option(help: "Soak: tracked streams closed and resumed with Last-Event-ID per second.") var resumes = 5.0
    @Option(help: "Soak: the long polls' timeout; the server settles at least this long before it is sampled.")
    var pollTimeout = DurationArgument(.seconds(25))
    @Option(help: "Event-loop threads of the load generator.") var threads = 1
    @Flag(help: "Do not reopen streams the server ends.") var noReconnect = false
    @Option(help: "A shell command run as `<command> start` and `<command> end` at the measurement window's bounds (e.g. to sample a database).")
    var windowHook: String?
    @Option(help: "Name of the server in the report.") var label: String?
    @Flag(help: "Print the report as JSON.") var json = false
    @Flag(help: "No progress messages on standard error.") var quiet = false

    func validate() throws {
        guard let scenario = Scenario(rawValue: self.scenario) else {
            throw ValidationError("the scenario must be one of: " + Scenario.allCases.map(\.rawValue).joined(separator: ", "))
        }
        guard Transport(rawValue: transport) != nil else {
            throw ValidationError("--transport must be one of: " + Transport.allCases.map(\.rawValue).joined(separator: ", "))
        }
        if !spawn, spawnCommand == nil, let bad = urls.first(where: { Endpoint(url: $0) == nil }) {
            throw ValidationError("--url must be http://host[:port][/path] (plain HTTP), not \(bad)")
        }
        if let connections, connections < 1 { throw ValidationError("--connections must be at least 1") }
        if let rate, rate < 0 { throw ValidationError("--rate must be 0 (flat out) or more") }
        if let publishConnections, publishConnections < 1 { throw ValidationError("--publish-connections must be at least 1") }
        guard (1...1_000).contains(batch) else { throw ValidationError("--batch must be 1–1000") }
        guard (1...256).contains(pipeline) else { throw ValidationError("--pipeline must be 1–256") }
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be 1–64") }
        guard missed >= 1, iterations >= 1 else { throw ValidationError("--missed and --iterations must be at least 1") }
        if let jwtSecret, jwtSecret.utf8.count < TidingsConfiguration.minimumSecretBytes {
            throw ValidationError("--jwt-secret must be at least \(TidingsConfiguration.minimumSecretBytes) bytes")
        }
        if scenario != .idle, !spawn, spawnCommand == nil, jwtSecret == nil, subscriberToken == nil {
            throw ValidationError("give --jwt-secret, --subscriber-token, or --spawn")
        }
        guard churn >= 1, slowClients >= 0, resumes >= 0 else { throw ValidationError("--churn must be at least 1, --slow-clients and --resumes 0 or more") }
        if let loadCpu, Self.cpuList(loadCpu) == nil { throw ValidationError("--load-cpu must be a list like 1 or 0,1") }
    }

    func run() async throws {
        var logger = Logger(label: "tidings.bench") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = quiet ? .warning : .info
        let scenario = Scenario(rawValue: self.scenario)!

        var server: SpawnedServer?
        var streamEndpoints = urls.compactMap(Endpoint.init(url:))
        var endpoint = streamEndpoints.first ?? Endpoint(host: "127.0.0.1", port: 8080)
        var credentials: any BenchCredentials
        var label = self.label ?? "tidings"
        if let spawnCommand {
            let port = try SpawnedServer.freePort()
            let command = serverCpuPrefix() + spawnCommand.split(separator: " ").map { $0.replacingOccurrences(of: "{port}", with: "\(port)") }
            server = try await start(command, port: port, logger: logger)
            endpoint = Endpoint(host: "127.0.0.1", port: port)
            streamEndpoints = [endpoint]
            credentials = UserIDCredentials()
            label = self.label ?? URL(fileURLWithPath: command.first(where: { !$0.hasPrefix("-") && !$0.contains("taskset") && Int($0) == nil }) ?? "server").lastPathComponent
        } else if spawn {
            let port = try SpawnedServer.freePort()
            let secret = jwtSecret ?? Self.randomHex(32)
            let publishKey = Self.randomHex(16)
            let binary = serverBinary ?? Self.currentExecutable()
            let command = serverCpuPrefix() + [
                binary, "serve", "--host", "127.0.0.1", "--port", "\(port)", "--jwt-secret", secret,
                "--publish-key", publishKey, "--log-level", "warning",
            ] + serverArg + (scenario == .soak ? soakServerArguments() : [])
            server = try await start(command, port: port, logger: logger)
            endpoint = Endpoint(host: "127.0.0.1", port: port)
            streamEndpoints = [endpoint]
            credentials = await JWTCredentials.make(secret: secret, publisher: publisherToken ?? publishKey)
        } else if let jwtSecret {
            credentials = await JWTCredentials.make(secret: jwtSecret, publisher: publisherToken)
        } else {
            credentials = StaticCredentials(subscriber: subscriberToken, publisher: publisherToken)
        }
        for target in streamEndpoints where !target.isLoopback {
            logger.warning("the target is not a loopback address: only load what you own", metadata: ["target": "\(target)"])
        }

        var options = BenchOptions(scenario: scenario, endpoint: endpoint)
        options.streamEndpoints = streamEndpoints
        options.label = label
        if let connections { options.subscribers = connections }
        if let rate { options.rate = rate }
        if let publishConnections { options.publishConnections = publishConnections }
        options.batch = batch
        options.pipeline = pipeline
        options.payloadBytes = payload
        options.topic = topic
        options.transport = Transport(rawValue: transport)!
        if let duration { options.duration = duration.duration }
        if let warmup { options.warmup = warmup.duration }
        options.churnPerSecond = churn
        options.slowClients = slowClients
        options.resumesPerSecond = resumes
        options.pollTimeout = pollTimeout.duration
        options.rampPerSecond = ramp
        options.settle = settle.duration
        options.missed = missed
        options.iterations = iterations
        options.background = background
        options.threads = threads
        options.reconnect = !noReconnect
        options.serverPID = server?.pid ?? serverPid
        options.serverCPU = server == nil ? nil : serverCpu
        options.loadCPU = loadCpu
        options.windowHook = windowHook

        if scenario == .soak {
            try await soak(options, credentials: credentials, server: server, logger: logger)
            return
        }
        let runner = BenchRunner(
            options: options, credentials: credentials, pinLoadTo: loadCpu.flatMap(Self.cpuList), logger: logger)
        let report = try await Self.measure(against: server, during: "run") { try await runner.run() }
        print(json ? report.json() : report.humanReadable())
    }

    /// Runs a measurement against `server` (when spawned), then stops it: on an error with the
    /// server's log and exit code 1, after a server that exited early with a warning and its log.
    private static func measure<Report>(
        against server: SpawnedServer?, during what: String, _ body: () async throws -> Report
    ) async throws -> Report {
        let report: Report
        do {
            report = try await body()
        } catch {
            if let server {
                await server.stop()
                FileHandle.standardError.write(Data("server log (\(server.logPath)):\n\(server.logTail())\n".utf8))
            }
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(ExitCodes.failure)
        }
        if let server {
            if !server.isRunning {
                FileHandle.standardError.write(Data("warning: the server exited during the \(what); its log:\n\(server.logTail())\n".utf8))
            }
            await server.stop()
        }
        return report
    }

    private func soak(_ options: BenchOptions, credentials: any BenchCredentials, server: SpawnedServer?, logger: Logger) async throws {
        let report = try await Self.measure(against: server, during: "soak") {
            try await SoakRunner(options: options, credentials: credentials, logger: logger).run()
        }
        print(json ? report.json() : report.humanReadable())
        if !report.passed { throw ExitCode(ExitCodes.failure) }
    }

    /// What a spawned server gets for a soak unless `--server-arg` says otherwise: a small
    /// `--max-queue`, so slow clients are disconnected within seconds, and in memory mode a
    /// `--memory-max-events` the warm-up fills (a warm-up's worth of history, 30 s by default),
    /// so the store's own growth ends before the warmed-up sample.
    private func soakServerArguments() -> [String] {
        let given = Set(serverArg.map { String($0.split(separator: "=", maxSplits: 1)[0]) })
        var arguments: [String] = []
        if !given.contains("--max-queue") { arguments.append("--max-queue=100") }
        if !given.contains("--database-url"), !given.contains("--memory-max-events") {
            let warmup = Double((warmup?.duration ?? .seconds(30)).components.seconds)
            arguments.append("--memory-max-events=\(max(1_000, Int((rate ?? 200) * warmup)))")
        }
        return arguments
    }

    /// The `--url` values, or the default gateway.
    private var urls: [String] { url.isEmpty ? ["http://127.0.0.1:8080"] : url }

    private func start(_ command: [String], port: Int, logger: Logger) async throws -> SpawnedServer {
        let logPath = FileManager.default.temporaryDirectory.appendingPathComponent("tidings-bench-server-\(port).log").path
        logger.info("starting the server", metadata: ["command": "\(Self.redacted(command))", "log": "\(logPath)"])
        do {
            return try await SpawnedServer.start(command: command, port: port, logPath: logPath)
        } catch {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(ExitCodes.unavailable)
        }
    }

    /// Flags whose values are secrets (or may hold one, like a database URL's password).
    static let secretFlags: Set<String> = ["--jwt-secret", "--publish-key", "--publisher-token", "--subscriber-token", "--database-url"]

    /// `command` for a log line, with the values of `secretFlags` (`--flag value` and
    /// `--flag=value`) replaced by `<redacted>`.
    static func redacted(_ command: [String]) -> String {
        var words: [String] = []
        var hideNext = false
        for word in command {
            if hideNext {
                words.append("<redacted>")
                hideNext = false
            } else if let equals = word.firstIndex(of: "="), secretFlags.contains(String(word[..<equals])) {
                words.append(word[..<equals] + "=<redacted>")
            } else {
                words.append(word)
                hideNext = secretFlags.contains(word)
            }
        }
        return words.joined(separator: " ")
    }

    private func serverCpuPrefix() -> [String] {
        guard let serverCpu else { return [] }
        return ["taskset", "-c", serverCpu]
    }

    static func cpuList(_ text: String) -> [Int]? {
        var cpus: [Int] = []
        for part in text.split(separator: ",") {
            let bounds = part.split(separator: "-")
            guard let low = Int(bounds[0]), let high = Int(bounds.last!), low <= high, low >= 0 else { return nil }
            cpus.append(contentsOf: low...high)
        }
        return cpus.isEmpty ? nil : cpus
    }

    static func randomHex(_ bytes: Int) -> String {
        (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    }

    static func currentExecutable() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}

/// Mints HS256 tokens like `tidings token`: one per subscriber (its own user id and the topic).
struct JWTCredentials: BenchCredentials {
    let keys: JWTKeyCollection
    let publisher: String?

    static func make(secret: String, publisher: String?) async -> JWTCredentials {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        return JWTCredentials(keys: keys, publisher: publisher)
    }

    func subscriberToken(user: String, topics: [String]) async throws -> String? {
        let claims = TidingsClaims(
            sub: user, exp: ExpirationClaim(value: Date().addingTimeInterval(24 * 3600)), topics: topics.isEmpty ? nil : topics)
        return try await keys.sign(claims)
    }

    func publisherToken() async throws -> String? {
        if let publisher { return publisher }
        let claims = TidingsClaims(sub: "tidings-bench", exp: ExpirationClaim(value: Date().addingTimeInterval(24 * 3600)), publish: .all(true))
        return try await keys.sign(claims)
    }
}
