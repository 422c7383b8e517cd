#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing
import TidingsBench

/// SIGTERM to the real binary with 2,000 open SSE streams: the ends are spread over
/// `--drain-period`, every publish answered before the signal reaches every stream, and the
/// process exits 0 before `--shutdown-timeout`.
@Suite("Drain of a real process")
struct DrainProcessTests {
    static let streams = 2_000
    static let drainPeriod = Duration.seconds(3)
    static let shutdownTimeout = Duration.seconds(12)

    @Test func sigtermSpreadsTheEndsOfTwoThousandStreamsAndLosesNoAcceptedPublish() async throws {
        let port = try SpawnedServer.freePort()
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("tidings-drain-\(getpid()).log").path
        let server = try await SpawnedServer.start(
            command: [
                CLITests.executable.path, "serve", "--port", "\(port)", "--jwt-secret", TestServer.secret,
                "--publish-key", TestServer.publishKey, "--drain-period", "3s", "--shutdown-timeout", "12s",
                "--retry", "60s", "--log-level", "notice",
            ],
            port: port, logPath: log)
        var exited = false
        defer { if !exited { kill(server.pid, SIGKILL) } }

        // 2,000 streams on bare NIO connections, 100 connects at a time.
        let token = try await TestServer.token(sub: "alice")
        let request = "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \(token)\r\nAccept: text/event-stream\r\n\r\n"
        var recorders: [StreamRecorder] = []
        for _ in stride(from: 0, to: Self.streams, by: 100) {
            let batch = try await withThrowingTaskGroup(of: StreamRecorder.self) { group in
                for _ in 0..<100 { group.addTask { try await StreamRecorder.open(port: port, request: request) } }
                var batch: [StreamRecorder] = []
                for try await recorder in group { batch.append(recorder) }
                return batch
            }
            recorders += batch
        }
        let all = recorders
        try await eventually("2,000 streams answered", timeout: .seconds(60)) {
            all.allSatisfy { $0.text.contains("retry: 60000") }
        }

        // Publishes run on until after the signal; those answered before it must reach every stream.
        let beforeSignal = Mutex<[String]>([])
        let signalled = Atomic<Bool>(false)
        let publisher = Task {
            var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/events")
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(TestServer.publishKey)")
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: #"{"user":"alice","event":"n","data":1}"#))
            while !Task.isCancelled {
                guard let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(5)),
                    let body = try? await response.body.collect(upTo: 1 << 16)
                else { continue }
                let answeredBeforeSignal = !signalled.load(ordering: .sequentiallyConsistent)
                if response.status == .accepted, answeredBeforeSignal,
                    let json = try? JSONSerialization.jsonObject(with: Data(String(buffer: body).utf8)) as? [String: Any],
                    let id = json["id"] as? String
                {
                    beforeSignal.withLock { $0.append(id) }
                }
            }
        }
        defer { publisher.cancel() }
        try await eventually("some publishes answered", timeout: .seconds(30)) { beforeSignal.withLock { $0.count } >= 30 }

