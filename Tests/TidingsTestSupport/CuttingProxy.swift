import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A TCP proxy on loopback in front of the test PostgreSQL that can lose a COMMIT: when armed,
/// the next client write that is exactly `COMMIT` (simple query protocol) or that carries a
/// `COMMIT` statement in a pipeline (extended protocol: its Parse message) is either forwarded
/// and then the client's side cut before the answer comes back (the transaction commits, the
/// client never hears it), or cut at the COMMIT — what came before it in the write is
/// forwarded, the COMMIT is not (the server sees the connection end inside the transaction and
/// aborts it). It can also refuse new connections,
/// for a database that cannot be asked afterwards.
///
/// `@unchecked Sendable`: the mutable state is in `Mutex`es; sockets are plain descriptors each
/// pumped by one thread.
public final class CuttingProxy: @unchecked Sendable {
    public enum Cut: Sendable {
        /// Forward the COMMIT, then cut the client off.
        case afterCommit
        /// Cut the client off instead of forwarding the COMMIT.
        case insteadOfCommit
    }

    public let port: Int
    private let listener: Int32
    private let target: (host: String, port: Int)
    private let armed = Mutex<Cut?>(nil)
    private let refusing = Atomic<Bool>(false)
    private let cuts = Atomic<Int>(0)
    private let stopped = Atomic<Bool>(false)
    private let sockets = Mutex<[Int32]>([])

    /// The `COMMIT` query message: 'Q', length 11, "COMMIT\0".
    private static let commitMessage: [UInt8] = [0x51, 0, 0, 0, 11] + Array("COMMIT".utf8) + [0]
    /// `COMMIT` parsed as the unnamed statement in a pipeline: 'P', length 14, no name,
    /// "COMMIT\0", no parameter types.
    private static let commitParse: [UInt8] = [0x50, 0, 0, 0, 14, 0] + Array("COMMIT".utf8) + [0, 0, 0]

    /// Where the COMMIT starts in a client write, if the write carries one.
    private static func commitOffset(in chunk: [UInt8]) -> Int? {
        if chunk == commitMessage { return 0 }
        let needle = commitParse
        guard chunk.count >= needle.count else { return nil }
        for start in 0...(chunk.count - needle.count) where chunk[start] == needle[0] {
            if chunk[start..<(start + needle.count)].elementsEqual(needle) { return start }
        }
        return nil
    }

    public init(targetHost: String, targetPort: Int) throws {
        target = (targetHost, targetPort)
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(descriptor, 64) == 0 else {
            close(descriptor)
            throw ProxyError(description: "cannot listen on a loopback port: errno \(errno)")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        listener = descriptor
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread { [self] in acceptLoop() }.start()
    }

    /// The test database's URL with the proxy's host and port.
    public static func url(through proxy: CuttingProxy, for url: String) -> String {
        guard let at = url.range(of: "@"), let slash = url[at.upperBound...].firstIndex(of: "/") else { return url }
        return String(url[..<at.upperBound]) + "127.0.0.1:\(proxy.port)" + String(url[slash...])
    }

    /// Host and port of a `postgresql://user@host:port/db` URL.
    public static func hostAndPort(of url: String) -> (String, Int)? {
        guard let at = url.range(of: "@") else { return nil }
        let rest = url[at.upperBound...]
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        let authority = rest[..<slash]
        guard let colon = authority.lastIndex(of: ":"), let port = Int(authority[authority.index(after: colon)...]) else {
            return (String(authority), 5432)
        }
        return (String(authority[..<colon]), port)
    }

    /// The next COMMIT is lost this way.
    public func arm(_ cut: Cut) {
        armed.withLock { $0 = cut }
    }

    /// New connections are accepted and closed at once, and the next cut ends every open
    /// connection (sockets are only shut down, never closed, so no descriptor is reused while
    /// the proxy lives).
    public func refuse(_ value: Bool) {
        refusing.store(value, ordering: .sequentiallyConsistent)
    }

    /// How many COMMITs were lost so far.
    public var cutCount: Int { cuts.load(ordering: .sequentiallyConsistent) }

    /// Stops accepting and ends every open connection; once (later calls do nothing).
    public func stop() {
        guard !stopped.exchange(true, ordering: .sequentiallyConsistent) else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for descriptor in sockets.withLock({ $0 }) { shutdown(descriptor, Int32(SHUT_RDWR)) }
    }

    private func acceptLoop() {
        while !stopped.load(ordering: .sequentiallyConsistent) {
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return }
            if refusing.load(ordering: .sequentiallyConsistent) {
                close(client)
                continue
            }
            guard let server = connectToTarget() else {
                close(client)
                continue
            }
            sockets.withLock { $0 += [client, server] }
            Thread { [self] in pump(from: client, to: server, watching: true, peer: server) }.start()
            Thread { [self] in pump(from: server, to: client, watching: false, peer: client) }.start()
        }
    }

    private func connectToTarget() -> Int32? {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr(target.host == "localhost" ? "127.0.0.1" : target.host)
        address.sin_port = UInt16(target.port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(descriptor)
            return nil
        }
        return descriptor
    }

    /// Copies bytes one way until either side ends. Client-to-server traffic is watched for
    /// the COMMIT while armed (libpq sends a simple-query COMMIT in a write of its own, and a
    /// pipeline in one write up to its sync).
    private func pump(from source: Int32, to destination: Int32, watching: Bool, peer: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            let chunk = Array(buffer[0..<count])
            if watching, let commitAt = Self.commitOffset(in: chunk), let cut = armed.withLock({ $0.take() }) {
                cuts.add(1, ordering: .sequentiallyConsistent)
                switch cut {
                case .afterCommit:
                    if refusing.load(ordering: .sequentiallyConsistent) {
                        // The database is gone for the client: every other connection too.
                        for other in sockets.withLock({ $0 }) where other != destination && other != source {
                            shutdown(other, Int32(SHUT_RDWR))
                        }
                    }
                    // Cut the client off first, so that not even the answer can reach it, then
                    // hand the COMMIT to the server (which commits regardless of the client).
                    shutdown(source, Int32(SHUT_RDWR))
                    writeAll(destination, chunk)
                    return
                case .insteadOfCommit:
                    // What came before the COMMIT (a pipeline's writes) runs; the COMMIT never
                    // reaches the server.
                    if commitAt > 0 { writeAll(destination, Array(chunk[0..<commitAt])) }
                    shutdown(source, Int32(SHUT_RDWR))
                    shutdown(destination, Int32(SHUT_RDWR))
                    return
                }
            }
            guard writeAll(destination, chunk) else { break }
        }
        shutdown(destination, Int32(SHUT_RDWR))
        shutdown(source, Int32(SHUT_RDWR))
    }

    @discardableResult
    private func writeAll(_ descriptor: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            // MSG_NOSIGNAL: a peer that is gone is an error here, not a SIGPIPE for the test process.
            let written = bytes.withUnsafeBytes {
                send(descriptor, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }
}

/// The proxy could not start.
public struct ProxyError: Error, CustomStringConvertible {
    public var description: String
}
