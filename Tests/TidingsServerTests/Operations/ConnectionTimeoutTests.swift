import AsyncHTTPClient
import Foundation
import NIOHTTP1
import Synchronization
import Testing
import TidingsCore
@testable import TidingsServer

/// `--request-timeout` and `--idle-timeout` over real sockets.
@Suite("Connection timeouts")
struct ConnectionTimeoutTests {
    /// 500 connections that send nothing, send their head a byte at a time, or never finish
    /// their body are all closed at the request timeout, while a normal client is served.
    @Test func slowAndSilentConnectionsAreClosedInTimeAndDoNotStopNormalClients() async throws {
        try await TestServer.run({
            $0.requestTimeout = .seconds(1)
            $0.idleTimeout = .seconds(30)
        }) { server in
            let opened = ContinuousClock.now
            var connections: [RawConnection] = []
            for batch in stride(from: 0, to: 500, by: 50) {
                try await withThrowingTaskGroup(of: (Int, RawConnection).self) { group in
                    for index in batch..<(batch + 50) {
                        group.addTask {
                            let connection = try await RawConnection.connect(port: server.port)
                            switch index % 3 {
                            case 0: break  // says nothing
                            case 1: try await connection.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                            default:
                                try await connection.send(
                                    "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(TestServer.publishKey)\r\n"
                                        + "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user\":")
                            }
                            return (index, connection)
                        }
                    }
                    var made: [(Int, RawConnection)] = []
                    for try await pair in group { made.append(pair) }
                    connections += made.sorted { $0.0 < $1.0 }.map(\.1)
                }
            }
            let connectedIn = ContinuousClock.now - opened
            // Slow loris: one more byte of the head every 100 ms while the connection lasts.
            let slowLoris = connections.enumerated().filter { $0.offset % 3 == 1 }.map(\.element)
            let trickle = Task {
                while !Task.isCancelled {
                    for connection in slowLoris where connection.isOpen {
                        try? await connection.send("a")
                    }
                    try? await Task.sleep(for: .milliseconds(100))
                }
            }
            defer { trickle.cancel() }
            // A normal client keeps being answered meanwhile.
            let answered = Atomic<Int>(0)
            let failed = Atomic<Int>(0)
            let normal = Task {
                while !Task.isCancelled {
                    if (try? await server.request(.GET, "/healthz"))?.status == 200 {
                        answered.add(1, ordering: .relaxed)
                    } else if !Task.isCancelled {
                        failed.add(1, ordering: .relaxed)
                    }
                    try? await Task.sleep(for: .milliseconds(20))
                }
            }
            defer { normal.cancel() }
            var closedAt = [Duration?](repeating: nil, count: connections.count)
            // The server's clock starts when it accepts a connection, which a loaded machine (CI,
            // parallel suites) delays: generous bounds, still far below "never".
            let deadline = opened + connectedIn + .seconds(15)
            while closedAt.contains(where: { $0 == nil }), ContinuousClock.now < deadline {
                for (index, connection) in connections.enumerated() where closedAt[index] == nil && !connection.isOpen {
                    closedAt[index] = ContinuousClock.now - opened
                }
                try await Task.sleep(for: .milliseconds(10))
            }
            let open = closedAt.filter { $0 == nil }.count
            #expect(open == 0, "\(open) of 500 connections still open")
            let times = closedAt.compactMap { $0 }
            // Not before the timeout (the last connection was made `connectedIn` after the first)…
            #expect(times.min()! >= .milliseconds(900), "closed too early: \(times.min()!)")
            // …and soon after it.
            #expect(times.max()! <= connectedIn + .seconds(10), "closed late: \(times.max()!)")
            #expect(answered.load(ordering: .relaxed) >= 3, "the normal client was answered \(answered.load(ordering: .relaxed)) times")
            #expect(failed.load(ordering: .relaxed) == 0, "the normal client's requests failed \(failed.load(ordering: .relaxed)) times")
            let after = try await server.request(.GET, "/healthz")
            #expect(after.status == 200)
        }
    }

