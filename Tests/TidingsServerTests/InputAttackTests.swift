import Foundation
import Testing
import TidingsCore
@testable import TidingsServer

/// Hostile input over real sockets: none of it may crash or hang the gateway, leave a connection
/// open, or store anything; each gets its documented status and problem document.
@Suite("Input attacks over real sockets", .timeLimit(.minutes(5)))
struct InputAttackTests {
    enum Mode: String, CustomStringConvertible, Sendable {
        case memory, postgres
        var description: String { rawValue }

        /// PostgreSQL only where a test database is configured (`make test` does).
        static let all: [Mode] = GatewayDatabase.isConfigured ? [.memory, .postgres] : [.memory]
    }

    /// Runs `body` against a fresh gateway of `mode`, with `configure` applied.
    static func withServer(
        _ mode: Mode, _ configure: @escaping @Sendable (inout TidingsConfiguration) -> Void = { _ in },
        _ body: @escaping @Sendable (TestServer) async throws -> Void
    ) async throws {
        // A request timeout a loaded machine cannot reach by accident (the timeout test sets its own).
        let configure: @Sendable (inout TidingsConfiguration) -> Void = { $0.requestTimeout = .seconds(60); configure(&$0) }
        switch mode {
        case .memory:
            try await TestServer.run(configure, body)
        case .postgres:
            try await GatewayDatabase.with { url in
                try await TestServer.run({ $0.databaseURL = url; configure(&$0) }) { server in
                    try await eventually("ready") {
                        try await Self.exchange(Array("GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8), server: server)
                            .responses.first?.status == 200
                    }
                    try await body(server)
                }
            }
        }
    }

    // MARK: - Requests and answers

    /// `POST /events` with a publish key and `body` framed by `Content-Length`.
    static func post(_ body: [UInt8], headers: String = "") -> [UInt8] {
        Array("POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(TestServer.publishKey)\r\nContent-Type: application/json\r\n\(headers)Content-Length: \(body.count)\r\n\r\n".utf8) + body
    }

    static func post(_ body: String, headers: String = "") -> [UInt8] {
        post(Array(body.utf8), headers: headers)
    }

    struct Exchange {
        var responses: [HTTPResponses.Response]
        var closed: Bool

        var statuses: [Int] { responses.map(\.status) }

        /// The problem type's last segment of the `index`th answer (`malformed-json`).
        func problemType(_ index: Int = 0) -> String? {
            guard index < responses.count,
                let json = try? JSONSerialization.jsonObject(with: Data(responses[index].body)) as? [String: Any]
            else { return nil }
            return (json["type"] as? String)?.split(separator: "/").last.map(String.init)
        }

        func pointers(_ index: Int = 0) -> [String] {
            guard index < responses.count,
                let json = try? JSONSerialization.jsonObject(with: Data(responses[index].body)) as? [String: Any]
            else { return [] }
            return (json["errors"] as? [[String: Any]] ?? []).compactMap { $0["pointer"] as? String }
        }
    }

    /// Sends `bytes` on a new connection and waits for `answers` final answers or the close (and
    /// with `untilClosed`, then for the close); closes the connection.
    static func exchange(
        _ bytes: [UInt8], server: TestServer, answers: Int = 1, untilClosed: Bool = false, timeout: Duration = .seconds(10)
    ) async throws -> Exchange {
        let connection = try await RawConnection.connect(port: server.port)
        defer { connection.close() }
        try await connection.send(bytes: bytes)
        let deadline = ContinuousClock.now + timeout
        while HTTPResponses(connection.bytes).final.count < answers || untilClosed, connection.isOpen, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        return Exchange(responses: HTTPResponses(connection.bytes).final, closed: !connection.isOpen)
    }

    /// Runs `attack`, then requires that it stored nothing, left no connection open on the
    /// server and that the server still answers.
    static func expectHarmless(_ server: TestServer, _ attack: () async throws -> Void) async throws {
        let before = try await server.gateway.store.lastIssuedID()
        try await attack()
        #expect(try await server.gateway.store.lastIssuedID() == before, "the attack stored something")
        try await eventually("no connection left open on the server") { try TCPTable.openSockets(localPort: server.port) == 0 }
        let health = try await exchange(Array("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8), server: server)
        #expect(health.statuses == [200], "the server no longer answers")
    }

    /// Publishes `body` and requires a `202`; returns the stored event's data as replayed.
    static func expectStoredVerbatim(_ data: String, server: TestServer) async throws {
        let answer = try await exchange(post(#"{"user":"verbatim","event":"e","data":\#(data)}"#), server: server)
        #expect(answer.statuses == [202], "\(answer.responses)")
        let page = try await server.gateway.store.replay(targets: [.user("verbatim")], after: 0, through: .max, limit: 10)
        #expect(page.events.last?.data == data)
    }

    // MARK: - JSON

    @Test(arguments: Mode.all)
    func deeplyNestedJSONIsMalformed(mode: Mode) async throws {
        try await Self.withServer(mode) { server in
            try await Self.expectHarmless(server) {
                let depth = 10_000
                let bodies = [
                    String(repeating: "[", count: depth) + String(repeating: "]", count: depth),
                    #"{"user":"u","event":"e","data":"# + String(repeating: "[", count: depth) + String(repeating: "]", count: depth) + "}",
                    #"{"user":"u","event":"e","data":"# + String(repeating: #"{"a":"#, count: depth) + "1" + String(repeating: "}", count: depth) + "}",
                    // Never closed.
                    #"{"user":"u","event":"e","data":"# + String(repeating: "[", count: depth),
                ]
                for body in bodies {
                    let answer = try await Self.exchange(Self.post(body), server: server)
                    #expect(answer.statuses == [400])
                    #expect(answer.problemType() == "malformed-json")
                    #expect(answer.responses.first?.header("content-type") == "application/problem+json")
                }
            }
        }
    }

    @Test(arguments: Mode.all)
    func hugeNumbersAreKeptAsWritten(mode: Mode) async throws {
        try await Self.withServer(mode) { server in
            // Valid JSON numbers: `data` is any JSON value, kept as written (never converted).
            for number in ["1e999999", "-1E-999999", String(repeating: "9", count: 10_000), "0." + String(repeating: "1", count: 10_000)] {
                try await Self.expectStoredVerbatim(number, server: server)
            }
            try await Self.expectHarmless(server) {
                // Not numbers: malformed.
                for bad in ["1e", "01", "1.", "-", "1e+", "+1", ".5", "NaN", "Infinity", "0x10"] {
                    let answer = try await Self.exchange(Self.post(#"{"user":"u","event":"e","data":\#(bad)}"#), server: server)
                    #expect(answer.statuses == [400], "\(bad)")
                }
                // A number where a string belongs.
                let answer = try await Self.exchange(Self.post(#"{"user":1e999999,"event":"e","data":1}"#), server: server)
                #expect(answer.statuses == [422])
                #expect(answer.pointers() == ["/user"])
            }
        }
    }

    @Test(arguments: Mode.all)
    func invalidUTF8IsMalformed(mode: Mode) async throws {
        try await Self.withServer(mode) { server in
            try await Self.expectHarmless(server) {
                let prefix = Array(#"{"user":"u","event":"e","data":""#.utf8)
                let suffix = Array(#""}"#.utf8)
                let sequences: [[UInt8]] = [
                    [0xFF], [0xC0, 0xAF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xE2, 0x82], [0xF4, 0x90, 0x80, 0x80], [0x80],
                ]
                for sequence in sequences {
                    let answer = try await Self.exchange(Self.post(prefix + sequence + suffix), server: server)
                    #expect(answer.statuses == [400], "\(sequence)")
                    #expect(answer.problemType() == "malformed-json")
                }
                // Lone surrogates written as escapes.
                for escape in [#"\ud800"#, #"\udc00"#, #"\ud800\u0041"#] {
                    let answer = try await Self.exchange(Self.post(#"{"user":"u","event":"e","data":"\#(escape)"}"#), server: server)
                    #expect(answer.statuses == [400], "\(escape)")
                }
            }
        }
    }

    @Test(arguments: Mode.all)
    func duplicateKeys(mode: Mode) async throws {
        try await Self.withServer(mode) { server in
            try await Self.expectHarmless(server) {
                let one = try await Self.exchange(Self.post(#"{"user":"a","user":"b","event":"e","data":1}"#), server: server)
                #expect(one.statuses == [422])
                #expect(one.pointers() == ["/user"])
                let batch = try await Self.exchange(
                    Self.post(#"[{"user":"a","event":"e","data":1},{"topic":"t","event":"e","event":"f","data":1,"data":2}]"#), server: server)
                #expect(batch.statuses == [422])
                #expect(batch.pointers() == ["/1/event", "/1/data"])
            }
            // Inside `data` (any JSON value) keys are the publisher's: kept as written.
            try await Self.expectStoredVerbatim(#"{"a":1,"a":2}"#, server: server)
        }
    }

    // MARK: - Limits

    @Test(arguments: Mode.all)
    func bodiesJustAndFarOverTheLimits(mode: Mode) async throws {
        let maxBody = 4_096
        let maxEventBytes = 1_024
        // Megabytes to drain: a request timeout a loaded machine cannot miss.
        try await Self.withServer(mode, { $0.maxBody = maxBody; $0.maxEventBytes = maxEventBytes; $0.requestTimeout = .seconds(60) }) { server in
            /// One event with `data` a string of `dataBytes` compact bytes.
            func event(data dataBytes: Int) -> String {
                #"{"user":"u","event":"e","data":""# + String(repeating: "x", count: dataBytes - 2) + #""}"#
            }
            /// One small event padded with whitespace (valid JSON) to `bytes`.
            func padded(bytes: Int) -> [UInt8] {
                let event = Array(#"{"user":"u","event":"e","data":1}"#.utf8)
                return event + Array(repeating: UInt8(ascii: " "), count: bytes - event.count)
            }
            // At the limits: stored.
            #expect(try await Self.exchange(Self.post(event(data: maxEventBytes)), server: server).statuses == [202])
            #expect(try await Self.exchange(Self.post(padded(bytes: maxBody)), server: server).statuses == [202])
            try await Self.expectHarmless(server) {
                let eventOver = try await Self.exchange(Self.post(event(data: maxEventBytes + 1)), server: server)
                #expect(eventOver.statuses == [413])
                #expect(eventOver.problemType() == "event-too-large")
                #expect(eventOver.pointers() == ["/data"])
                let bodyOver = try await Self.exchange(Self.post(padded(bytes: maxBody + 1)), server: server)
                #expect(bodyOver.statuses == [413])
                #expect(bodyOver.problemType() == "body-too-large")

                // Far over, announced by Content-Length or not (chunked), sent in full: refused,
                // and the connection still frames the request behind it right.
                let far = padded(bytes: 2 << 20)
                let next = Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
                let announced = try await Self.exchange(Self.post(far) + next, server: server, answers: 2)
                #expect(announced.statuses == [413, 200])
                #expect(announced.problemType() == "body-too-large")
                var chunked = Array("POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(TestServer.publishKey)\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
                var rest = far[...]
                while !rest.isEmpty {
                    let piece = rest.prefix(100_000)
                    chunked += Array((String(piece.count, radix: 16) + "\r\n").utf8) + piece + Array("\r\n".utf8)
                    rest = rest.dropFirst(piece.count)
                }
                chunked += Array("0\r\n\r\n".utf8)
                let unannounced = try await Self.exchange(chunked + next, server: server, answers: 2)
                #expect(unannounced.statuses == [413, 200])
                #expect(unannounced.problemType() == "body-too-large")
            }
        }
    }

    @Test(arguments: Mode.all)
    func tenThousandTargets(mode: Mode) async throws {
        try await Self.withServer(mode) { server in
            try await Self.expectHarmless(server) {
                let users = (0..<10_000).map { "\"u\($0)\"" }.joined(separator: ",")
                let answer = try await Self.exchange(Self.post(#"{"users":[\#(users)],"event":"e","data":1}"#), server: server)
                #expect(answer.statuses == [422])
                #expect(answer.pointers() == [""])
            }
            // Repeats of one target count once.
            let same = Array(repeating: #""news""#, count: 10_000).joined(separator: ",")
            let answer = try await Self.exchange(Self.post(#"{"topics":[\#(same)],"event":"e","data":1}"#), server: server)
            #expect(answer.statuses == [202])
            let page = try await server.gateway.store.replay(targets: [.topic("news")], after: 0, through: .max, limit: 10)
            #expect(page.events.map(\.targets) == [[.topic("news")]])
        }
    }

    // MARK: - Control characters and look-alikes

    /// CR, LF, NUL, and characters that look like allowed ones but are not ASCII.
    static let hostile: [(name: String, json: String, percent: String)] = [
        ("CR", #"\r"#, "%0D"), ("LF", #"\n"#, "%0A"), ("CRLF", #"\r\n"#, "%0D%0A"), ("NUL", #"\u0000"#, "%00"),
        ("line separator", #"\u2028"#, "%E2%80%A8"), ("zero-width space", #"\u200b"#, "%E2%80%8B"),
        ("right-to-left override", #"\u202e"#, "%E2%80%AE"), ("Cyrillic a", #"\u0430"#, "%D0%B0"),
        ("fullwidth colon", #"\uff1a"#, "%EF%BC%9A"), ("fullwidth one", #"\uff11"#, "%EF%BC%91"), ("space", " ", "%20"),
    ]

    @Test(arguments: Mode.all)
    func controlCharactersAndLookAlikesInPublishedIdentifiersAreRefused(mode: Mode) async throws {
        try await Self.withServer(mode) { server in
            try await Self.expectHarmless(server) {
                for (name, json, _) in Self.hostile {
                    let bodies: [(String, [String])] = [
                        (#"{"user":"u","event":"order\#(json)created","data":1}"#, ["/event"]),
                        (#"{"user":"u\#(json)1","event":"e","data":1}"#, ["/user"]),
                        (#"{"topic":"news\#(json)","event":"e","data":1}"#, ["/topic"]),
                        (#"{"users":["ok","\#(json)"],"topics":["a\#(json)b"],"event":"e","data":1}"#, ["/users/1", "/topics/0"]),
                        (#"[{"user":"u","event":"e","data":1},{"user":"u","event":"\#(json)","data":1}]"#, ["/1/event"]),
                    ]
                    for (body, pointers) in bodies {
                        let answer = try await Self.exchange(Self.post(body), server: server)
                        #expect(answer.statuses == [422], "\(name): \(body)")
                        #expect(answer.pointers() == pointers, "\(name): \(body)")
                    }
                }
            }
            // In `data` they are content: stored as written, escaped, so no line of the SSE
            // framing can be broken (the framer's own tests cover the wire).
            try await Self.expectStoredVerbatim(#""a\r\nid: 999\n\nevent: x\u0000\u2028""#, server: server)
        }
    }

    @Test func controlCharactersAndLookAlikesInResumePointsTopicsAndPresenceNamesAreRefused() async throws {
        try await Self.withServer(.memory) { server in
            let token = try await TestServer.token(sub: "reader", topics: ["*"])
            try await Self.expectHarmless(server) {
                func get(_ target: String, headers: String = "", credential: String? = nil, untilClosed: Bool = false) async throws -> Exchange {
                    try await Self.exchange(
                        Array("GET \(target) HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(credential ?? token)\r\n\(headers)Connection: close\r\n\r\n".utf8),
                        server: server, untilClosed: untilClosed, timeout: .seconds(20))
                }
                for (name, _, percent) in Self.hostile {
                    let topic = try await get("/events?topic=news\(percent)eu")
                    #expect(topic.statuses == [400], "topic with \(name)")
                    #expect(topic.problemType() == "invalid-topic", "topic with \(name)")
                    let resume = try await get("/events?last_event_id=1\(percent)2")
                    #expect(resume.statuses == [400], "last_event_id with \(name)")
                    #expect(resume.problemType() == "invalid-last-event-id", "last_event_id with \(name)")
                    let poll = try await get("/poll?last_event_id=\(percent)1")
                    #expect(poll.statuses == [400], "poll last_event_id with \(name)")
                    for kind in ["users", "topics"] {
                        let presence = try await get("/presence/\(kind)/a\(percent)b", credential: TestServer.publishKey)
                        #expect(presence.statuses == [400], "presence \(kind) name with \(name)")
                        #expect(presence.problemType() == "invalid-target", "presence \(kind) name with \(name)")
                    }
                }
                // Last-Event-ID look-alikes (raw UTF-8 in the header) and numbers in other forms.
                for value in ["１２", "١٢", "1\u{200B}", "0x10", "-1", "1e3", "+1", "1.0", "99999999999999999999999"] {
                    let answer = try await get("/events", headers: "Last-Event-ID: \(value)\r\n")
                    #expect(answer.statuses == [400], "Last-Event-ID \(value)")
                    #expect(answer.problemType() == "invalid-last-event-id", "Last-Event-ID \(value)")
                }
                // Raw CR, LF or NUL inside a header value is not HTTP: refused, connection closed.
                for value in ["1\r2", "1\u{0}2", "1\n 2"] {
                    let answer = try await get("/events", headers: "Last-Event-ID: \(value)\r\n", untilClosed: true)
                    #expect(answer.statuses == [400], "Last-Event-ID \(value.debugDescription)")
                    #expect(answer.closed)
                }
            }
        }
    }

    // MARK: - HTTP framing

    @Test func aChunkedBodyWithoutAnEndIsClosedByTheRequestTimeout() async throws {
        try await TestServer.run({ $0.requestTimeout = .seconds(1) }) { server in
            try await Self.expectHarmless(server) {
                let head = "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(TestServer.publishKey)\r\nContent-Type: application/json\r\n"
                let chunk = "10\r\n{\"user\":\"u\",\"ev\r\n"
                let shapes = [
                    // The inline path collects this one.
                    head + "Transfer-Encoding: chunked\r\n\r\n" + chunk,
                    // `Connection` sends it to the router.
                    head + "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk,
                    // A chunk announced and never sent.
                    head + "Transfer-Encoding: chunked\r\n\r\nffff\r\nabc",
                    // A Content-Length never reached.
                    head + "Content-Length: 100\r\n\r\n{\"user\"",
                    // A head never finished.
                    head + "X-Slow: 1",
                ]
                for shape in shapes {
                    let started = ContinuousClock.now
                    let connection = try await RawConnection.connect(port: server.port)
                    defer { connection.close() }
                    // On a loaded machine the timeout may pass before the bytes are out.
                    try? await connection.send(bytes: Array(shape.utf8))
                    // Well before --idle-timeout (60 s): the request timeout closed it.
                    try await connection.waitForClose(timeout: .seconds(20))
                    #expect(ContinuousClock.now - started < .seconds(20), "closed only after \(ContinuousClock.now - started)")
                    #expect(HTTPResponses(connection.bytes).final.allSatisfy { $0.status != 202 })
                }
            }
        }
    }

    @Test func hundredKilobytesOfHeadersAreRefused() async throws {
        try await Self.withServer(.memory) { server in
            try await Self.expectHarmless(server) {
                let valid = #"{"user":"u","event":"e","data":1}"#
                let oneBig = Self.post(valid, headers: "X-Big: " + String(repeating: "a", count: 100_000) + "\r\n")
                let many = Self.post(valid, headers: (0..<2_000).map { "X-H\($0): " + String(repeating: "b", count: 40) + "\r\n" }.joined())
                let bigCookie = Self.post(valid, headers: "Cookie: tidings_token=" + String(repeating: "c", count: 100_000) + "\r\n")
                for (name, bytes) in [("one 100 KB header", oneBig), ("2,000 headers", many), ("a 100 KB cookie", bigCookie)] {
                    let answer = try await Self.exchange(bytes, server: server, untilClosed: true, timeout: .seconds(20))
                    #expect(answer.statuses == [431], "\(name): \(answer.responses)")
                    #expect(answer.problemType() == "headers-too-large", "\(name)")
                    #expect(answer.closed, "\(name)")
                }
            }
        }
    }

    /// Framings that two HTTP parsers could read differently: refused with `400`, the
    /// connection closed, and the request hidden in the body never served.
    @Test func requestSmugglingShapesAreRefusedAndTheConnectionClosed() async throws {
        try await Self.withServer(.memory) { server in
            try await Self.expectHarmless(server) {
                let smuggled = String(decoding: Self.post(#"{"user":"victim","event":"smuggled","data":1}"#), as: UTF8.self)
                let chunkedBody = "0\r\n\r\n" + smuggled
                let start = "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(TestServer.publishKey)\r\nContent-Type: application/json\r\n"
                let shapes: [(String, String)] = [
                    ("Content-Length with Transfer-Encoding", start + "Content-Length: \(chunkedBody.utf8.count)\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedBody),
                    ("Transfer-Encoding with Content-Length", start + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n" + chunkedBody),
                    ("two different Content-Lengths", start + "Content-Length: 5\r\nContent-Length: \(smuggled.utf8.count + 5)\r\n\r\n{\"a\":" + smuggled),
                    ("two equal Content-Lengths", start + "Content-Length: 5\r\nContent-Length: 5\r\n\r\n{\"a\":" + smuggled),
                    ("a list of Content-Lengths", start + "Content-Length: 5, 5\r\n\r\n{\"a\":" + smuggled),
                    ("Transfer-Encoding: chunked, identity", start + "Transfer-Encoding: chunked, identity\r\n\r\n" + chunkedBody),
                    ("Transfer-Encoding: identity", start + "Transfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n{\"a\":" + smuggled),
                    ("two Transfer-Encodings", start + "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n" + chunkedBody),
                    ("Transfer-Encoding: xchunked", start + "Transfer-Encoding: xchunked\r\n\r\n" + chunkedBody),
                    ("obs-fold in Transfer-Encoding", start + "Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n" + chunkedBody),
                    ("obs-fold in Content-Length", start + "Content-Length: 5\r\n \(smuggled.utf8.count)\r\n\r\n{\"a\":" + smuggled),
                    ("space before the colon", start + "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n" + chunkedBody),
                    ("a bare LF chunk", start + "Transfer-Encoding: chunked\r\n\r\n5\n{\"a\":\n0\n\n" + smuggled),
                    ("a negative Content-Length", start + "Content-Length: -1\r\n\r\n" + smuggled),
                    ("a chunk size with a sign", start + "Transfer-Encoding: chunked\r\n\r\n+5\r\n{\"a\":\r\n0\r\n\r\n" + smuggled),
                ]
                for (name, request) in shapes {
                    let answer = try await Self.exchange(Array(request.utf8), server: server, answers: 2, timeout: .seconds(20))
                    #expect(answer.statuses == [400], "\(name): \(answer.responses)")
                    #expect(answer.closed, "\(name): left open")
                }
                let page = try await server.gateway.store.replay(targets: [.user("victim")], after: 0, through: .max, limit: 10)
                #expect(page.events.isEmpty)
            }
        }
    }
}
