#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A pipe the listener's `poll()` watches besides the database socket, so another thread can
/// wake it (shutdown) without busy-waiting.
final class SelfPipe: Sendable {
    let readDescriptor: Int32
    let writeDescriptor: Int32

    init() {
        var descriptors: [Int32] = [-1, -1]
        let result = pipe(&descriptors)
        precondition(result == 0, "pipe() failed")
        for descriptor in descriptors {
            let flags = fcntl(descriptor, F_GETFL)
            _ = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK)
            _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        }
        readDescriptor = descriptors[0]
        writeDescriptor = descriptors[1]
    }

    deinit {
        close(readDescriptor)
        close(writeDescriptor)
    }

    /// Wakes the waiting thread (never blocks; a full pipe already wakes it).
    func wake() {
        var byte: UInt8 = 1
        _ = write(writeDescriptor, &byte, 1)
    }

    /// Empties the pipe.
    func drain() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(readDescriptor, &buffer, buffer.count) > 0 {}
    }

    /// What woke `wait`.
    struct Readiness: Sendable {
        var socket = false
        var pipe = false
    }

    /// Waits until `socket` (if any) is readable, the pipe is woken, or `timeout` passes.
    func wait(socket: Int32?, timeout: Duration) -> Readiness {
        let (seconds, attoseconds) = timeout.components
        let milliseconds = max(0, min(Int64(Int32.max), seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000))
        var descriptors = [pollfd(fd: readDescriptor, events: Int16(POLLIN), revents: 0)]
        if let socket, socket >= 0 {
            descriptors.append(pollfd(fd: socket, events: Int16(POLLIN), revents: 0))
        }
        let count = poll(&descriptors, nfds_t(descriptors.count), Int32(milliseconds))
        var readiness = Readiness()
        guard count > 0 else { return readiness }
        readiness.pipe = descriptors[0].revents != 0
        if descriptors.count > 1 {
            readiness.socket = descriptors[1].revents != 0
        }
        return readiness
    }
}
