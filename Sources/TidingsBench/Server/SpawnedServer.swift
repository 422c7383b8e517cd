#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// A server started by the load tool as a child process (`--spawn`), stopped when the run ends.
public struct SpawnedServer: Sendable {
    public let pid: Int32
    public let port: Int
    /// The command line it was started with.
    public let command: [String]
    /// Where its standard output and error go.
    public let logPath: String

    /// The pid to kill when the tool is interrupted.
    private static let current = Atomic<Int32>(0)

    /// Starts `command` and waits until it accepts TCP connections on 127.0.0.1:`port`.
    public static func start(command: [String], port: Int, logPath: String, readyTimeout: Duration = .seconds(30)) async throws -> SpawnedServer {
        guard let executable = command.first else { throw BenchError("empty server command") }
        let logFD = open(logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard logFD >= 0 else { throw BenchError("cannot create \(logPath): \(String(cString: strerror(errno)))") }
        defer { close(logFD) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, logFD, 1)
        posix_spawn_file_actions_adddup2(&actions, logFD, 2)
        try ChildProcess.closeInheritedDescriptors(&actions)
        var pid: pid_t = 0
        let argv = command.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let result = posix_spawnp(&pid, executable, &actions, nil, argv, environ)
        guard result == 0 else {
            throw BenchError("cannot start \(executable): \(String(cString: strerror(result)))")
        }
        let server = SpawnedServer(pid: pid, port: port, command: command, logPath: logPath)
        current.store(pid, ordering: .relaxed)
        installInterruptHandler()
        let deadline = ContinuousClock.now + readyTimeout
        while ContinuousClock.now < deadline {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                current.store(0, ordering: .relaxed)
                throw BenchError("the server exited during start-up (status \(status)); its log: \(logPath)\n\(server.logTail())")
            }
            // Its own socket: a port taken meanwhile by someone else (it was only free when
            // chosen) accepts too, and the run would measure that one.
            if Self.accepts(port: port), Self.listens(pid: pid, port: port) ?? true { return server }
            try await Task.sleep(for: .milliseconds(50))
        }
        await server.stop()
        throw BenchError("the server did not listen on port \(port) within \(readyTimeout); its log: \(logPath)")
    }

    /// SIGTERM, then SIGKILL after `grace`.
    public func stop(grace: Duration = .seconds(5)) async {
        kill(pid, SIGTERM)
        let deadline = ContinuousClock.now + grace
        var status: Int32 = 0
        while ContinuousClock.now < deadline {
            if waitpid(pid, &status, WNOHANG) == pid {
                Self.current.store(0, ordering: .relaxed)
                return
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        Self.current.store(0, ordering: .relaxed)
    }

    /// True while the process has not exited.
    public var isRunning: Bool {
        kill(pid, 0) == 0
    }

    /// The last lines of its log.
    public func logTail(lines: Int = 20) -> String {
        guard let text = try? String(contentsOfFile: logPath, encoding: .utf8) else { return "" }
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    /// A free TCP port on 127.0.0.1 (bound to port 0, then released).
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw BenchError("bind: \(String(cString: strerror(errno)))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return connected == 0
    }

    /// Whether process `pid` holds a socket listening on `port` of 127.0.0.1 or every address:
    /// the LISTEN entries of `/proc/net/tcp` for the port, and their inodes among the process's
    /// descriptors. `nil` where `/proc` cannot tell (not Linux).
    static func listens(pid: pid_t, port: Int) -> Bool? {
        guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return nil }
        let addresses = [String(format: "0100007F:%04X", port), String(format: "00000000:%04X", port)]
        var inodes: Set<Substring> = []
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            // sl, local address, remote address, state (0A: LISTEN), …, inode (the tenth).
            guard fields.count > 9, addresses.contains(String(fields[1])), fields[3] == "0A" else { continue }
            inodes.insert(fields[9])
        }
        guard !inodes.isEmpty else { return false }
        guard let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return nil }
        return descriptors.contains { descriptor in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(descriptor)"),
                  target.hasPrefix("socket:["), target.hasSuffix("]")
            else { return false }
            return inodes.contains(target.dropFirst(8).dropLast())
        }
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        return address
    }

    /// Ctrl-C or SIGTERM of the tool stops the child too.
    private static func installInterruptHandler() {
        let handler: @convention(c) (Int32) -> Void = { signal in
            let pid = SpawnedServer.current.load(ordering: .relaxed)
            if pid > 0 { kill(pid, SIGKILL) }
            _exit(128 + signal)
        }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
    }
}
