import Foundation
import Synchronization
import Testing
import TidingsCore
@testable import TidingsServer

/// `POST /events` answered on the event loop (memory store) next to Hummingbird's router.
@Suite("Inline publish path")
struct InlinePublishTests {
    private func request(_ body: String, credential: String = TestServer.publishKey, extra: String = "") -> String {
        "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(credential)\r\nContent-Type: application/json\r\n"
            + extra + "Content-Length: \(body.utf8.count)\r\n\r\n" + body
    }

    /// The status codes of the responses received so far, in order.
    private func statuses(_ text: String) -> [Int] {
        text.components(separatedBy: "HTTP/1.1 ").dropFirst().compactMap { Int($0.prefix(3)) }
    }

    /// Header names (lowercased) and values of the `index`th response.
    private func headers(_ text: String, response index: Int) -> [String: String] {
        let response = text.components(separatedBy: "HTTP/1.1 ").dropFirst()[index + 1]
        let head = response.components(separatedBy: "\r\n\r\n")[0]
        var fields: [String: String] = [:]
        for line in head.components(separatedBy: "\r\n").dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            fields[parts[0].lowercased()] = parts[1].trimmingCharacters(in: .whitespaces)
        }
        return fields
    }

    private func ids(_ text: String) -> [Int] {
        text.components(separatedBy: #"{"id":""#).dropFirst().compactMap { Int($0.prefix { $0 != "\"" }) }
    }

    @Test func pipelinedRequestsAreAnsweredInOrderWhicheverPathServesThem() async throws {
        try await TestServer.run { server in
            let connection = try await RawConnection.connect(port: server.port)
            defer { connection.close() }
            // One write: the first is answered inline; the malformed one goes to the router, and
            // everything behind it waits for the router's answer.
            try await connection.send(
                request(#"{"user":"u","event":"first","data":1}"#)
                    + request(#"{"user":"u","event":"#)
                    + request(#"{"user":"u","event":"second","data":2}"#)
                    + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                    + request(#"{"user":"u","event":"third","data":3}"#))
            try await eventually("five answers") { statuses(connection.text).count == 5 }
            #expect(statuses(connection.text) == [202, 400, 202, 200, 202])
            let ids = ids(connection.text)
            #expect(ids.count == 3)
            #expect(ids == ids.sorted() && Set(ids).count == 3, "ids in request order: \(ids)")
            #expect(server.gateway.inlinePublishes.load(ordering: .relaxed) == 1)
            #expect(connection.text.contains("application/problem+json"))

            // Once the router has answered, the connection is served inline again.
            try await connection.send(request(#"{"user":"u","event":"fourth","data":4}"#))
            try await eventually("sixth answer") { statuses(connection.text).count == 6 }
            #expect(statuses(connection.text).last == 202)
            #expect(server.gateway.inlinePublishes.load(ordering: .relaxed) == 2)

            let page = try await server.gateway.store.replay(targets: [.user("u")], after: 0, through: .max, limit: 100)
            #expect(page.events.map(\.type.rawValue) == ["first", "second", "third", "fourth"])
        }
    }

    @Test func inlineAndRouterAnswersCarryTheSameHeaders() async throws {
        try await TestServer.run { server in
            let connection = try await RawConnection.connect(port: server.port)
            defer { connection.close() }
            try await connection.send(request(#"{"user":"u","event":"a","data":1}"#))
            try await eventually("inline answer") { statuses(connection.text).count == 1 }
            // A Connection header sends the request to the router.
            try await connection.send(request(#"{"user":"u","event":"b","data":2}"#, extra: "Connection: keep-alive\r\n"))
            try await eventually("router answer") { statuses(connection.text).count == 2 }
            #expect(server.gateway.inlinePublishes.load(ordering: .relaxed) == 1)
            let inline = headers(connection.text, response: 0)
            let routed = headers(connection.text, response: 1)
            #expect(Set(inline.keys) == Set(routed.keys))
            #expect(Set(inline.keys).isSuperset(of: ["content-type", "content-length", "date", "server"]))
            for name in ["content-type", "server"] { #expect(inline[name] == routed[name]) }
            #expect(inline["server"] == "tidings")
            let date = try #require(inline["date"])
            #expect(date.hasSuffix(" GMT") && date.count == 29, "IMF-fixdate: \(date)")
            #expect(ids(connection.text).count == 2)
        }
    }

    @Test func aChunkedBodyOverTheLimitIsRefusedAndTheConnectionGoesOn() async throws {
        try await TestServer.run({ $0.maxBody = 200 }) { server in
            let connection = try await RawConnection.connect(port: server.port)
            defer { connection.close() }
            let data = String(repeating: "x", count: 300)
            let body = #"{"user":"u","event":"big","data":""# + data + #""}"#
            let half = body.utf8.count / 2
            let chunked = "POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(TestServer.publishKey)\r\n"
                + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                + String(half, radix: 16) + "\r\n" + String(body.prefix(half)) + "\r\n"
                + String(body.utf8.count - half, radix: 16) + "\r\n" + String(body.dropFirst(half)) + "\r\n0\r\n\r\n"
            try await connection.send(chunked + request(#"{"user":"u","event":"small","data":1}"#))
            try await eventually("two answers") { statuses(connection.text).count == 2 }
            #expect(statuses(connection.text) == [413, 202])
            #expect(connection.text.contains("body-too-large"))
            let page = try await server.gateway.store.replay(targets: [.user("u")], after: 0, through: .max, limit: 100)
            #expect(page.events.map(\.type.rawValue) == ["small"])
        }
    }

    @Test func aTokenIsVerifiedByTheRouterOnceThenServedInline() async throws {
        try await TestServer.run { server in
            let token = try await TestServer.token(sub: "svc", publish: .patterns(["user:*"]))
            #expect(try await server.publish(#"{"user":"u","event":"a","data":1}"#, credential: token).status == 202)
            #expect(server.gateway.inlinePublishes.load(ordering: .relaxed) == 0)
            #expect(try await server.publish(#"{"user":"u","event":"a","data":2}"#, credential: token).status == 202)
            #expect(server.gateway.inlinePublishes.load(ordering: .relaxed) == 1)
            // A target the token may not publish to is the router's 403, and stores nothing.
            let denied = try await server.publish(#"{"topic":"t","event":"a","data":3}"#, credential: token)
            #expect(denied.status == 403)
            #expect(server.gateway.inlinePublishes.load(ordering: .relaxed) == 1)
            let page = try await server.gateway.store.replay(targets: [.user("u"), .topic("t")], after: 0, through: .max, limit: 100)
            #expect(page.events.count == 2)
        }
    }

    @Test func bytesThatAreNotHTTPAfterAnInlineAnswerGetTheRoutersBadRequest() async throws {
        try await TestServer.run { server in
            let connection = try await RawConnection.connect(port: server.port)
            defer { connection.close() }
            try await connection.send(request(#"{"user":"u","event":"a","data":1}"#) + "NOT HTTP AT ALL\r\n\r\n")
            try await eventually("two answers") { statuses(connection.text).count == 2 }
            #expect(statuses(connection.text) == [202, 400])
            #expect(server.gateway.inlinePublishes.load(ordering: .relaxed) == 1)
        }
    }

    @Test func theDateHeaderIsAnIMFFixdate() {
        #expect(HTTPDate.format(epochSecond: 784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(epochSecond: 0) == "Thu, 01 Jan 1970 00:00:00 GMT")
    }
}
