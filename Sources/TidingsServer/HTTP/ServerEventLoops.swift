import Foundation
import NIOCore
import NIOPosix

/// The event loops the gateway serves on: one per CPU the process may actually run on.
///
/// NIO's default group counts the machine's CPUs (and cgroup quotas) but not the process's CPU
/// affinity, so a gateway pinned with `taskset` or a cpuset to fewer cores would run more loop
/// threads than it has cores, and they would preempt each other mid-pass (measured: 2 loops on
/// one core accept ~16% fewer publishes/s than 1). `NIO_SINGLETON_GROUP_LOOP_COUNT` still
/// overrides the count, as it does for NIO's own default.
enum ServerEventLoops {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: threadCount())

    static func threadCount(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        processStatus: String? = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)
    ) -> Int {
        if let configured = environment["NIO_SINGLETON_GROUP_LOOP_COUNT"].flatMap(Int.init), configured > 0 {
            return configured
        }
        let allowed = processStatus.flatMap(allowedCPUCount(status:)) ?? System.coreCount
        return max(1, min(System.coreCount, allowed))
    }

    /// The number of CPUs in the `Cpus_allowed_list:` line of `/proc/<pid>/status`
    /// (for example `0-3,6` is 5); nil when the line is missing or malformed.
    static func allowedCPUCount(status: String) -> Int? {
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else {
            return nil
        }
        var count = 0
        for range in line.dropFirst("Cpus_allowed_list:".count).split(separator: ",") {
            let bounds = range.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            switch bounds.count {
            case 1:
                guard bounds[0] != nil else { return nil }
                count += 1
            case 2:
                guard let low = bounds[0], let high = bounds[1], low <= high else { return nil }
                count += high - low + 1
            default:
                return nil
            }
        }
        return count > 0 ? count : nil
    }
}
