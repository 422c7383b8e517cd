import Foundation
import Testing

/// `tidings serve --config FILE`, `--print-config`, secrets from files and the open-file check,
/// run as the built binary like a user would.
@Suite("tidings serve configuration")
struct ConfigFileTests {
    static let secret = "config-file-test-secret-0123456789abcdef"

    static func file(_ contents: String) throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("tidings-config-\(UUID().uuidString)").path
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func json(_ object: [String: Any]) throws -> String {
        try file(String(decoding: JSONSerialization.data(withJSONObject: object), as: UTF8.self))
    }

    /// `name = value (source)` lines of `--print-config`, by name.
    static func printed(_ output: String) -> [String: (value: String, source: String)] {
        var lines: [String: (String, String)] = [:]
        for line in output.split(separator: "\n") where !line.hasPrefix("#") {
            guard let equals = line.range(of: " = "), let open = line.range(of: " (", options: .backwards) else { continue }
            let name = line[..<equals.lowerBound].trimmingCharacters(in: .whitespaces)
            lines[name] = (String(line[equals.upperBound..<open.lowerBound]), String(line[open.upperBound...].dropLast()))
        }
        return lines
    }

    @Test func flagsBeatTheEnvironmentWhichBeatsTheFileWhichBeatsDefaults() async throws {
        let config = try Self.json([
            "port": 9001, "keepalive": "20s", "log-level": "debug", "max-queue": 50,
            "jwt-secret": Self.secret, "publish-key": ["file-publish-key-0001"],
            "database-url": "postgresql://app:hunter2@db.internal/tidings", "allow-query-token": true,
        ])
        let run = try await CLITests.run(
            ["serve", "--config", config, "--log-level", "error", "--print-config"],
            environment: ["TIDINGS_KEEPALIVE": "5s", "TIDINGS_LOG_LEVEL": "warning"])
        #expect(run.status == 0, "\(run.error)")
        let lines = Self.printed(run.output)
        #expect(lines["port"]?.value == "9001" && lines["port"]?.source == "config file")
        #expect(lines["max-queue"]?.value == "50" && lines["max-queue"]?.source == "config file")
        #expect(lines["keepalive"]?.value == "5s" && lines["keepalive"]?.source == "environment")
        #expect(lines["log-level"]?.value == "error" && lines["log-level"]?.source == "flag")
        #expect(lines["retry"]?.value == "3s" && lines["retry"]?.source == "default")
        #expect(lines["allow-query-token"]?.value == "true" && lines["allow-query-token"]?.source == "config file")
        #expect(lines["config"]?.source == "flag")
        // Secrets masked: the whole value of jwt-secret and publish-key, the password of a URL.
        #expect(lines["jwt-secret"]?.value == "********" && lines["jwt-secret"]?.source == "config file")
        #expect(lines["publish-key"]?.value == "[********]")
        #expect(lines["database-url"]?.value == "postgresql://app:********@db.internal/tidings")
        for secret in [Self.secret, "file-publish-key-0001", "hunter2"] { #expect(!run.output.contains(secret)) }

        // --config itself from the environment; a conninfo password masked too.
        let fromEnvironment = try await CLITests.run(
            ["serve", "--database-url", "host=db user=app password=hunter3 dbname=tidings", "--print-config"],
            environment: ["TIDINGS_CONFIG": config])
        #expect(fromEnvironment.status == 0, "\(fromEnvironment.error)")
        let environmentLines = Self.printed(fromEnvironment.output)
        #expect(environmentLines["config"]?.source == "environment")
        #expect(environmentLines["port"]?.value == "9001" && environmentLines["port"]?.source == "config file")
        #expect(environmentLines["database-url"]?.value == "host=db user=app password=******** dbname=tidings")
        #expect(!fromEnvironment.output.contains("hunter3"))
    }

    @Test func everyOptionIsPrintedWithoutBeingListed() async throws {
        let run = try await CLITests.run(["serve", "--jwt-secret", Self.secret, "--print-config"])
        #expect(run.status == 0, "\(run.error)")
        let lines = Self.printed(run.output)
        let help = try await CLITests.run(["serve", "--help"])
        let flags = Set(help.output.matches(of: /--(?:\[no-\])?([a-z][a-z0-9-]+)/).map { String($0.1) })
            .subtracting(["help", "print-config"])
            .filter { !($0.hasPrefix("no-") && lines[String($0.dropFirst(3))] != nil) }
        #expect(!flags.isEmpty)
        #expect(flags.subtracting(lines.keys).isEmpty, "not printed: \(flags.subtracting(lines.keys))")
        #expect(lines["jwt-secret"]?.source == "flag")
    }

    @Test(arguments: [
        (#"{"prot": 8080}"#, "unknown key \"prot\""),
        (#"{"port": "abc"}"#, "key \"port\": \"abc\" is not a valid value"),
        (#"{"keepalive": "soon"}"#, "key \"keepalive\": \"soon\" is not a valid value"),
        (#"{"allow-query-token": "yes"}"#, "key \"allow-query-token\": must be true or false"),
        (#"{"port": [1, 2]}"#, "key \"port\": a single value, not a list"),
        (#"{"port": true}"#, "key \"port\": true or false is not a valid value"),
        (#"{"allow-query-token": 1}"#, "key \"allow-query-token\": must be true or false"),
        (#"{"jwt": {"secret": "x"}}"#, "unknown key \"jwt\""),
        (#"{"port": {"value": 1}}"#, "key \"port\": an object is not a valid value"),
        (#"{"port": 80"#, "not a JSON object"),
    ])
    func aBadFileFailsAtStartNamingTheKey(contents: String, message: String) async throws {
        let config = try Self.file(contents)
        let run = try await CLITests.run(["serve", "--config", config, "--jwt-secret", Self.secret])
        #expect(run.status == 64)
        #expect(run.error.contains(message), "\(run.error)")
    }

    @Test func aBadSecretValueIsNamedButNotShown() async throws {
        let config = try Self.json(["publish-key": [true]])
        let run = try await CLITests.run(["serve", "--config", config, "--jwt-secret", Self.secret])
        #expect(run.status == 64)
        #expect(run.error.contains("key \"publish-key\""), "\(run.error)")
        let missing = try await CLITests.run(["serve", "--config", "/nonexistent/tidings.json"])
        #expect(missing.status == 64)
        #expect(missing.error.contains("--config: cannot read /nonexistent/tidings.json"), "\(missing.error)")
    }

    @Test func secretsComeFromFiles() async throws {
        let secretFile = try Self.file(Self.secret + "\n")
        let keys = try Self.file("# publishers\nfirst-publish-key-0001\n\nsecond-publish-key-002\n")
        let run = try await CLITests.run([
            "serve", "--jwt-secret-file", secretFile, "--publish-key-file", keys, "--publish-key", "inline-publish-key-03",
            "--print-config",
        ])
        #expect(run.status == 0, "\(run.error)")
        let lines = Self.printed(run.output)
        #expect(lines["jwt-secret-file"]?.value == secretFile)
        #expect(lines["jwt-secret"]?.value == "-")
        #expect(!run.output.contains("publish-key-00"))

        // The file is really read: a short secret in it is refused as a short flag would be.
        let short = try await CLITests.run(["serve", "--jwt-secret-file", try Self.file("short\n")])
        #expect(short.status == 64)
        #expect(short.error.contains("at least 32"), "\(short.error)")
        let missing = try await CLITests.run(["serve", "--jwt-secret-file", "/nonexistent/secret"])
        #expect(missing.status == 64)
        #expect(missing.error.contains("--jwt-secret-file: cannot read /nonexistent/secret"), "\(missing.error)")
        let noKeys = try await CLITests.run(["serve", "--jwt-secret", Self.secret, "--publish-key-file", try Self.file("# none\n")])
        #expect(noKeys.status == 64)
        #expect(noKeys.error.contains("--publish-key-file"), "\(noKeys.error)")
        let both = try await CLITests.run(["serve", "--jwt-secret", Self.secret, "--jwt-secret-file", secretFile])
        #expect(both.status == 64)
        #expect(both.error.contains("not both"), "\(both.error)")
    }

    @Test func aSecretFileFlagOverridesTheFilesInlineSecret() async throws {
        let secretFile = try Self.file(Self.secret)
        let config = try Self.json(["jwt-secret": "a-file-secret-that-is-long-enough-0123456789"])
        let run = try await CLITests.run(["serve", "--config", config, "--jwt-secret-file", secretFile, "--print-config"])
        #expect(run.status == 0, "\(run.error)")
        let lines = Self.printed(run.output)
        #expect(lines["jwt-secret"]?.value == "-")
        #expect(lines["jwt-secret-file"]?.source == "flag")
    }

    @Test func maxConnectionsAboveTheOpenFileLimitIsWarnedAbout() async throws {
        // A hard limit of 200 cannot be raised; 203.0.113.1 (TEST-NET-3) cannot be bound, so the
        // server stops right after its start-up checks.
        let run = try await CLITests.run([
            "-c",
            "ulimit -n 200 && exec \"$0\" serve --host 203.0.113.1 --port 0 --jwt-secret \(Self.secret) --max-connections 1000",
            CLITests.executable.path,
        ], executable: URL(fileURLWithPath: "/bin/sh"))
        #expect(run.error.contains("--max-connections exceeds the open-file limit"), "\(run.error)")
        #expect(run.error.contains("200"))
        let fits = try await CLITests.run([
            "-c",
            "ulimit -n 200 && exec \"$0\" serve --host 203.0.113.1 --port 0 --jwt-secret \(Self.secret) --max-connections 100",
            CLITests.executable.path,
        ], executable: URL(fileURLWithPath: "/bin/sh"))
        #expect(!fits.error.contains("exceeds the open-file limit"), "\(fits.error)")
        #expect(fits.status != 0)
    }
}