    @Test func anIdleKeepAliveConnectionIsClosedAfterTheIdleTimeout() async throws {
        try await TestServer.run({
            $0.requestTimeout = .seconds(20)
            $0.idleTimeout = .seconds(1)
        }) { server in
            let connection = try await RawConnection.connect(port: server.port)
            try await connection.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try await connection.waitFor(#"{"status":"ok"}"#)
            // Kept alive for a second request within the idle timeout…
            let sent = ContinuousClock.now
            try await connection.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try await eventually("the second answer") { connection.text.components(separatedBy: #"{"status":"ok"}"#).count == 3 }
            let answered = ContinuousClock.now
            // …then closed once idle for the timeout.
            try await connection.waitForClose(timeout: .seconds(6))
            // The server's idle clock started between `sent` and `answered`.
            #expect(ContinuousClock.now - sent >= .milliseconds(950), "closed \(ContinuousClock.now - sent) after the request")
            #expect(ContinuousClock.now - answered <= .seconds(4), "closed \(ContinuousClock.now - answered) after the answer")
        }
    }

    /// Streams are not timed once open: an SSE stream, a WebSocket and a waiting request outlive
    /// both timeouts (while a silent connection opened with them is cut).
    @Test func openStreamsOutliveTheTimeouts() async throws {
        try await TestServer.run({
            $0.requestTimeout = .milliseconds(300)
            $0.idleTimeout = .milliseconds(300)
            $0.keepAlive = .seconds(60)
        }) { server in
            let token = try await TestServer.token(sub: "alice")
            let stream = try await server.subscribe(token: token)
            #expect(stream.status == 200)
            let webSocket = try await WebSocketTestClient.connect(port: server.port, token: token)
            try await eventually("streams on the bus") { server.gateway.bus.subscriptionCount == 2 }
            // A silent connection is cut at 300 ms; wait for three times that.
            for _ in 0..<3 {
                let silent = try await RawConnection.connect(port: server.port)
                try await silent.waitForClose(timeout: .seconds(5))
            }
            let id = try await server.publish(user: "alice")
            #expect(try await stream.nextEvent(timeout: .seconds(5))?.id == id)
            let message = try await webSocket.next(timeout: .seconds(5))
            #expect(message?.type == "event")
            #expect(server.gateway.bus.subscriptionCount == 2)
        }
    }
}

@Suite("Connection timer state machine")
struct ConnectionTimerStateMachineTests {
    @Test func aRequestIsTimedFromTheConnectionThenIdleBetweenRequests() {
        var machine = ConnectionTimerStateMachine()
        #expect(machine.started() == .arm(.request))
        #expect(machine.bytesArrived() == .keep)  // the first request's clock runs from the start
        #expect(machine.requestReceived() == .arm(.none))
        #expect(machine.responseSent() == .arm(.idle))
        #expect(machine.bytesArrived() == .arm(.request))
        #expect(machine.bytesArrived() == .keep)
        #expect(machine.requestReceived() == .arm(.none))
        #expect(machine.responseSent() == .arm(.idle))
    }

    @Test func pipelinedRequestsAreNotTimedWhileAnEarlierOneIsAnswered() {
        var machine = ConnectionTimerStateMachine()
        _ = machine.started()
        _ = machine.bytesArrived()
        #expect(machine.requestReceived() == .arm(.none))
        #expect(machine.requestReceived() == .arm(.none))  // a second one, read with the first
        #expect(machine.responseSent() == .keep, "the second is still being answered (a long poll)")
        #expect(machine.bytesArrived() == .keep)  // a third starts arriving meanwhile
        #expect(machine.responseSent() == .arm(.request), "then the third's head must arrive in time")
        #expect(machine.requestReceived() == .arm(.none))
        #expect(machine.responseSent() == .arm(.idle))
    }

    @Test func aRefusalBeforeTheBodyEndedKeepsTheRequestClockAndAStreamStopsAll() {
        var machine = ConnectionTimerStateMachine()
        _ = machine.started()
        _ = machine.bytesArrived()
        #expect(machine.responseSent() == .keep)
        #expect(machine.streamStarted() == .arm(.none))
        #expect(machine.bytesArrived() == .keep)
        #expect(machine.requestReceived() == .keep)
        #expect(machine.responseSent() == .keep)
        #expect(machine.isOff)
    }
}
