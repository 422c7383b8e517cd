import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TidingsCore
import TidingsServer

extension Tail {
    /// `GET /events`: reconnects after the server's `retry:` delay with `Last-Event-ID`.
    func tailEvents(_ printer: TailPrinter) async throws {
        try await reconnecting { delay in
            var components = URLComponents(string: GatewayURL.events(url))!
            components.queryItems = query()
            var request = HTTPClientRequest(url: components.string!)
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            request.headers.add(name: "Accept", value: "text/event-stream")
            if let lastID = printer.lastID { request.headers.add(name: "Last-Event-ID", value: lastID) }
            let response = try await HTTPClient.shared.execute(request, timeout: .hours(24 * 365))
            guard response.status == .ok else {
                throw Self.refused(status: response.status.code, body: String(buffer: try await response.body.collect(upTo: 1 << 16)))
            }
            var parser = SSEParser()
            for try await chunk in response.body {
                for message in parser.feed(chunk.readableBytesView) {
                    switch message {
                    case .event(let event):
                        // An SSE id persists from event to event: a repeated one is no id of this event's.
                        let id = event.id != nil && event.id != printer.lastID ? event.id : nil
                        if printer.print(id: id, event: event.type, data: event.data) { return true }
                    case .retry(let milliseconds):
                        delay = .milliseconds(milliseconds)
                    case .comment:
                        break
                    }
                }
            }
            return false
        }
    }
}