        signalled.store(true, ordering: .sequentiallyConsistent)
        let signalAt = ContinuousClock.now
        #expect(kill(server.pid, SIGTERM) == 0)
        // The balancer is told at once (as soon as the signal is handled); new streams are refused.
        try await eventually("/readyz says draining", timeout: .seconds(3)) {
            let readiness = try await HTTPClient.shared.execute(HTTPClientRequest(url: "http://127.0.0.1:\(port)/readyz"), timeout: .seconds(5))
            let body = String(buffer: try await readiness.body.collect(upTo: 1 << 16))
            return readiness.status == .serviceUnavailable && body.contains(#""reason":"draining""#)
        }
        var refused = HTTPClientRequest(url: "http://127.0.0.1:\(port)/events")
        refused.headers.add(name: "Authorization", value: "Bearer \(token)")
        let refusal = try await HTTPClient.shared.execute(refused, timeout: .seconds(5))
        #expect(refusal.status == .serviceUnavailable)
        #expect(refusal.headers.first(name: "Retry-After") != nil)
        try await eventually("every stream ended", timeout: .seconds(20)) { all.allSatisfy { $0.endedAt != nil } }
        let exitStatus = Mutex<Int32?>(nil)
        try await eventually("the process exited", timeout: .seconds(20)) {
            var status: Int32 = 0
            guard waitpid(server.pid, &status, WNOHANG) == server.pid else { return false }
            exitStatus.withLock { $0 = status }
            return true
        }
        let status = exitStatus.withLock { $0 } ?? -1
        exited = true
        let exitAfter = ContinuousClock.now - signalAt
        publisher.cancel()

        #expect(status & 0x7f == 0, "killed by signal \(status & 0x7f)")
        #expect((status >> 8) & 0xff == 0, "exit code \((status >> 8) & 0xff); log: \(server.logTail())")
        #expect(exitAfter < Self.shutdownTimeout, "exited after \(exitAfter)")

        let ends = recorders.map { $0.endedAt! - signalAt }.sorted()
        let early = ends.filter { $0 < .milliseconds(100) }.count
        // Evenly over 3 s, about 67 streams end in any 100 ms; all at once would be 2,000.
        #expect(early <= Self.streams / 10, "\(early) of \(Self.streams) streams ended in the first 100 ms")
        #expect(ends[Self.streams / 2] >= .milliseconds(1_000), "median end \(ends[Self.streams / 2])")
        #expect(ends.last! >= .milliseconds(2_400), "last end \(ends.last!)")
        #expect(ends.last! <= Self.drainPeriod + .seconds(3), "last end \(ends.last!)")

        let accepted = beforeSignal.withLock { $0 }
        #expect(accepted.count >= 30)
        var lost = 0
        var withoutGoodbye = 0
        var retries: Set<Int> = []
        for recorder in recorders {
            let received = recorder.text
            // Split on LF bytes (as Characters, CR LF is one and would hide the chunk's end).
            let lines = received.utf8.split(separator: UInt8(ascii: "\n")).map { String(decoding: $0, as: UTF8.self) }
            let ids = Set(lines.compactMap { $0.hasPrefix("id: ") ? String($0.dropFirst(4)) : nil })
            lost += accepted.filter { !ids.contains($0) }.count
            // The goodbye: a retry: of its own within the period, then the last chunk.
            guard let last = lines.last(where: { $0.hasPrefix("retry: ") }), let retry = Int(last.dropFirst(7)),
                retry <= 3_000, received.hasSuffix("0\r\n\r\n")
            else {
                withoutGoodbye += 1
                continue
            }
            retries.insert(retry)
        }
        #expect(lost == 0, "\(lost) deliveries of events accepted before the signal are missing")
        #expect(withoutGoodbye == 0, "\(withoutGoodbye) streams ended without a retry: and the last chunk")
        #expect(retries.count > 100, "reconnection delays are jittered (\(retries.count) distinct)")
    }
}

/// One SSE stream on a bare NIO connection: everything received, and when the server closed it.
final class StreamRecorder: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    private let state = Mutex<(bytes: [UInt8], endedAt: ContinuousClock.Instant?)>(([], nil))

    static func open(port: Int, request: String) async throws -> StreamRecorder {
        let recorder = StreamRecorder()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(recorder) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        try await channel.writeAndFlush(ByteBuffer(string: request)).get()
        return recorder
    }

    var text: String { state.withLock { String(decoding: $0.bytes, as: UTF8.self) } }
    var endedAt: ContinuousClock.Instant? { state.withLock { $0.endedAt } }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        state.withLock { $0.bytes.append(contentsOf: buffer.readableBytesView) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state.withLock { $0.endedAt = .now }
        context.fireChannelInactive()
    }
}
