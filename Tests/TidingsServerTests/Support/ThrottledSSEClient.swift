import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import TidingsCore
import TidingsServer

/// An SSE client on a bare NIO socket whose receive buffer is a few KB and which reads only
/// while not paused: the server's writes back up after a few KB, deterministically (with
/// AsyncHTTPClient the kernel's autotuned buffers absorb megabytes first).
final class ThrottledSSEClient: Sendable {
    private let channel: any Channel
    private let collector: Collector

    private init(channel: any Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    /// Connects paused: nothing is read until ``resume()``, apart from what the kernel buffers.
    static func connect(port: Int, path: String, token: String) async throws -> ThrottledSSEClient {
        let collector = Collector()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(ChannelOptions.socketOption(.so_rcvbuf), value: 4096)
            .channelOption(ChannelOptions.autoRead, value: false)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
        head.headers.add(name: "Host", value: "127.0.0.1:\(port)")
        head.headers.add(name: "Accept", value: "text/event-stream")
        head.headers.add(name: "Authorization", value: "Bearer \(token)")
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
        return ThrottledSSEClient(channel: channel, collector: collector)
    }

    /// Stops reading: the server's writes back up.
    func pause() async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: false).get()
        try await channel.setOption(ChannelOptions.socketOption(.so_rcvbuf), value: 4096).get()
    }

    /// Reads everything from now on.
    func resume() async throws {
        try await channel.resumeReading()
    }

    func close() {
        channel.close(promise: nil)
    }

    /// The client's port of the connection.
    var localPort: Int? { channel.localAddress?.port }

    /// How the stream ended; `nil` while the connection is open.
    var ending: StreamEnding? { collector.state.withLock { $0.ending } }

    /// The next `count` events; fails if the stream ends or they do not come in time.
    func events(_ count: Int, timeout: Duration = .seconds(20)) async throws -> [SSEEvent] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (events, ending) = collector.state.withLock { state in (state.events, state.ending) }
            if events.count >= count { return Array(events.prefix(count)) }
            if let ending { throw TestFailure("stream ended (\(ending)) after \(events.count) of \(count) events") }
            if ContinuousClock.now > deadline { throw TestFailure("\(events.count) of \(count) events within \(timeout)") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    /// Waits until the connection closes; returns every event it carried and how it ended.
    func eventsUntilEnd(timeout: Duration = .seconds(20)) async throws -> (events: [SSEEvent], ending: StreamEnding) {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (events, ending, closed) = collector.state.withLock { state in (state.events, state.ending, state.closed) }
            if let ending, closed { return (events, ending) }
            if ContinuousClock.now > deadline { throw TestFailure("the stream did not end within \(timeout)") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = HTTPClientResponsePart
        struct State {
            var parser = SSEParser()
            var events: [SSEEvent] = []
            /// Set by the final chunk, or by the connection closing or failing before it.
            var ending: StreamEnding?
            var closed = false
        }
        let state = Mutex(State())

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head:
                break
            case .end:
                state.withLock { $0.ending = $0.ending ?? .clean }
            case .body(let body):
                state.withLock { state in
                    for message in state.parser.feed(body.readableBytesView) {
                        if case .event(let event) = message { state.events.append(event) }
                    }
                }
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            state.withLock { $0.ending = $0.ending ?? .broken(String(describing: error)) }
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            state.withLock { state in
                state.ending = state.ending ?? .broken("the connection closed before the final chunk")
                state.closed = true
            }
            context.fireChannelInactive()
        }
    }
}
