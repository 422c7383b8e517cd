import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A WebSocket client on a bare NIO socket with a small receive buffer that reads only while not
/// paused (like ``ThrottledSSEClient``): it sends the upgrade by hand and parses the server's
/// (unmasked) frames itself, so a test sees exactly which event frames and which close code came.
final class ThrottledWebSocketClient: Sendable {
    private let channel: any Channel
    private let collector: Collector

    private init(channel: any Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    /// Connects paused: nothing is read until ``resume()``, apart from what the kernel buffers.
    static func connect(port: Int, query: String = "", token: String) async throws -> ThrottledWebSocketClient {
        let collector = Collector()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(ChannelOptions.socketOption(.so_rcvbuf), value: 4096)
            .channelOption(ChannelOptions.autoRead, value: false)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        let request = "GET /ws\(query.isEmpty ? "" : "?" + query) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n"
            + "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            + "Sec-WebSocket-Version: 13\r\nAuthorization: Bearer \(token)\r\n\r\n"
        try await channel.writeAndFlush(ByteBuffer(string: request)).get()
        return ThrottledWebSocketClient(channel: channel, collector: collector)
    }

    func resume() async throws {
        try await channel.resumeReading()
    }

    func close() {
        channel.close(promise: nil)
    }

    /// Waits until the connection closes; returns the ids of the event frames it carried and the
    /// close frame's code (nil without one).
    func untilEnd(timeout: Duration = .seconds(20)) async throws -> (ids: [String], closeCode: UInt16?) {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let result = collector.state.withLock({ $0.closed ? Self.parse($0.bytes) : nil }) { return result }
            if ContinuousClock.now > deadline { throw TestFailure("the WebSocket did not end within \(timeout)") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Frames after the `101` answer's head.
    private static func parse(_ bytes: [UInt8]) -> (ids: [String], closeCode: UInt16?) {
        let separator = Array("\r\n\r\n".utf8)
        guard let head = bytes.indices.first(where: { bytes[$0...].starts(with: separator) }) else { return ([], nil) }
        var index = head + separator.count
        var ids: [String] = []
        var closeCode: UInt16?
        while index + 2 <= bytes.count {
            let opcode = bytes[index] & 0x0F
            var length = Int(bytes[index + 1] & 0x7F)
            index += 2
            if length == 126 {
                guard index + 2 <= bytes.count else { break }
                length = Int(bytes[index]) << 8 | Int(bytes[index + 1])
                index += 2
            } else if length == 127 {
                guard index + 8 <= bytes.count else { break }
                length = bytes[index..<index + 8].reduce(0) { $0 << 8 | Int($1) }
                index += 8
            }
            guard index + length <= bytes.count else { break }  // a frame cut off by the close
            let payload = Array(bytes[index..<index + length])
            index += length
            switch opcode {
            case 0x1:
                if let json = try? JSONSerialization.jsonObject(with: Data(payload)) as? [String: Any], let id = json["id"] as? String {
                    ids.append(id)
                }
            case 0x8 where payload.count >= 2:
                closeCode = UInt16(payload[0]) << 8 | UInt16(payload[1])
            default:
                break
            }
        }
        return (ids, closeCode)
    }

    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        struct State {
            var bytes: [UInt8] = []
            var closed = false
        }
        let state = Mutex(State())

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            state.withLock { $0.bytes.append(contentsOf: buffer.readableBytesView) }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            state.withLock { $0.closed = true }
            context.fireChannelInactive()
        }
    }
}

extension Channel {
    /// Reads everything from now on, with a large receive buffer (a throttled client resuming).
    func resumeReading() async throws {
        try await setOption(ChannelOptions.socketOption(.so_rcvbuf), value: 1 << 20).get()
        try await setOption(ChannelOptions.autoRead, value: true).get()
        read()
    }
}
