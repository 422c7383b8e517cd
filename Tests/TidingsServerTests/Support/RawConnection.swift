import NIOCore
import NIOPosix
import Synchronization

/// A TCP connection that sends exact bytes and collects what comes back: for requests no HTTP
/// client would send (pipelined behind a stream, malformed).
final class RawConnection: Sendable {
    private let channel: any Channel
    private let received: Received

    private init(channel: any Channel, received: Received) {
        self.channel = channel
        self.received = received
    }

    static func connect(port: Int) async throws -> RawConnection {
        let received = Received()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(received) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawConnection(channel: channel, received: received)
    }

    func send(_ text: String) async throws {
        try await channel.writeAndFlush(ByteBuffer(string: text)).get()
    }

    /// Everything received so far, as text.
    var text: String { received.bytes.withLock { String(decoding: $0, as: UTF8.self) } }

    /// Waits until what was received contains `needle`.
    func waitFor(_ needle: String, timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while !text.contains(needle) {
            if ContinuousClock.now > deadline { throw TestFailure("no \"\(needle)\" within \(timeout) in: \(text.prefix(2000))") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Sends `bytes` as they are.
    func send(bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
    }

    /// Sends `bytes` in the parts `splits` cut them into (offsets, ascending), each part only once
    /// the server has read everything before it (its socket's receive queue is empty), so the
    /// server meets the request in exactly these pieces. Stops when the server closed the
    /// connection (an answer to a refused request may close it before all is sent).
    func send(bytes: [UInt8], splitAt splits: [Int], serverPort: Int) async throws {
        var start = 0
        for end in splits + [bytes.count] where end > start {
            guard isOpen else { return }
            do {
                try await send(bytes: Array(bytes[start..<end]))
            } catch where !isOpen {
                return
            }
            start = end
            guard end < bytes.count else { break }
            let port = localPort
            let deadline = ContinuousClock.now + .seconds(20)
            while let queued = try TCPTable.receiveQueue(localPort: serverPort, remotePort: port), queued > 0 {
                if ContinuousClock.now > deadline { throw TestFailure("the server did not read \(end) bytes within 20 s") }
                try await Task.sleep(for: .milliseconds(1))
            }
        }
    }

    /// The client side's port.
    var localPort: Int { channel.localAddress?.port ?? 0 }

    func close() {
        channel.close(promise: nil)
    }

    /// Upgrades to a WebSocket with `token`, then answers nothing (not even pings).
    func upgradeToSilentWebSocket(token: String) async throws {
        try await send(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer \(token)\r\n\r\n")
        try await waitFor("101 Switching Protocols")
    }

    /// False once either side closed the connection.
    var isOpen: Bool { channel.isActive }

    /// Everything received so far.
    var bytes: [UInt8] { received.bytes.withLock { $0 } }

    /// Waits until the server closed the connection.
    func waitForClose(timeout: Duration = .seconds(10)) async throws {
        let deadline = ContinuousClock.now + timeout
        while channel.isActive {
            if ContinuousClock.now > deadline { throw TestFailure("the connection is still open after \(timeout)") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    private final class Received: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let bytes = Mutex<[UInt8]>([])

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            bytes.withLock { $0.append(contentsOf: buffer.readableBytesView) }
        }
    }
}
