#if canImport(Glibc)
import Glibc
#endif

/// What every process this code spawns needs.
public enum ChildProcess {
    /// Has a `posix_spawn`ed child close every descriptor from 3 up. SwiftNIO opens its sockets
    /// without close-on-exec, so a child would otherwise hold copies of every open connection
    /// (a server's and a client's): a connection this process closes stays open while the child
    /// lives — a PostgreSQL restarted by a script keeps them for good — and its peer never sees
    /// the end of it. glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later) is not
    /// exported by the Glibc module, so it is looked up.
    public static func closeInheritedDescriptors(_ actions: inout posix_spawn_file_actions_t) throws {
        typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else {
            throw BenchError("posix_spawn_file_actions_addclosefrom_np is not available (glibc 2.34 or later is needed)")
        }
        let addCloseFrom = unsafeBitCast(symbol, to: AddCloseFrom.self)
        let result = addCloseFrom(&actions, 3)
        guard result == 0 else {
            throw BenchError("cannot have the child close inherited descriptors: \(String(cString: strerror(result)))")
        }
    }
}
