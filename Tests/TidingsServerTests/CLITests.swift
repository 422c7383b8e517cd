import Foundation
import JWTKit
import Testing
import TidingsCore
import TidingsServer

/// The `tidings` executable built next to the test bundle, run as a user would.
@Suite("tidings command line")
struct CLITests {
    static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("tidings")
            .resolvingSymlinksInPath()
    }

    struct Run {
        var status: Int32
        var output: String
        var error: String
    }

    /// The binary, also when Swift Testing runs from inside a .xctest bundle directory.
    static var executable: URL {
        let binary = Self.binary
        if FileManager.default.fileExists(atPath: binary.path) { return binary }
        return binary.deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("tidings")
    }

    /// Runs the binary (or `executable`) to completion (or kills it after `timeout`).
    static func run(
        _ arguments: [String], environment: [String: String] = [:], executable: URL? = nil, timeout: TimeInterval = 30
    ) async throws -> Run {
        let process = Process()
        process.executableURL = executable ?? Self.executable
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("TIDINGS_") }
        env.merge(environment) { _, new in new }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning, Date() < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        return Run(
            status: process.terminationStatus,
            output: String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
            error: String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    @Test func tokenMintsAVerifiableJWTAndReadsFlagsFromTheEnvironment() async throws {
        let run = try await Self.run(
            ["token", "--sub", "alice", "--topics", "news.*,weather", "--ttl", "10m"],
            environment: ["TIDINGS_SECRET": TestServer.secret])
        #expect(run.status == 0, "\(run.error)")
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: TestServer.secret), digestAlgorithm: .sha256)
        let claims = try await keys.verify(run.output.trimmingCharacters(in: .whitespacesAndNewlines), as: TidingsClaims.self)
        #expect(claims.sub.value == "alice")
        #expect(claims.topics == ["news.*", "weather"])
        let lifetime = try #require(claims.exp?.value.timeIntervalSinceNow)
        #expect(lifetime > 500 && lifetime <= 600)
    }

    @Test func shortSecretsAreRefusedWithAUsageError() async throws {
        let token = try await Self.run(["token", "--secret", "short", "--sub", "a"])
        #expect(token.status == 64)
        #expect(token.error.contains("at least 32"))
        let serve = try await Self.run(["serve", "--port", "0"], environment: ["TIDINGS_JWT_SECRET": "short"])
        #expect(serve.status == 64)
        #expect(serve.error.contains("at least 32"))
        let noKeys = try await Self.run(["serve", "--port", "0"])
        #expect(noKeys.status == 64)
    }

    @Test func publishAndTailAgainstARealServer() async throws {
        try await TestServer.run { server in
            let subscriber = try await TestServer.token(sub: "alice")
            var ids: [String] = []
            for n in 1...3 { ids.append(try await server.publish(user: "alice", event: "n", data: "{\"n\":\(n)}")) }
            let published = try await Self.run([
                "publish", "--url", server.baseURL, "--token", TestServer.publishKey, "--user", "alice",
                "--event", "cli.test", "--data", #"{"from":"cli"}"#,
            ])
            #expect(published.status == 0, "\(published.error)")
            let fourth = "\(Int64(ids[2])! + 1)"
            #expect(published.output.contains(#""id":"\#(fourth)""#))
            let tail = try await Self.run(
                ["tail", "--url", server.baseURL, "--last-event-id", ids[0], "--count", "3"],
                environment: ["TIDINGS_TOKEN": subscriber])
            #expect(tail.status == 0, "\(tail.error)")
            #expect(tail.output == "\(ids[1])\tn\t{\"n\":2}\n\(ids[2])\tn\t{\"n\":3}\n\(fourth)\tcli.test\t{\"from\":\"cli\"}\n")
            let refused = try await Self.run(["tail", "--url", server.baseURL, "--token", "bad"])
            #expect(refused.status == 1)
            #expect(refused.error.contains("401"))
        }
    }

    @Test(arguments: ["ws", "poll"])
    func tailOverWebSocketsAndLongPollsPrintsWhatSSEPrints(transport: String) async throws {
        try await TestServer.run { server in
            let subscriber = try await TestServer.token(sub: "alice")
            var ids: [String] = []
            for n in 1...3 { ids.append(try await server.publish(user: "alice", event: "n", data: "{\"n\":\(n),\"s\":\"é \\\"q\\\"\"}")) }
            let expected = (1...2).map { "\(ids[$0])\tn\t{\"n\":\($0 + 1),\"s\":\"é \\\"q\\\"\"}\n" }.joined()
            let sse = try await Self.run(
                ["tail", "--url", server.baseURL, "--last-event-id", ids[0], "--count", "2"], environment: ["TIDINGS_TOKEN": subscriber])
            #expect(sse.output == expected, "\(sse.error)")
            let tail = try await Self.run(
                ["tail", "--url", server.baseURL, "--transport", transport, "--last-event-id", ids[0], "--count", "2"],
                environment: ["TIDINGS_TOKEN": subscriber])
            #expect(tail.status == 0, "\(tail.error)")
            #expect(tail.output == expected)
            let refused = try await Self.run(["tail", "--url", server.baseURL, "--token", "bad", "--transport", transport])
            #expect(refused.status == 1)
            #expect(refused.error.contains("error: 401"), "\(refused.error)")
        }
    }
}
