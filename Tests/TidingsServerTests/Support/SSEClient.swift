import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import TidingsCore
import TidingsServer

/// How a stream's body ended, as its client saw it.
enum StreamEnding: Equatable, Sendable {
    /// The chunked body ended with its final 0-length chunk: the server ended the stream.
    case clean
    /// The connection closed or failed before the final chunk (what the client reported).
    case broken(String)
}

/// A real streaming SSE client over AsyncHTTPClient: the body is parsed as it arrives, by the
/// WHATWG parsing rules, in a task of its own; tests wait for messages with a deadline.
final class SSEClient: Sendable {
    let status: Int
    let headers: HTTPHeaders
    private let state = Mutex(State())
    private let reader: Mutex<Task<Void, Never>?> = Mutex(nil)
    /// The body of a non-200 answer.
    let errorBody: String

    private struct State {
        var messages: [SSEParser.Message] = []
        var raw: [UInt8] = []
        var ending: StreamEnding?
        var readIndex = 0
        var paused = false
    }

    private init(status: Int, headers: HTTPHeaders, errorBody: String) {
        self.status = status
        self.headers = headers
        self.errorBody = errorBody
    }

    static func connect(url: String, headers: [(String, String)], readBody: Bool = true) async throws -> SSEClient {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "text/event-stream")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(120))
        let sent = request.headers.map { ($0.name, $0.value) }
        guard response.status == .ok else {
            let body = try await response.body.collect(upTo: 1 << 20)
            ExchangeRecorder.record(
                method: "GET", target: ExchangeRecorder.target(of: url), requestHeaders: sent, status: Int(response.status.code),
                headers: response.headers, body: String(buffer: body))
            return SSEClient(status: Int(response.status.code), headers: response.headers, errorBody: String(buffer: body))
        }
        // The body is the endless stream: only the status and headers are checked.
        ExchangeRecorder.record(
            method: "GET", target: ExchangeRecorder.target(of: url), requestHeaders: sent, status: 200, headers: response.headers, body: nil)
        let client = SSEClient(status: 200, headers: response.headers, errorBody: "")
        let task = Task {
            var parser = SSEParser()
            let ending: StreamEnding
            do {
                for try await chunk in response.body {
                    while client.state.withLock({ $0.paused }) {
                        try await Task.sleep(for: .milliseconds(5))
                    }
                    let messages = parser.feed(chunk.readableBytesView)
                    for case .event(let event) in messages where event.type == "tidings.reset" {
                        ExchangeRecorder.recordMessage(transport: "sse", event.data)
                    }
                    client.state.withLock { state in
                        state.raw.append(contentsOf: chunk.readableBytesView)
                        state.messages.append(contentsOf: messages)
                    }
                }
                // AsyncHTTPClient ends the body normally only on the final chunk; a connection
                // that closes before it is an error.
                ending = .clean
            } catch {
                ending = .broken(String(describing: error))
            }
            client.state.withLock { $0.ending = ending }
        }
        client.reader.withLock { $0 = task }
        return client
    }

    /// Stops reading the body (a slow client): the server's writes back up.
    func pause() { state.withLock { $0.paused = true } }
    func resume() { state.withLock { $0.paused = false } }

    /// Closes the connection.
    func close() {
        reader.withLock { $0?.cancel() }
    }

    deinit {
        reader.withLock { $0?.cancel() }
    }

    /// Everything received so far, as text.
    var rawText: String {
        state.withLock { String(decoding: $0.raw, as: UTF8.self) }
    }

    /// How the stream ended; `nil` while it is open.
    var ending: StreamEnding? { state.withLock { $0.ending } }

    /// The next message, or `nil` when the stream ended.
    func nextMessage(timeout: Duration = .seconds(10)) async throws -> SSEParser.Message? {
        let deadline = ContinuousClock.now + timeout
        while true {
            let next: (SSEParser.Message?, Bool) = state.withLock { state in
                if state.readIndex < state.messages.count {
                    defer { state.readIndex += 1 }
                    return (state.messages[state.readIndex], false)
                }
                return (nil, state.ending != nil)
            }
            if let message = next.0 { return message }
            if next.1 { return nil }
            if ContinuousClock.now > deadline { throw TestFailure("no SSE message within \(timeout)") }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// The next event (comments and retry skipped), or `nil` when the stream ended.
    func nextEvent(timeout: Duration = .seconds(10)) async throws -> SSEEvent? {
        while let message = try await nextMessage(timeout: timeout) {
            if case .event(let event) = message { return event }
        }
        return nil
    }

    /// The next `count` events; fails if the stream ends first.
    func events(_ count: Int, timeout: Duration = .seconds(10)) async throws -> [SSEEvent] {
        var events: [SSEEvent] = []
        while events.count < count {
            guard let event = try await nextEvent(timeout: timeout) else {
                throw TestFailure("stream ended (\(String(describing: ending))) after \(events.count) of \(count) events")
            }
            events.append(event)
        }
        return events
    }

    /// Waits for the end of the stream, returning the events that came before it and how it
    /// ended.
    func eventsUntilEnd(timeout: Duration = .seconds(10)) async throws -> (events: [SSEEvent], ending: StreamEnding) {
        var events: [SSEEvent] = []
        while let event = try await nextEvent(timeout: timeout) { events.append(event) }
        return (events, ending!)
    }
}
