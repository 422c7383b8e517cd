import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
import TidingsBench
import TidingsServer

/// `tidings bench` (the load tool behind `make bench`) run as a user would, against a real
/// gateway, with its JSON report checked against what the gateway must have done.
@Suite("tidings bench")
struct BenchCommandTests {
    private func report(_ arguments: [String]) async throws -> [String: Any] {
        let run = try await CLITests.run(["bench"] + arguments + ["--json", "--quiet"], timeout: 60)
        #expect(run.status == 0, "\(run.error)")
        guard let object = try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any] else {
            throw TestFailure("not a JSON object: \(run.output.prefix(500))")
        }
        return object
    }

    private func number(_ object: [String: Any], _ path: String) -> Double? {
        var value: Any? = object
        for key in path.split(separator: ".") { value = (value as? [String: Any])?[String(key)] }
        return (value as? NSNumber)?.doubleValue
    }

    @Test func fanoutCountsEveryEventForEverySubscriber() async throws {
        try await TestServer.run { server in
            let report = try await report([
                "fanout", "--url", server.baseURL, "--jwt-secret", TestServer.secret,
                "--connections", "20", "--rate", "40", "--warmup", "0.5s", "--duration", "1.5s",
            ])
            #expect(number(report, "connections.opened") == 20)
            #expect(number(report, "connections.failed") == 0)
            let accepted = try #require(number(report, "publishing.acceptedEvents"))
            #expect(accepted >= 30, "about 40/s for 1.5 s")
            #expect(number(report, "delivery.expected") == accepted * 20)
            // Publishes and deliveries both count by the send time the event carries: exactly
            // the same events on both sides, whenever each arrived.
            let delivered = try #require(number(report, "delivery.events"))
            #expect(delivered == accepted * 20, "accepted \(accepted) × 20, delivered \(delivered)")
            #expect(number(report, "delivery.latencyMs.count") == delivered, "every delivery carried its send time")
            #expect(number(report, "delivery.resets") == 0)
        }
    }

    @Test func usersDeliversEachPublishToItsUser() async throws {
        try await TestServer.run { server in
            let report = try await report([
                "users", "--url", server.baseURL, "--jwt-secret", TestServer.secret,
                "--connections", "10", "--publish-connections", "2", "--pipeline", "2",
                "--warmup", "0.5s", "--duration", "1.5s",
            ])
            let accepted = try #require(number(report, "publishing.acceptedEvents"))
            let delivered = try #require(number(report, "delivery.events"))
            #expect(accepted > 0)
            #expect(delivered == accepted, "accepted \(accepted), delivered \(delivered)")
            #expect(number(report, "publishing.connectionErrors") == 0)
            #expect(((report["publishing"] as? [String: Any])?["rejected"] as? [String: Any])?.isEmpty == true)
        }
    }

    @Test(arguments: ["ws", "poll"])
    func fanoutOverWebSocketsAndLongPollsCountsEveryEvent(transport: String) async throws {
        try await TestServer.run { server in
            let report = try await report([
                "fanout", "--transport", transport, "--url", server.baseURL, "--jwt-secret", TestServer.secret,
                "--connections", "20", "--rate", "40", "--warmup", "0.5s", "--duration", "1.5s",
            ])
            #expect((report["settings"] as? [String: Any])?["transport"] as? String == transport)
            #expect(number(report, "connections.opened") == 20)
            #expect(number(report, "connections.failed") == 0)
            #expect(number(report, "connections.disconnects") == 0)
            let accepted = try #require(number(report, "publishing.acceptedEvents"))
            #expect(accepted >= 30, "about 40/s for 1.5 s")
            let delivered = try #require(number(report, "delivery.events"))
            #expect(delivered == accepted * 20, "accepted \(accepted) × 20, delivered \(delivered)")
            #expect(number(report, "delivery.latencyMs.count") == delivered, "every delivery carried its send time")
        }
    }

    @Test func idleWebSocketsAnswerTheServersPings() async throws {
        // A ping every second, and two unanswered ones close the connection: none may end.
        try await TestServer.run({ $0.keepAlive = .seconds(1) }) { server in
            let report = try await report([
                "idle", "--transport", "ws", "--url", server.baseURL, "--jwt-secret", TestServer.secret,
                "--connections", "5", "--settle", "3s", "--duration", "1s",
            ])
            #expect(number(report, "connections.opened") == 5)
            #expect(number(report, "connections.disconnects") == 0)
        }
    }

    @Test(arguments: ["ws", "poll"])
    func replayOverWebSocketsAndLongPolls(transport: String) async throws {
        let replay = try await report(["replay", "--spawn", "--transport", transport, "--missed", "50", "--iterations", "2"])
        #expect(number(replay, "replay.completed") == 2, "every reconnect received all 50 missed events")
    }

    /// A counter's value in a gateway's `GET /metrics` (0 when it is not there yet).
    private func metric(_ server: TestServer, _ name: String) async throws -> Double {
        let reply = try await server.request(.GET, "/metrics")
        let line = reply.body.split(separator: "\n").first { $0.hasPrefix(name + " ") }
        return line.flatMap { Double($0.split(separator: " ")[1]) } ?? 0
    }

    @Test func streamsGoRoundRobinOverEveryURLAndPublishesToTheFirst() async throws {
        // Two memory-mode gateways share nothing: a topic event published to the first reaches
        // exactly the streams opened on the first, which round-robin makes every other one.
        try await TestServer.run { first in
            try await TestServer.run { second in
                let report = try await report([
                    "fanout", "--url", first.baseURL, "--url", second.baseURL, "--jwt-secret", TestServer.secret,
                    "--connections", "6", "--rate", "40", "--warmup", "0.5s", "--duration", "1.5s",
                ])
                #expect(number(report, "connections.opened") == 6)
                #expect(number(report, "connections.failed") == 0)
                let accepted = try #require(number(report, "publishing.acceptedEvents"))
                #expect(accepted >= 30, "about 40/s for 1.5 s")
                #expect(number(report, "delivery.events") == accepted * 3, "3 of the 6 streams are on the publishers' gateway")
                #expect(try await metric(first, "tidings_publish_requests_total") >= accepted)
                #expect(try await metric(second, "tidings_publish_requests_total") == 0, "the publishers use the first URL only")
                #expect((report["target"] as? String)?.contains(second.baseURL) == true)
            }
        }
    }

    @Test(.enabled(if: GatewayDatabase.isConfigured, "needs TIDINGS_TEST_DATABASE_URL (make test sets it)"))
    func usersOverTwoGatewaysOnOneDatabaseReceiveEveryEvent() async throws {
        // PostgreSQL mode: whichever gateway a user's stream is on, the event published to the
        // first reaches it through the database.
        try await GatewayDatabase.with { url in
            try await TestServer.run({ $0.databaseURL = url }) { first in
                try await TestServer.run({ $0.databaseURL = url }) { second in
                    let report = try await report([
                        "users", "--url", first.baseURL, "--url", second.baseURL, "--jwt-secret", TestServer.secret,
                        "--connections", "10", "--publish-connections", "2", "--warmup", "0.5s", "--duration", "1.5s",
                    ])
                    #expect(number(report, "connections.opened") == 10)
                    let accepted = try #require(number(report, "publishing.acceptedEvents"))
                    #expect(accepted > 0)
                    #expect(number(report, "delivery.events") == accepted, "accepted \(accepted)")
                    #expect(try await metric(second, "tidings_publish_requests_total") == 0)
                    #expect(try await metric(second, "tidings_events_delivered_total") > 0, "half the users are on the second gateway")
                }
            }
        }
    }

    @Test func theWindowHookRunsAtTheWindowsStartAndEnd() async throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("tidings-hook-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        try await TestServer.run { server in
            let report = try await report([
                "users", "--url", server.baseURL, "--jwt-secret", TestServer.secret, "--connections", "2",
                "--warmup", "0.2s", "--duration", "1s", "--window-hook", "echo >>\(log)",
            ])
            #expect((report["notes"] as? [String])?.isEmpty == true)
        }
        #expect(try String(contentsOfFile: log, encoding: .utf8) == "start\nend\n")
        let failing = try await report([
            "idle", "--spawn", "--connections", "2", "--settle", "0.1s", "--duration", "0.2s", "--window-hook", "exit 3 #",
        ])
        #expect((failing["notes"] as? [String])?.contains { $0.contains("status 3") } == true)
    }

    @Test func replayAndIdleAgainstASpawnedServer() async throws {
        let replay = try await report(["replay", "--spawn", "--missed", "50", "--iterations", "3", "--background", "100"])
        #expect(number(replay, "replay.completed") == 3, "every reconnect received all 50 missed events")
        #expect(number(replay, "replay.timeMs.count") == 3)
        let idle = try await report(["idle", "--spawn", "--connections", "50", "--settle", "0.5s"])
        #expect(number(idle, "connections.opened") == 50)
        let perConnection = try #require(number(idle, "server.memoryPerConnectionBytes"))
        #expect(perConnection > 0 && perConnection < 1_048_576, "\(perConnection) bytes per stream")
    }

    @Test func aShortSoakOfASpawnedGatewayPassesItsChecks() async throws {
        // A few seconds of everything `make soak` does: churn, resumes, slow clients (a queue of
        // 20 and 1 KB events, so they are disconnected within the run), steady publishing; polls
        // wait 2 s at most, so the server settles in 4 s.
        let run = try await CLITests.run(
            [
                "bench", "soak", "--spawn", "--warmup", "3s", "--duration", "5s", "--connections", "40", "--churn", "200",
                "--slow-clients", "2", "--resumes", "10", "--rate", "100", "--payload", "1000", "--server-arg=--max-queue=20",
                "--poll-timeout", "2s", "--json", "--quiet",
            ], timeout: 120)
        #expect(run.status == 0, "\(run.output.suffix(3000)) \(run.error.suffix(2000))")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any])
        #expect(report["passed"] as? Bool == true, "\(report["problems"] ?? "")")
        #expect(try #require(number(report, "connections.churnOpened")) >= 300, "about 200/s for 8 s")
        #expect(try #require(number(report, "connections.resumes")) >= 10)
        #expect(try #require(number(report, "connections.slowClientsDisconnected")) >= 1, "a slow client was disconnected")
        #expect(try #require(number(report, "connections.slowClientsResumed")) >= 1)
        #expect(number(report, "connections.trackedOpened") == 40)
        #expect(try #require(number(report, "publishing.accepted")) >= 400, "about 100/s for 8 s")
        #expect(try #require(number(report, "delivery.totals.events")) > 1_000)
        #expect(number(report, "delivery.totals.missing") == 0)
        #expect(number(report, "delivery.totals.duplicates") == 0)
        #expect(number(report, "resources.leakedDescriptors") == 0)
        #expect(report["resources"].flatMap { ($0 as? [String: Any])?["rssBack"] as? Bool } == true)
        #expect(try #require(number(report, "resources.end.descriptors")) > 0, "the server's descriptors were counted")
        #expect(try #require(number(report, "resources.end.rssBytes")) > 0)
    }

    @Test func theSpawnedServersSecretsStayOutOfTheLog() async throws {
        let secret = "9f2c4e6a8b0d1f3e5a7c9e1b3d5f7a9c"
        let run = try await CLITests.run(
            ["bench", "idle", "--spawn", "--connections", "5", "--settle", "0.2s", "--duration", "0.2s", "--jwt-secret", secret], timeout: 60)
        #expect(run.status == 0, "\(run.error)")
        #expect(run.error.contains("starting the server"), "the command is logged: \(run.error.prefix(500))")
        #expect(run.error.contains("--jwt-secret <redacted>"))
        #expect(run.error.contains("--publish-key <redacted>"))
        #expect(!run.error.contains(secret))
    }

    /// `tidings bench fanout` whose streams carry a token that expires in 7–8 s (`exp` is whole
    /// seconds): the server ends each stream then, inside the 10 s window even when the tool took
    /// up to 6 s to start on a loaded machine (CI saw more than 3).
    private func fanoutWithExpiringStreams(_ server: TestServer, connections: Int, _ extra: [String] = []) async throws -> [String: Any] {
        let token = try await CLITests.run(["token", "--secret", TestServer.secret, "--sub", "u1", "--topics", "bench", "--ttl", "8s"])
        return try await report(
            [
                "fanout", "--url", server.baseURL, "--subscriber-token", token.output.trimmingCharacters(in: .whitespacesAndNewlines),
                "--publisher-token", TestServer.publishKey, "--connections", "\(connections)", "--rate", "10",
                "--warmup", "0.2s", "--duration", "10s",
            ] + extra)
    }

    @Test func aStreamTheServerEndsIsCountedAndReopened() async throws {
        // The tool reopens an ended stream a second later (as a browser would); the expired
        // token then earns a 401, counted as such.
        try await TestServer.run { server in
            let report = try await fanoutWithExpiringStreams(server, connections: 3)
            #expect(number(report, "connections.opened") == 3)
            #expect(number(report, "connections.disconnects") == 3, "every stream ended once, inside the window")
            #expect(number(report, "connections.errors.http_401") == 3, "every reopened stream was refused")
            #expect(try #require(number(report, "delivery.events")) > 0)
        }
    }

    @Test func withoutReconnectAnEndedStreamStaysClosed() async throws {
        try await TestServer.run { server in
            let report = try await fanoutWithExpiringStreams(server, connections: 2, ["--no-reconnect"])
            #expect(number(report, "connections.disconnects") == 2)
            #expect(number(report, "connections.errors.http_401") == nil, "nothing was reopened")
        }
    }

    /// The port `--spawn` picks is free when chosen; if another process takes it before the
    /// spawned server binds (a test server of this process, say), that one accepts connections
    /// too. Start-up waits for the child's own socket instead of measuring someone else.
    @Test func aPortTakenByAnotherProcessIsNotTheSpawnedServer() async throws {
        let port = try SpawnedServer.freePort()
        let other = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: port).get()
        defer { other.close(promise: nil) }
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("spawned-\(port).log").path
        await #expect(throws: BenchError.self) {
            let server = try await SpawnedServer.start(command: ["sleep", "30"], port: port, logPath: log, readyTimeout: .seconds(1))
            await server.stop()
        }
        // The child's own socket is seen.
        let own = try SpawnedServer.freePort()
        let server = try await SpawnedServer.start(
            command: ["python3", "-c", "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', \(own))); s.listen(); time.sleep(30)"],
            port: own, logPath: log, readyTimeout: .seconds(20))
        await server.stop()
    }

    @Test func streamsThatCannotConnectAreCountedAsConnectErrors() async throws {
        let closedPort = try SpawnedServer.freePort()  // nothing listens there
        let report = try await report([
            "idle", "--url", "http://127.0.0.1:\(closedPort)", "--jwt-secret", TestServer.secret,
            "--connections", "3", "--settle", "0.1s", "--duration", "0.1s",
        ])
        #expect(number(report, "connections.opened") == 0)
        #expect(number(report, "connections.failed") == 3)
        #expect(try #require(number(report, "connections.errors.connect")) >= 3)
        #expect(((report["connections"] as? [String: Any])?["lastError"] as? String)?.contains("refused") == true)
    }
}
