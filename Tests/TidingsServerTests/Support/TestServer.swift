import AsyncHTTPClient
import Foundation
import Hummingbird
import JWTKit
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization
import Testing
import TidingsCore
@testable import TidingsServer

/// A real gateway on a free loopback port, for one test.
struct TestServer: Sendable {
    static let secret = "test-secret-0123456789-0123456789-abcdef"
    static let publishKey = "test-publish-key-0123456789"

    let port: Int
    let gateway: Gateway
    let group: ServiceGroup
    /// The admin listener's port, when the configuration asks for one.
    var adminPort: Int?

    var baseURL: String { "http://127.0.0.1:\(port)" }

    /// Runs `body` against a fresh server; shuts it down afterwards whatever happens.
    /// - Parameter inlinePublish: false to have every `POST /events` answered by the router (else
    ///   the inline path answers the valid ones).
    static func run<T: Sendable>(
        clock: any WallClock = SystemClock(),
        inlinePublish: Bool = true,
        _ configure: (inout TidingsConfiguration) -> Void = { _ in },
        _ body: @Sendable (TestServer) async throws -> T
    ) async throws -> T {
        var configuration = TidingsConfiguration()
        configuration.port = 0
        configuration.jwtSecret = secret
        configuration.publishKeys = [publishKey]
        // Streams end at once on shutdown unless a test asks for a drain.
        configuration.drainPeriod = .zero
        configure(&configuration)
        var logger = Logger(label: "tidings.test")
        logger.logLevel = ProcessInfo.processInfo.environment["TIDINGS_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let (adminPorts, adminContinuation) = AsyncStream<Int>.makeStream()
        let app = try await buildApplication(
            configuration: configuration, logger: logger, clock: clock, answersPublishInline: inlinePublish,
            onServerRunning: { portContinuation.yield($0.localAddress?.port ?? 0) },
            onAdminRunning: { adminContinuation.yield($0.localAddress?.port ?? 0) })
        let group = ServiceGroup(configuration: .init(services: app.services, logger: logger))
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw TestFailure("server did not start") }
            var server = TestServer(port: port, gateway: app.gateway, group: group)
            if configuration.adminPort != nil {
                var admin = adminPorts.makeAsyncIterator()
                server.adminPort = await admin.next()
            }
            do {
                let result = try await body(server)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                return result
            } catch {
                await group.triggerGracefulShutdown()
                tasks.cancelAll()
                throw error
            }
        }
    }

    // MARK: - Tokens

    static func token(
        sub: String, topics: [String]? = nil, publish: PublishClaim? = nil, expiresIn: TimeInterval = 3600,
        secret: String = TestServer.secret, issuer: String? = nil, audience: String? = nil
    ) async throws -> String {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        let claims = TidingsClaims(
            sub: sub, exp: ExpirationClaim(value: Date().addingTimeInterval(expiresIn)), iss: issuer, aud: audience,
            topics: topics, publish: publish)
        return try await keys.sign(claims)
    }

    // MARK: - HTTP

    struct Reply: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: String

        /// The body as a JSON object.
        var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:]
        }

        var pointers: [String] {
            (json["errors"] as? [[String: Any]] ?? []).compactMap { $0["pointer"] as? String }
        }
    }

    func request(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: String? = nil, bytes: [UInt8]? = nil
    ) async throws -> Reply {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(string: body)) }
        if let bytes { request.body = .bytes(ByteBuffer(bytes: bytes)) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let bytes = try await response.body.collect(upTo: 16 << 20)
        let reply = Reply(status: Int(response.status.code), headers: response.headers, body: String(buffer: bytes))
        let isText = !(response.headers["Content-Type"].first ?? "").hasPrefix("image/")
        ExchangeRecorder.record(
            method: method.rawValue, target: path, requestHeaders: headers, status: reply.status, headers: reply.headers,
            body: isText ? reply.body : nil)
        return reply
    }

    /// `POST /events` with a JSON body.
    func publish(_ body: String, credential: String = TestServer.publishKey, contentType: String = "application/json") async throws -> Reply {
        try await request(.POST, "/events", headers: [("Authorization", "Bearer \(credential)"), ("Content-Type", contentType)], body: body)
    }

    /// Publishes one event to a user and returns its id.
    @discardableResult
    func publish(user: String, event: String = "test", data: String = "1") async throws -> String {
        let reply = try await publish(#"{"user":"\#(user)","event":"\#(event)","data":\#(data)}"#)
        guard reply.status == 202, let id = reply.json["id"] as? String else {
            throw TestFailure("publish failed: \(reply.status) \(reply.body)")
        }
        return id
    }

    /// Opens `GET /events`.
    /// Publishes 60 KiB events to `user` until its only stream is cut off as a slow consumer
    /// (at most 400); returns their ids.
    func publishUntilSlowConsumerIsCut(user: String) async throws -> [String] {
        let data = "\"" + String(repeating: "x", count: 60_000) + "\""
        var published: [String] = []
        for _ in 0..<400 {
            published.append(try await publish(user: user, data: data))
            if gateway.bus.subscriptionCount == 0 { break }
        }
        return published
    }

    func subscribe(token: String?, query: String = "", headers: [(String, String)] = []) async throws -> SSEClient {
        var all = headers
        if let token { all.append(("Authorization", "Bearer \(token)")) }
        return try await SSEClient.connect(url: baseURL + "/events" + (query.isEmpty ? "" : "?" + query), headers: all)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Waits until `condition` holds, polling; fails the test after `timeout`.
func eventually(
    _ what: String, timeout: Duration = .seconds(10), _ condition: @Sendable () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw TestFailure("timed out waiting for \(what)")
}
