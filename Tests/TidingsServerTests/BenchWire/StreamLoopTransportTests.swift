import Foundation
import Testing

@testable import TidingsBench

/// The load generator's WebSocket and long-poll streams against a scripted peer: the requests
/// they send, what they count, the pong they owe a ping and how they resume.
@Suite("bench: WebSocket and long-poll streams")
struct StreamLoopTransportTests {
    static let upgraded = Array("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n".utf8)

    static func events(_ loop: StreamLoop) async -> Int {
        await loop.submit { $0.stats.lifetime.events }
    }

    static func waitForEvents(_ loop: StreamLoop, _ count: Int) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(10)
        while await events(loop) < count {
            guard clock.now < deadline else { throw TestFailure("\(await events(loop)) of \(count) events counted") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    @Test func aWebSocketStreamUpgradesCountsEventsAnswersPingsAndResumesAfterAClose() async throws {
        let peer = try await ScriptedPeer.start()
        let loop = try peer.streamLoop()
        let spec = SubscriberSpec(path: Transport.ws.path(topic: "news"), token: "tok", transport: .ws)
        async let opened = loop.open([(spec, 0)], lastEventID: nil)
        try await peer.wait("the upgrade request") { $0.first?.headEnd() != nil }
        let request = peer.received(0).text
        #expect(request.hasPrefix("GET /ws?topic=news HTTP/1.1\r\n"))
        for header in ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13", "Authorization: Bearer tok"] {
            #expect(request.contains("\r\n\(header)\r\n"), "\(header) in \(request)")
        }
        let key = try #require(request.split(separator: "\r\n").first { $0.hasPrefix("Sec-WebSocket-Key: ") }?.dropFirst(19))
        #expect(key.count == 24 && key.hasSuffix("=="), "16 bytes in base64: \(key)")

        // The head, an event cut in the middle of its JSON, and a ping, in two writes.
        let event = WebSocketScannerTests.text(WebSocketScannerTests.event(id: 42, t: 1))
        let ping = WebSocketScannerTests.frame(0x9, Array("are you there".utf8))
        let bytes = Self.upgraded + event + ping
        try await peer.send(Array(bytes[..<(Self.upgraded.count + 20)]), on: 0)
        #expect(await opened == (1, 0))
        try await peer.send(Array(bytes[(Self.upgraded.count + 20)...]), on: 0)
        try await Self.waitForEvents(loop, 1)

        // The pong: FIN + 0xA, masked, the ping's payload under the mask.
        let requestLength = try #require(peer.received(0).headEnd())
        try await peer.wait("the pong") { $0[0].count >= requestLength + 6 + 13 }
        let pong = Array(peer.received(0)[requestLength...])
        #expect(pong[0] == 0x8A)
        #expect(pong[1] == 0x80 | 13, "masked, 13 bytes")
        let unmasked = pong[6..<19].enumerated().map { $0.element ^ pong[2 + $0.offset % 4] }
        #expect(unmasked.text == "are you there")

        // A close for a slow consumer: answered with a masked close, then a new connection
        // resumes from the last id, in the query.
        try await peer.send(WebSocketScannerTests.frame(0x8, [0x03, 0xF0]), on: 0)
        try await peer.wait("the close answer") { $0[0].count >= requestLength + 19 + 8 }
        let close = Array(peer.received(0)[(requestLength + 19)...])
        #expect(close[0] == 0x88 && close[1] == 0x82)
        #expect([close[6] ^ close[2], close[7] ^ close[3]] == [0x03, 0xF0])
        try await peer.wait("the reconnect") { $0.count == 2 && $0[1].headEnd() != nil }
        #expect(peer.received(1).text.hasPrefix("GET /ws?topic=news&last_event_id=42 HTTP/1.1\r\n"))
        let (disconnects, lastError) = await loop.submit { ($0.stats.lifetime.disconnects, $0.stats.lifetime.lastError) }
        #expect(disconnects == 1)
        #expect(lastError?.contains("1008") == true)
        await loop.shutdown()
        try await peer.shutdown()
    }

    @Test func aRefusedUpgradeIsAFailureWithItsStatus() async throws {
        let peer = try await ScriptedPeer.start()
        let loop = try peer.streamLoop()
        let spec = SubscriberSpec(path: "/ws", token: "bad", transport: .ws)
        async let opened = loop.open([(spec, 0)], lastEventID: nil)
        try await peer.wait("the upgrade request") { $0.first?.headEnd() != nil }
        let body = #"{"status":401}"#
        try await peer.send(Array("HTTP/1.1 401 Unauthorized\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8), on: 0)
        #expect(await opened == (0, 1))
        let failures = await loop.submit { $0.stats.lifetime.statusFailures }
        #expect(failures == [401: 1])
        await loop.shutdown()
        try await peer.shutdown()
    }

    @Test func aPollStreamPollsAgainFromEachAnswersPosition() async throws {
        let peer = try await ScriptedPeer.start()
        let loop = try peer.streamLoop()
        let spec = SubscriberSpec(path: Transport.poll.path(topic: "news"), token: "tok", transport: .poll)
        async let opened = loop.open([(spec, 0)], lastEventID: nil)

        func answer(_ json: String, pieces: Int = 1) async throws {
            let bytes = Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(json.utf8.count)\r\n\r\n\(json)".utf8)
            let size = bytes.count / pieces + 1
            for start in stride(from: 0, to: bytes.count, by: size) {
                try await peer.send(Array(bytes[start..<min(bytes.count, start + size)]), on: 0)
            }
        }
        func requests() -> [String] {
            peer.received(0).text.components(separatedBy: "\r\n\r\n").filter { !$0.isEmpty }.map { $0.components(separatedBy: "\r\n")[0] }
        }

        // No resume point: the first answer gives the position.
        try await peer.wait("the first poll") { $0.first?.headEnd() != nil }
        #expect(requests() == ["GET /poll?topic=news&timeout=25s HTTP/1.1"])
        #expect(peer.received(0).text.contains("\r\nAuthorization: Bearer tok\r\n"))
        try await answer(#"{"events":[],"last_event_id":"40"}"#)
        #expect(await opened == (1, 0))
        try await peer.wait("the second poll") { $0[0].text.components(separatedBy: "\r\n\r\n").count == 3 }
        #expect(requests().last == "GET /poll?topic=news&timeout=25s&last_event_id=40 HTTP/1.1")

        // Two events, the answer in three writes.
        try await answer(
            #"{"events":[{"id":"41","event":"bench","data":{"t":5,"n":1}},{"id":"42","event":"bench","data":{"t":6,"n":2}}],"last_event_id":"42"}"#,
            pieces: 3)
        try await Self.waitForEvents(loop, 2)
        try await peer.wait("the third poll") { $0[0].text.components(separatedBy: "\r\n\r\n").count == 4 }
        #expect(requests().last == "GET /poll?topic=news&timeout=25s&last_event_id=42 HTTP/1.1")
        #expect(peer.connections == 1, "one keep-alive connection")
        await loop.shutdown()
        try await peer.shutdown()
    }
}
