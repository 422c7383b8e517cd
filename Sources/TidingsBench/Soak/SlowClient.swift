import Glibc
import NIOCore
import Synchronization

/// A flag the soak's load tasks poll to know when to stop.
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)

    var isSet: Bool { value.load(ordering: .relaxed) }
    func set() { value.store(true, ordering: .relaxed) }
}

/// An SSE subscriber that reads slower than events arrive: on its own socket with a small
/// receive buffer and segment size, so the gateway's send buffer and then the stream's queue
/// fill, and the gateway must disconnect it as a slow consumer (`--max-queue`). What it did
/// receive is kept to be checked, and the caller resumes it with `Last-Event-ID`.
struct SlowClient {
    enum Pace: Sendable {
        /// Reads nothing for this long, then everything.
        case stalled(Duration)
        /// Reads this many bytes every 100 ms.
        case trickle(Int)
    }

    /// What became of it.
    struct Outcome: Sendable {
        var entries: [ReceivedEntry] = []
        var lastID: Int64?
        /// The server ended the connection (end of stream or reset) while it was open.
        var closedByServer = false
        var opened = false
        var error: String?
    }

    let target: StreamTarget
    let spec: SubscriberSpec
    let pace: Pace

    /// Runs until the server closes the stream, or `stop` is set (then it drains what is there
    /// for at most 2 s and closes), or `limit` passes.
    func run(stop: StopFlag, limit: Duration = .seconds(120)) async -> Outcome {
        var outcome = Outcome()
        let clock = ContinuousClock()
        let started = clock.now
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            outcome.error = "socket: \(String(cString: strerror(errno)))"
            return outcome
        }
        defer { close(fd) }
        // A small window and segment size (a phone on a poor link): on loopback's 64 KB segments
        // the gateway's send buffer would grow to hold a minute of events before its queue fills.
        var small: CInt = 4096
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<CInt>.size))
        var segment: CInt = 536
        _ = setsockopt(fd, CInt(IPPROTO_TCP), TCP_MAXSEG, &segment, socklen_t(MemoryLayout<CInt>.size))
        let connected = target.address.withSockAddr { connect(fd, $0, socklen_t($1)) }
        if connected != 0, errno != EINPROGRESS {
            outcome.error = "connect: \(String(cString: strerror(errno)))"
            return outcome
        }
        let request = Array(
            RequestWriter.subscribe(
                path: target.endpoint.basePath + spec.path, host: target.endpoint.hostHeader, token: spec.token, lastEventID: nil,
                allocator: ByteBufferAllocator()
            ).readableBytesView)
        var sent = 0
        var reader = HTTPResponseReader()
        var scanner = SSEScanner()
        var status = 0
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var drainUntil: ContinuousClock.Instant?
        while clock.now - started < limit {
            if sent < request.count {
                let count = request.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
                if count > 0 {
                    sent += count
                } else if errno != EAGAIN, errno != EINTR, errno != ENOTCONN {
                    outcome.error = "send: \(String(cString: strerror(errno)))"
                    return outcome
                }
            }
            if stop.isSet, drainUntil == nil { drainUntil = clock.now + .seconds(2) }
            if let drainUntil, clock.now >= drainUntil { return outcome }
            var budget: Int
            switch pace {
            case .stalled(let pause): budget = (clock.now - started < pause && drainUntil == nil) ? 0 : .max
            case .trickle(let bytes): budget = drainUntil == nil ? bytes : .max
            }
            // Until the response head, read freely (the pace applies to the stream).
            if status == 0 { budget = .max }
            while budget > 0 {
                let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, min($0.count, budget)) }
                if count == 0 || (count < 0 && errno == ECONNRESET) {
                    outcome.closedByServer = outcome.opened
                    if !outcome.opened { outcome.error = "closed before a response" }
                    return outcome
                }
                if count < 0 {
                    if errno != EAGAIN, errno != EINTR, errno != ENOTCONN {
                        outcome.error = "read: \(String(cString: strerror(errno)))"
                        return outcome
                    }
                    break
                }
                budget = budget == .max ? .max : budget - count
                do {
                    try chunk.withUnsafeBytes { bytes in
                        _ = try reader.feed(UnsafeRawBufferPointer(rebasing: bytes[0..<count])) { part in
                            switch part {
                            case .head(let code):
                                status = code
                                outcome.opened = code == 200
                            case .body(let body) where status == 200:
                                scanner.scan(body) { event in
                                    guard let id = event.id else { return }
                                    outcome.entries.append(event.isReset ? .reset(id) : .event(id))
                                    outcome.lastID = id
                                }
                            default:
                                break
                            }
                        }
                    }
                } catch {
                    outcome.error = "\(error)"
                    return outcome
                }
                if status != 0, status != 200 {
                    outcome.error = "HTTP \(status)"
                    return outcome
                }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return outcome
    }
}
