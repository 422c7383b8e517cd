import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket
import Synchronization

/// A real WebSocket client (hummingbird-websocket's) on `GET /ws`, collecting the server's
/// messages as parsed JSON and the close code it ended with.
final class WebSocketTestClient: Sendable {
    struct Message: @unchecked Sendable, CustomStringConvertible {
        // @unchecked: a parsed JSON object, never mutated after parsing.
        let json: [String: Any]
        var type: String? { json["type"] as? String }
        var id: String? { json["id"] as? String }
        var event: String? { json["event"] as? String }
        var ref: String? { json["ref"] as? String }
        var problem: [String: Any]? { json["problem"] as? [String: Any] }
        var status: Int? { problem?["status"] as? Int }
        var description: String { "\(json)" }
    }

    private struct State {
        var messages: [Message] = []
        var next = 0
        var connected = false
        var ended = false
        var closeCode: WebSocketErrorCode?
        var failure: (any Error)?
        var toSend: [String] = []
        var closeRequested = false
    }

    private let state = Mutex(State())
    private let outbound = AsyncStream<String?>.makeStream()
    private let task = Mutex<Task<Void, Never>?>(nil)

    /// Connects and waits for the upgrade. Throws when the server refused it.
    static func connect(port: Int, query: String = "", token: String?, answerPings: Bool = true) async throws -> WebSocketTestClient {
        let client = WebSocketTestClient()
        var fields = HTTPFields()
        if let token { fields[.authorization] = "Bearer \(token)" }
        let headers = fields  // a constant: the connecting task below captures it
        let url = "ws://127.0.0.1:\(port)/ws\(query.isEmpty ? "" : "?" + query)"
        let outbound = client.outbound
        let task = Task {
            do {
                let close = try await WebSocketClient.connect(
                    url: url, configuration: .init(maxFrameSize: 4 << 20, additionalHeaders: headers),
                    logger: Logger(label: "tidings.test.ws")
                ) { inbound, writer, _ in
                    client.state.withLock { $0.connected = true }
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            for await text in outbound.stream {
                                guard let text else {
                                    try await writer.close(.normalClosure, reason: nil)
                                    return
                                }
                                try await writer.write(.text(text))
                            }
                        }
                        var messages = inbound.messages(maxSize: 4 << 20).makeAsyncIterator()
                        while let message = try await messages.next() {
                            guard case .text(let text) = message,
                                  let json = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
                            else { continue }
                            ExchangeRecorder.recordMessage(transport: "ws", text)
                            client.state.withLock { $0.messages.append(Message(json: json)) }
                        }
                        group.cancelAll()
                    }
                }
                client.state.withLock { $0.ended = true; $0.closeCode = close?.closeCode }
            } catch {
                client.state.withLock { $0.ended = true; $0.failure = error }
            }
        }
        client.task.withLock { $0 = task }
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            let (connected, failure, ended) = client.state.withLock { ($0.connected, $0.failure, $0.ended) }
            if connected {
                // The upgrade's answer: only its status is visible through the WebSocket client.
                ExchangeRecorder.record(
                    method: "GET", target: "/ws" + (query.isEmpty ? "" : "?" + query),
                    requestHeaders: headers.map { ($0.name.rawName, $0.value) }, status: 101, headers: [:], body: nil)
                return client
            }
            if let failure { throw failure }
            if ended { throw TestFailure("the WebSocket ended before it was connected") }
            if ContinuousClock.now > deadline { throw TestFailure("no WebSocket upgrade within 10 s") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    func send(_ text: String) {
        outbound.continuation.yield(text)
    }

    /// Sends a normal close.
    func close() {
        outbound.continuation.yield(nil)
    }

    /// The next message from the server, or nil when the connection ended first.
    func next(timeout: Duration = .seconds(10)) async throws -> Message? {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (message, ended): (Message?, Bool) = state.withLock { state in
                if state.next < state.messages.count {
                    state.next += 1
                    return (state.messages[state.next - 1], false)
                }
                return (nil, state.ended)
            }
            if let message { return message }
            if ended { return nil }
            if ContinuousClock.now > deadline { throw TestFailure("no WebSocket message within \(timeout)") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// The next message that is not an event (an answer), skipping events.
    func nextAnswer(timeout: Duration = .seconds(10)) async throws -> Message? {
        while let message = try await next(timeout: timeout) {
            if message.type != "event" { return message }
        }
        return nil
    }

    /// Waits until the server closed the connection; returns its close code.
    func closed(timeout: Duration = .seconds(10)) async throws -> WebSocketErrorCode? {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (ended, code) = state.withLock { ($0.ended, $0.closeCode) }
            if ended { return code }
            if ContinuousClock.now > deadline { throw TestFailure("the WebSocket is still open after \(timeout)") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Every message received so far.
    var messages: [Message] { state.withLock { $0.messages } }
}
