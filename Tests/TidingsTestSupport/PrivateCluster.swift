import Foundation
import NIOPosix
import TidingsBench

#if canImport(Glibc)
import Glibc
#endif

/// A PostgreSQL cluster of the test's own, run with `scripts/pg-cluster.sh`: the test stops it
/// (politely or as a crash would) and starts it again.
public struct PrivateCluster: Sendable {
    public let directory: String
    public let port: Int

    static let script: String = {
        let file = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        return file.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/pg-cluster.sh").path
    }()

    public var url: String { "postgresql://postgres@127.0.0.1:\(port)/tidings" }

    /// Creates and starts a cluster on a random port below Linux's ephemeral range (32768–60999),
    /// so no client socket of the other tests can hold the port while the cluster is stopped and
    /// started again: the thousand ports from `TIDINGS_TEST_PG_PORT_BASE` when that is low
    /// enough, else 23000–23999. A port some other server holds is passed over (five tries).
    public static func start() async throws -> PrivateCluster {
        let given = ProcessInfo.processInfo.environment["TIDINGS_TEST_PG_PORT_BASE"].flatMap { Int($0) }
        let base = given.flatMap { $0 >= 1024 && $0 + 1000 <= 32768 ? $0 : nil } ?? 23000
        let directory = "/tmp/tidings-test-cluster-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        var attempt = 1
        while true {
            let cluster = PrivateCluster(directory: directory, port: Int.random(in: base..<base + 1000))
            do {
                try await cluster.startAgain()
                return cluster
            } catch is ScriptFailed where attempt < 5 {
                attempt += 1
            }
        }
    }

    public func startAgain() async throws {
        try await Self.run(["start", directory, String(port)])
    }

    /// Stops the server: `-m fast` (sessions are ended, a checkpoint is written), or with
    /// `immediately` `-m immediate` (every process quits at once, as in a crash; the next start
    /// recovers from the WAL).
    public func stop(immediately: Bool = false) async throws {
        try await Self.run(["stop", directory] + (immediately ? ["immediate"] : []))
    }

    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    public struct ScriptFailed: Error {
        public var status: Int32
    }

    /// Runs the script with `posix_spawn` and `waitpid` on a pool thread (Foundation's
    /// `Process.waitUntilExit` can hang off the main thread on Linux).
    private static func run(_ arguments: [String]) async throws {
        let script = script
        try await NIOThreadPool.singleton.runIfActive {
            let argv = (["/bin/bash", script] + arguments).map { strdup($0) } + [nil]
            defer { argv.forEach { free($0) } }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            // The PostgreSQL it restarts must not keep this process's connections open.
            try ChildProcess.closeInheritedDescriptors(&actions)
            var pid = pid_t()
            let spawned = posix_spawn(&pid, "/bin/bash", &actions, nil, argv, environ)
            guard spawned == 0 else { throw ScriptFailed(status: spawned) }
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            guard status == 0 else { throw ScriptFailed(status: status) }
        }
    }
}
