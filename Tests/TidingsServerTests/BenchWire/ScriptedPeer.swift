import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import TidingsBench

/// A TCP listener on a free loopback port that records what each connection sends and writes
/// what a test tells it to: a stand-in gateway for the load generator's clients, so that a test
/// controls every byte (a frame cut in two, a ping, a close) and sees every byte sent back.
final class ScriptedPeer: Sendable {
    private final class Recorder: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let peer: ScriptedPeer
        init(peer: ScriptedPeer) { self.peer = peer }

        func channelActive(context: ChannelHandlerContext) {
            let channel = context.channel
            peer.state.withLock {
                $0.channels.append(channel)
                $0.received.append([])
            }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = Array(unwrapInboundIn(data).readableBytesView)
            let channel = context.channel
            peer.state.withLock { state in
                guard let index = state.channels.firstIndex(where: { $0 === channel }) else { return }
                state.received[index] += bytes
            }
        }
    }

    private struct State {
        var channels: [any Channel] = []
        var received: [[UInt8]] = []
    }

    private let state = Mutex(State())
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let listener = Mutex<(any Channel)?>(nil)

    var port: Int { listener.withLock { $0?.localAddress?.port ?? 0 } }

    static func start() async throws -> ScriptedPeer {
        let peer = ScriptedPeer()
        let channel = try await ServerBootstrap(group: peer.group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Recorder(peer: peer)) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        peer.listener.withLock { $0 = channel }
        return peer
    }

    /// The bytes connection `index` (in accept order) has sent so far.
    func received(_ index: Int) -> [UInt8] {
        state.withLock { $0.received.indices.contains(index) ? $0.received[index] : [] }
    }

    var connections: Int { state.withLock { $0.received.count } }

    /// Waits (up to 10 s) until `condition` holds for what the connections have sent.
    func wait(_ what: String, until condition: @escaping ([[UInt8]]) -> Bool) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(10)
        while !state.withLock({ condition($0.received) }) {
            guard clock.now < deadline else { throw TestFailure("timed out waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Writes `bytes` to connection `index`.
    func send(_ bytes: [UInt8], on index: Int) async throws {
        let channel = state.withLock { $0.channels[index] }
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
    }

    func shutdown() async throws {
        let channels = state.withLock { $0.channels }
        for channel in channels { try? await channel.close() }
        try await listener.withLock { $0 }?.close()
        try await group.shutdownGracefully()
    }

    /// A load-generator stream loop aimed at this peer.
    func streamLoop(reconnect: Bool = true) throws -> StreamLoop {
        let endpoint = Endpoint(host: "127.0.0.1", port: port)
        return try StreamLoop(targets: [StreamTarget(endpoint: endpoint, address: try SocketAddress(ipAddress: "127.0.0.1", port: port))], reconnect: reconnect)
    }
}

extension Array where Element == UInt8 {
    /// The offset just after the first `\r\n\r\n` at or after `from`.
    func headEnd(from: Int = 0) -> Int? {
        guard count >= from + 4 else { return nil }
        for index in from...(count - 4) where self[index] == 13 && self[index + 1] == 10 && self[index + 2] == 13 && self[index + 3] == 10 {
            return index + 4
        }
        return nil
    }

    var text: String { String(decoding: self, as: UTF8.self) }
}
