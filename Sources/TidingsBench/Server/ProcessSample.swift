#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// CPU time and memory of a local process, read from `/proc/PID/stat` and `/proc/PID/status`.
public struct ProcessSample: Sendable {
    /// User plus system CPU seconds since the process started.
    public var cpuSeconds: Double
    /// Resident set size (VmRSS).
    public var rssBytes: Int
    public var threads: Int
    /// When it was taken (monotonic nanoseconds).
    public var takenAt: UInt64

    /// Reads process `pid`; `nil` when it does not exist or `/proc` is not there (not Linux).
    public static func read(pid: Int32) -> ProcessSample? {
        let takenAt = UInt64(DispatchTime.now().uptimeNanoseconds)
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after "pid (comm) ": state is field 3, utime 14, stime 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var rss = 0
        var threads = 0
        if let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) {
            for line in status.split(separator: "\n") {
                if line.hasPrefix("VmRSS:") {
                    rss = (Int(line.dropFirst(6).filter(\.isNumber)) ?? 0) * 1024
                } else if line.hasPrefix("Threads:") {
                    threads = Int(line.dropFirst(8).filter(\.isNumber)) ?? 0
                }
            }
        }
        return ProcessSample(cpuSeconds: (utime + stime) / ticks, rssBytes: rss, threads: threads, takenAt: takenAt)
    }

    /// How many descriptors process `pid` has open (the entries of `/proc/PID/fd`); `nil` when
    /// it cannot be read.
    public static func descriptors(pid: Int32) -> Int? {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd"))?.count
    }

    /// This process.
    public static func current() -> ProcessSample? {
        read(pid: getpid())
    }
}

/// Pins this process's threads to CPUs (Linux `sched_setaffinity` on every thread in
/// `/proc/self/task`); threads started later inherit it from the thread that starts them.
public enum CPUAffinity {
    public static func pinCurrentProcess(to cpus: [Int]) throws {
        #if os(Linux)
        // sched_setaffinity is a GNU extension the Glibc module does not export: look it up.
        typealias SetAffinity = @convention(c) (pid_t, Int, UnsafeRawPointer) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sched_setaffinity") else {
            throw BenchError("sched_setaffinity is not available")
        }
        let setAffinity = unsafeBitCast(symbol, to: SetAffinity.self)
        var mask = [UInt64](repeating: 0, count: 16)  // 1,024 CPUs, as glibc's cpu_set_t
        for cpu in cpus {
            guard cpu >= 0, cpu < 1024 else { throw BenchError("CPU \(cpu) is out of range") }
            mask[cpu / 64] |= 1 << UInt64(cpu % 64)
        }
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        for task in tasks {
            guard let tid = Int32(task) else { continue }
            let result = mask.withUnsafeBytes { setAffinity(tid, $0.count, $0.baseAddress!) }
            if result != 0 {
                throw BenchError("cannot pin thread \(tid) to CPU \(cpus): \(String(cString: strerror(errno)))")
            }
        }
        #else
        throw BenchError("--load-cpu needs Linux")
        #endif
    }
}

/// An error of the load tool, with a message for people.
public struct BenchError: Error, CustomStringConvertible, Sendable {
    public var description: String

    public init(_ description: String) {
        self.description = description
    }
}
