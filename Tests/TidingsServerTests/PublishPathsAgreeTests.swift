import Foundation
import Synchronization
import Testing
import TidingsCore
@testable import TidingsServer

/// The two front ends of `POST /events` — the inline path on the event loop (memory mode) and
/// the router — give the same answers and store the same events: the same generated requests
/// go once to a server where the inline path answers what it can and once to one where the
/// router answers everything.
@Suite("Both publish paths agree", .timeLimit(.minutes(6)))
struct PublishPathsAgreeTests {
    /// Small limits, so bodies over them are cheap to make.
    static func configure(_ configuration: inout TidingsConfiguration) {
        configuration.maxBody = 700
        configuration.maxEventBytes = 80
        // Long enough that a loaded machine never closes one server's connection and not the other's.
        configuration.requestTimeout = .seconds(60)
    }

    /// Every target the generated events use (to read the stores back).
    static let targets: Set<Target> = [.user("u1"), .user("u2"), .topic("t1"), .topic("t2")]

    /// The credentials of the requests: each kind the contract names.
    struct Credentials: Sendable {
        var all: [(name: String, header: String?)]

        static func make() async throws -> Credentials {
            let publishAll = try await TestServer.token(sub: "svc-all", publish: .all(true))
            let publishUsers = try await TestServer.token(sub: "svc-users", publish: .patterns(["user:*"]))
            let subscriber = try await TestServer.token(sub: "reader", topics: ["*"])
            var forged = publishAll
            forged.removeLast(3)
            forged += forged.hasSuffix("A") ? "BBB" : "AAA"
            return Credentials(all: [
                ("publish key", "Bearer \(TestServer.publishKey)"),
                ("publish token", "Bearer \(publishAll)"),
                ("user:* token", "Bearer \(publishUsers)"),
                ("subscriber token", "Bearer \(subscriber)"),
                ("forged token", "Bearer \(forged)"),
                ("unknown key", "Bearer not-a-key"),
                ("basic", "Basic dXNlcjpwYXNz"),
                ("empty bearer", "Bearer "),
                ("none", nil),
            ])
        }
    }

    // MARK: - Generation

    /// One generated request: its bytes, and what it was made of (for failure messages).
    struct Generated {
        var bytes: [UInt8]
        var summary: String
    }

    struct Generator {
        var random: SeededGenerator
        let credentials: Credentials
        var counter = 0

        mutating func chance(_ percent: Int) -> Bool { Int.random(in: 0..<100, using: &random) < percent }

        mutating func pick<T>(_ items: [T]) -> T { items.randomElement(using: &random)! }

