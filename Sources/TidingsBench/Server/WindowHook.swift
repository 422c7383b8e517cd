#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `--window-hook`: a shell command run at the measurement window's start and end (for samples
/// the tool cannot take itself, such as the database's counters).
enum WindowHook {
    /// Runs `/bin/sh -c "<command> <phase>"` with its output on standard error (standard output
    /// carries the report) and returns its exit status; kills it after `timeout`.
    static func run(_ command: String, phase: String, timeout: Duration = .seconds(10)) async throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, 2, 1)
        try ChildProcess.closeInheritedDescriptors(&actions)
        var pid: pid_t = 0
        let words: [String] = ["/bin/sh", "-c", "\(command) \(phase)"]
        let argv = words.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let result = posix_spawn(&pid, "/bin/sh", &actions, nil, argv, environ)
        guard result == 0 else { throw BenchError("cannot start /bin/sh: \(String(cString: strerror(result)))") }
        let deadline = ContinuousClock.now + timeout
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) != pid {
            if ContinuousClock.now >= deadline {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                throw BenchError("it ran longer than \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        // WIFEXITED / WEXITSTATUS are macros Swift does not import.
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}
