import ArgumentParser
import AsyncHTTPClient
import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// A server message on `GET /ws` as `tidings tail` reads it.
enum WebSocketMessageKind: Equatable {
    /// `{"type":"event",…}`: an event to print.
    case event(RawEvent)
    /// `ack`, `error` or a type this client does not know.
    case other(type: String?)
    /// Not a JSON object.
    case malformed

    init(_ text: String) {
        let json = RawJSON(text)
        guard let members = json.members() else {
            self = .malformed
            return
        }
        let type = members.first { $0.key == "type" }.flatMap { json.string($0.value) }
        guard type == "event", let event = RawEvent(json, members) else {
            self = .other(type: type)
            return
        }
        self = .event(event)
    }
}

extension Tail {
    /// Close codes after which the stream is reopened from the last id: normal closure, going
    /// away (shutdown), policy violation (slow consumer) and 4401 (token expired: a fresh
    /// connection with the same token is refused, as on SSE, with 401).
    static let resumableCloseCodes: Set<UInt16> = [1000, 1001, 1008, 4401]

    /// `GET /ws` with the token as a bearer header and `last_event_id` in the query; reopened
    /// after a resumable close or a dropped connection.
    func tailWebSocket(_ printer: TailPrinter) async throws {
        var logger = Logger(label: "tidings.tail")
        logger.logLevel = .critical
        try await reconnecting { _ in
            var components = URLComponents(string: GatewayURL.webSocket(url))!
            components.queryItems = query(printer.lastID.map { [URLQueryItem(name: "last_event_id", value: $0)] } ?? [])
            let target = components.string!
            var configuration = WebSocketClientConfiguration(maxFrameSize: 1 << 24)
            configuration.additionalHeaders[.authorization] = "Bearer \(token)"
            let closed: WebSocketCloseFrame?
            do {
                closed = try await WebSocketClient.connect(url: target, configuration: configuration, logger: logger) { inbound, outbound, _ in
                    for try await message in inbound.messages(maxSize: 1 << 24) {
                        guard case .text(let text) = message else { continue }
                        switch WebSocketMessageKind(text) {
                        case .event(let event):
                            if printer.print(id: event.id, event: event.event, data: event.data) {
                                try await outbound.close(.normalClosure, reason: nil)
                                return
                            }
                        case .other:
                            break
                        case .malformed:
                            FileHandle.standardError.write(Data("warning: a frame that is not a JSON object: \(text.prefix(200))\n".utf8))
                        }
                    }
                }
            } catch let error as WebSocketClientError where error == .webSocketUpgradeFailed {
                throw await refusedUpgrade(target)
            }
            if printer.isDone { return true }
            let code = closed.map { Self.code($0.closeCode) }
            Self.interrupted((code.map { "closed with \($0)" } ?? "the connection dropped") + (closed?.reason.map { " (\($0))" } ?? ""))
            if let code, !Self.resumableCloseCodes.contains(code) { throw ExitCode(ExitCodes.failure) }
            return false
        }
    }

    static func code(_ code: WebSocketErrorCode) -> UInt16 {
        UInt16(webSocketErrorCode: code)
    }

    /// The upgrade was answered with something else than `101`; the client does not say what,
    /// so the same upgrade request goes again through the HTTP client for its status and problem
    /// (the gateway checks identity, topics and limits before it upgrades).
    private func refusedUpgrade(_ target: String) async -> ExitCode {
        var http = target
        if http.hasPrefix("ws://") { http = "http://" + http.dropFirst("ws://".count) }
        if http.hasPrefix("wss://") { http = "https://" + http.dropFirst("wss://".count) }
        var request = HTTPClientRequest(url: http)
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Upgrade", value: "websocket")
        request.headers.add(name: "Connection", value: "Upgrade")
        request.headers.add(name: "Sec-WebSocket-Version", value: "13")
        request.headers.add(name: "Sec-WebSocket-Key", value: Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString())
        if let response = try? await HTTPClient.shared.execute(request, timeout: .seconds(10)), response.status != .ok {
            let body = (try? await response.body.collect(upTo: 1 << 16)).map { String(buffer: $0) } ?? ""
            return Self.refused(status: response.status.code, body: body)
        }
        FileHandle.standardError.write(Data("error: the WebSocket upgrade was refused\n".utf8))
        return ExitCode(ExitCodes.failure)
    }
}