        mutating func target() -> String {
            pick([#""user":"u1""#, #""user":"u2""#, #""topic":"t1""#, #""users":["u1","u2"]"#, #""topics":["t1","t2"]"#])
        }

        mutating func event() -> String {
            counter += 1
            let key = chance(20) ? #","idempotency_key":"k\#(Int.random(in: 0..<3, using: &random))""# : ""
            return #"{\#(target()),"event":"e.\#(counter)","data":{"n":\#(counter)}\#(key)}"#
        }

        mutating func body() -> (bytes: [UInt8], kind: String) {
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<45: return (Array(event().utf8), "one event")
            case 45..<55: return (Array(("[" + (0..<Int.random(in: 1...3, using: &random)).map { _ in event() }.joined(separator: ",") + "]").utf8), "batch")
            case 55..<62:
                let whole = Array(event().utf8)
                return (Array(whole.prefix(Int.random(in: 0..<whole.count, using: &random))), "truncated JSON")
            case 62..<67: return (Array(#"{"user":"u1","event":"bad type","data":1,"extra":true}"#.utf8), "invalid fields")
            case 67..<71: return (Array(#"{"user":"u1","event":"e","data":"\#(String(repeating: "x", count: 90))"}"#.utf8), "data over --max-event-bytes")
            case 71..<75:
                let events = (0..<9).map { _ in #"{"user":"u2","event":"pad","data":"\#(String(repeating: "y", count: 60))"}"# }
                return (Array(("[" + events.joined(separator: ",") + "]").utf8), "body over --max-body")
            case 75..<78: return (Array(#"{"user":"u1","event":"e","data":"\#u{FF}"}"#.utf8) + [0xFF, 0xFE], "invalid UTF-8")
            case 78..<81: return ([], "empty")
            case 81..<84: return (Array(pick(["null", "[]", "\"x\"", "{}", "[1]"]).utf8), "not an event")
            case 84..<88: return (Array(#"{"user":"u1","user":"u2","event":"dup","data":1}"#.utf8), "duplicate key")
            default: return (Array(event().utf8), "one event")
            }
        }

        /// A request, and whether it may be followed by others on its connection.
        mutating func request(last: Bool) -> Generated {
            let (body, kind) = body()
            let credential = chance(70) ? credentials.all[Int.random(in: 0..<3, using: &random)] : pick(credentials.all)
            let contentType: String? = chance(80)
                ? "application/json"
                : pick(["application/json; charset=utf-8", "Application/JSON", "application/cloudevents+json", "text/plain", nil])
            let path = chance(90) ? "/events" : pick(["/events?x=1", "/events/", "/EVENTS"])
            let version = chance(95) ? "HTTP/1.1" : "HTTP/1.0"
            var head = "POST \(path) \(version)\r\nHost: x\r\n"
            if let header = credential.header { head += "Authorization: \(header)\r\n" }
            if let contentType { head += "Content-Type: \(contentType)\r\n" }
            if chance(3) { head += "Content-Type: application/json\r\n" }
            var framing = "content-length"
            var encoded = body
            switch Int.random(in: 0..<100, using: &random) {
            case 0..<68:
                head += "Content-Length: \(body.count)\r\n"
            case 68..<85:
                framing = "chunked"
                head += "Transfer-Encoding: chunked\r\n"
                encoded = chunked(body)
            case 85..<89:
                framing = "duplicate content-length"
                head += "Content-Length: \(body.count)\r\nContent-Length: \(body.count)\r\n"
            case 89..<92:
                framing = "conflicting content-length"
                head += "Content-Length: \(body.count)\r\nContent-Length: \(body.count + 1)\r\n"
            case 92..<95:
                framing = "content-length and chunked"
                head += "Content-Length: \(body.count)\r\nTransfer-Encoding: chunked\r\n"
                encoded = chunked(body)
            default:
                framing = "a bad chunk size inside the body"
                head += "Transfer-Encoding: chunked\r\n"
                let half = body.count / 2
                encoded = Array((String(half, radix: 16) + "\r\n").utf8) + body.prefix(half) + Array("\r\nzz\r\n".utf8) + body.dropFirst(half)
            }
            var extras: [String] = []
            if chance(10) { extras.append("Expect: 100-continue") }
            if chance(10) { extras.append(last && chance(50) ? "Connection: close" : "Connection: keep-alive") }
            for extra in extras { head += extra + "\r\n" }
            return Generated(
                bytes: Array((head + "\r\n").utf8) + encoded,
                summary: "\(kind), \(credential.name), \(contentType ?? "no content type"), \(path) \(version), \(framing) \(extras)")
        }

        mutating func chunked(_ body: [UInt8]) -> [UInt8] {
            var out: [UInt8] = []
            var rest = body[...]
            while !rest.isEmpty {
                let size = Int.random(in: 1...max(1, rest.count), using: &random)
                out += Array((String(size, radix: 16) + "\r\n").utf8) + rest.prefix(size) + Array("\r\n".utf8)
                rest = rest.dropFirst(size)
            }
            return out + Array("0\r\n\r\n".utf8)
        }
    }

    /// One connection's worth: requests sent back to back, in parts cut at `splits`.
    struct Case {
        var requests: [Generated]
        var splits: [Int]
        var bytes: [UInt8] { requests.flatMap(\.bytes) }
    }

    static func cases(seed: UInt64, count: Int, credentials: Credentials) -> [Case] {
        var generator = Generator(random: SeededGenerator(seed: seed), credentials: credentials)
        return (0..<count).map { _ in
            let number = generator.chance(70) ? 1 : Int.random(in: 2...4, using: &generator.random)
            let requests = (0..<number).map { generator.request(last: $0 == number - 1) }
            let total = requests.reduce(0) { $0 + $1.bytes.count }
            let splits = generator.chance(40)
                ? Set((0..<Int.random(in: 1...3, using: &generator.random)).map { _ in Int.random(in: 1..<total, using: &generator.random) }).sorted()
                : []
            return Case(requests: requests, splits: splits)
        }
    }

    // MARK: - Running and comparing

    /// What one server answered on one connection, with ids replaced by the events they name.
    struct Outcome: Equatable, CustomStringConvertible {
        var responses: [HTTPResponses.Response]
        var closed: Bool
        var description: String { responses.map(\.description).joined(separator: "\n") + (closed ? "\n(closed)" : "\n(open)") }
    }

    /// Sends `bytes` in parts and waits for as many final answers as requests, or the close;
    /// then settles whether the connection stays open with a `GET /healthz` behind them (its
    /// answer comes after every answer before it, or the server closes).
    static func exchange(_ bytes: [UInt8], splits: [Int], requests: Int, server: TestServer) async throws -> Outcome {
        let connection = try await RawConnection.connect(port: server.port)
        defer { connection.close() }
        try await connection.send(bytes: bytes, splitAt: splits, serverPort: server.port)
        try await waitForAnswers(requests, on: connection)
        var probed = false
        if connection.isOpen, HTTPResponses(connection.bytes).final.count == requests {
            probed = true
            try? await connection.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            try await waitForAnswers(requests + 1, on: connection)
        }
        var responses = HTTPResponses(connection.bytes).responses
        let open = probed && responses.last?.status == 200 && HTTPResponses(connection.bytes).final.count == requests + 1
        if open { responses.removeLast() }
        return Outcome(responses: try await normalized(responses, server: server), closed: !open)
    }

    /// Waits until `count` final answers arrived or the server closed the connection (at most 20 s).
    static func waitForAnswers(_ count: Int, on connection: RawConnection) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while HTTPResponses(connection.bytes).final.count < count, connection.isOpen, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    /// Drops the `Date` header and writes each id of a `202` as the event stored under it.
    static func normalized(_ responses: [HTTPResponses.Response], server: TestServer) async throws -> [HTTPResponses.Response] {
        var result: [HTTPResponses.Response] = []
        for var response in responses {
            response.headers.removeAll { $0.name == "date" || $0.name == "content-length" }
            if response.status == 202 {
                var text = response.text
                for id in ids(in: text) {
                    let page = try await server.gateway.store.replay(targets: targets, after: id - 1, through: id, limit: 1)
                    let event = try #require(page.events.first, "id \(id) answered but not stored")
                    text = text.replacingOccurrences(of: "\"\(id)\"", with: describe(event))
                }
                response.body = Array(text.utf8)
            }
            result.append(response)
        }
        return result
    }

    static func ids(in text: String) -> [EventID] {
        let digits = text.split { !$0.isNumber }
        return digits.compactMap { EventID($0) }
    }

    static func describe(_ event: Event) -> String {
        "<\(event.type.rawValue) \(event.targets.map(\.description).sorted()) \(event.data)>"
    }

    static func storedEvents(_ server: TestServer) async throws -> [String] {
        try await server.gateway.store.replay(targets: targets, after: 0, through: .max, limit: 100_000).events.map(describe)
    }

    /// Runs `cases` in order against both servers at once; records every disagreement.
    static func compare(_ cases: [Case], inline: TestServer, router: TestServer) async throws {
        async let inlineOutcomes = run(cases, on: inline)
        async let routerOutcomes = run(cases, on: router)
        let (a, b) = try await (inlineOutcomes, routerOutcomes)
        var disagreements = 0
        for (index, item) in cases.enumerated() where a[index] != b[index] {
            disagreements += 1
            if disagreements <= 5 {
                Issue.record("""
                    case \(index) (\(item.requests.map(\.summary)), split at \(item.splits)):
                    inline server:
                    \(a[index])
                    router only:
                    \(b[index])
                    request bytes: \(String(decoding: item.bytes, as: UTF8.self).debugDescription)
                    """)
            }
        }
        #expect(disagreements == 0, "\(disagreements) of \(cases.count) cases answered differently")
        #expect(try await storedEvents(inline) == storedEvents(router))
    }

    static func run(_ cases: [Case], on server: TestServer) async throws -> [Outcome] {
        var outcomes: [Outcome] = []
        for item in cases {
            outcomes.append(try await exchange(item.bytes, splits: item.splits, requests: item.requests.count, server: server))
        }
        return outcomes
    }

    // MARK: - Tests

    @Test func generatedRequestsGetTheSameAnswersAndStoreTheSameEvents() async throws {
        let credentials = try await Credentials.make()
        let cases = Self.cases(seed: 14, count: 200, credentials: credentials)
        try await TestServer.run(inlinePublish: true, Self.configure) { inline in
            try await TestServer.run(inlinePublish: false, Self.configure) { router in
                try await Self.compare(cases, inline: inline, router: router)
                let answeredInline = inline.gateway.inlinePublishes.load(ordering: .relaxed)
                #expect(answeredInline > 30, "the inline path answered only \(answeredInline) requests")
                #expect(router.gateway.inlinePublishes.load(ordering: .relaxed) == 0)
                let stored = try await Self.storedEvents(router)
                #expect(stored.count > 60, "only \(stored.count) events stored")
            }
        }
    }

    /// Requests cut into two parts at every byte, each part read by the server on its own, on
    /// one keep-alive connection per server.
    @Test(arguments: [
        ("publish key", 0), ("publish token", 1), ("chunked", 2), ("two pipelined", 3), ("refused", 4),
    ])
    func requestsSplitAtEveryByteGetTheSameAnswers(name: String, shape: Int) async throws {
        let credentials = try await Credentials.make()
        let key = credentials.all[0].header!
        let token = credentials.all[1].header!
        @Sendable func request(_ body: String, authorization: String, extra: String = "") -> [UInt8] {
            Array("POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: \(authorization)\r\nContent-Type: application/json\r\n\(extra)Content-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
        }
        let one = #"{"user":"u1","event":"split","data":{"a":[1,2]}}"#
        let bytes: [UInt8]
        switch shape {
        case 0: bytes = request(one, authorization: key)
        case 1: bytes = request(one, authorization: token)
        case 2:
            bytes = Array("POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: \(key)\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
                + Array("a\r\n{\"user\":\"u\r\n".utf8) + Array(String(one.utf8.count - 10, radix: 16).utf8) + Array("\r\n".utf8)
                + Array(one.utf8.dropFirst(10)) + Array("\r\n0\r\n\r\n".utf8)
        case 3: bytes = request(one, authorization: key) + request(#"[{"topic":"t1","event":"second","data":null}]"#, authorization: token)
        default: bytes = request(#"{"user":"u1","event":"split","data":"#, authorization: key)
        }
        let requests = shape == 3 ? 2 : 1
        try await TestServer.run(inlinePublish: true, Self.configure) { inline in
            try await TestServer.run(inlinePublish: false, Self.configure) { router in
                /// Every split, in order, on one connection; the answers.
                @Sendable func splitEverywhere(_ server: TestServer) async throws -> [HTTPResponses.Response] {
                    // The token is verified by the router once; from then on the inline path may answer.
                    let connection = try await RawConnection.connect(port: server.port)
                    defer { connection.close() }
                    try await connection.send(bytes: request(#"{"user":"u2","event":"warm","data":0}"#, authorization: token))
                    try await Self.waitForAnswers(1, on: connection)
                    var answered = 1
                    for split in 1..<bytes.count {
                        try await connection.send(bytes: bytes, splitAt: [split], serverPort: server.port)
                        answered += requests
                        let deadline = ContinuousClock.now + .seconds(20)
                        while HTTPResponses(connection.bytes).final.count < answered {
                            guard connection.isOpen, ContinuousClock.now < deadline else {
                                throw TestFailure("split at \(split): no answer; received \(connection.text.suffix(500))")
                            }
                            try await Task.sleep(for: .milliseconds(1))
                        }
                    }
                    return try await Self.normalized(HTTPResponses(connection.bytes).responses, server: server)
                }
                async let fromInline = splitEverywhere(inline)
                async let fromRouter = splitEverywhere(router)
                let (a, b) = try await (fromInline, fromRouter)
                #expect(a.count == 1 + (bytes.count - 1) * requests)
                let differences = zip(a, b).enumerated().filter { $0.element.0 != $0.element.1 }
                for (index, pair) in differences.prefix(3) {
                    Issue.record("answer \(index):\ninline: \(pair.0)\nrouter: \(pair.1)")
                }
                #expect(differences.isEmpty && a.count == b.count)
                #expect(try await Self.storedEvents(inline) == Self.storedEvents(router))
                if shape != 4 {
                    #expect(inline.gateway.inlinePublishes.load(ordering: .relaxed) >= bytes.count - 1)
                }
            }
        }
    }
}
