import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// A `GET /poll` answer: `{"events":[{"id":"…","event":"…","data":…},…],"last_event_id":"…"}`.
struct PollAnswer: Equatable {
    var events: [RawEvent]
    var lastEventID: String?

    /// `nil` when the text is not such an answer.
    init?(_ text: String) {
        let json = RawJSON(text)
        guard let members = json.members() else { return nil }
        events = []
        for (key, value) in members {
            switch key {
            case "events":
                guard let elements = json.elements(in: value) else { return nil }
                for element in elements {
                    guard let event = RawEvent(json, element) else { return nil }
                    events.append(event)
                }
            case "last_event_id":
                lastEventID = json.string(value)
            default:
                break
            }
        }
    }
}

extension Tail {
    /// The longest wait the gateway is asked for.
    static let pollTimeout = "25s"

    /// `GET /poll` in a loop, each poll from the previous answer's `last_event_id`; without a
    /// resume point the first answer comes at once with the current position.
    func tailPoll(_ printer: TailPrinter) async throws {
        try await reconnecting { _ in
            while true {
                var components = URLComponents(string: GatewayURL.endpoint(url, "poll"))!
                var extra = [URLQueryItem(name: "timeout", value: Self.pollTimeout)]
                if let lastID = printer.lastID { extra.append(URLQueryItem(name: "last_event_id", value: lastID)) }
                components.queryItems = query(extra)
                var request = HTTPClientRequest(url: components.string!)
                request.headers.add(name: "Authorization", value: "Bearer \(token)")
                request.headers.add(name: "Accept", value: "application/json")
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
                let body = String(buffer: try await response.body.collect(upTo: 64 << 20))
                guard response.status == .ok else { throw Self.refused(status: response.status.code, body: body) }
                guard let answer = PollAnswer(body) else {
                    FileHandle.standardError.write(Data("error: not a poll answer: \(body.prefix(300))\n".utf8))
                    throw ExitCode(ExitCodes.failure)
                }
                for event in answer.events {
                    if printer.print(id: event.id, event: event.event, data: event.data) { return true }
                }
                if let cursor = answer.lastEventID { printer.resume(after: cursor) }
            }
        }
    }
}
