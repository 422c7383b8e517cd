import Foundation
import Testing

/// The operations flags of `tidings serve`, through the binary.
@Suite("Operations flags")
struct OperationsFlagsTests {
    @Test(arguments: [
        (["--drain-period", "40s"], "--drain-period must be shorter than --shutdown-timeout"),
        (["--drain-period", "5s", "--shutdown-timeout", "5s"], "--drain-period must be shorter than --shutdown-timeout"),
        (["--request-timeout", "0"], "--request-timeout must be positive"),
        (["--idle-timeout", "0s"], "--idle-timeout must be positive"),
        (["--port", "8089", "--admin-port", "8089"], "--admin-port must differ from --port"),
        (["--admin-port", "70000"], "--admin-port must be 0–65535"),
    ])
    func badValuesAreRefusedWithAUsageError(flags: [String], message: String) async throws {
        let run = try await CLITests.run(["serve", "--jwt-secret", TestServer.secret] + flags)
        #expect(run.status == 64, "\(run.error)")
        #expect(run.error.contains(message), "\(run.error)")
    }

    @Test func theFlagsAlsoComeFromTheEnvironment() async throws {
        let run = try await CLITests.run(
            ["serve", "--jwt-secret", TestServer.secret], environment: ["TIDINGS_DRAIN_PERIOD": "31s"])
        #expect(run.status == 64)
        #expect(run.error.contains("--drain-period must be shorter than --shutdown-timeout"), "\(run.error)")
    }
}
