import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TidingsCore
import TidingsServer

struct Tail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a stream: one line per event, id, event type and data separated by tabs.",
        discussion: "Reconnects like a browser, resuming with the last id it printed. Ephemeral events print '-' as id.")

    @Option(help: "Gateway URL, e.g. http://127.0.0.1:8080.") var url: String
    @Option(help: "Subscriber token.") var token: String
    @Option(help: "Topic to add to the stream (repeatable).") var topic: [String] = []
    @Option(help: "Resume after this id.") var lastEventId: String?
    @Option(help: "Stop after this many events.") var count: Int?
    @Flag(help: "Do not reconnect when the stream ends.") var once = false

    func run() async throws {
        var lastID = lastEventId
        var printed = 0
        var retryMilliseconds = 1000
        let output = FileHandle.standardOutput
        while true {
            var components = URLComponents(string: GatewayURL.events(url))!
            components.queryItems = topic.isEmpty ? nil : topic.map { URLQueryItem(name: "topic", value: $0) }
            var request = HTTPClientRequest(url: components.string!)
            request.headers.add(name: "Authorization", value: "Bearer \(token)")
            request.headers.add(name: "Accept", value: "text/event-stream")
            if let lastID { request.headers.add(name: "Last-Event-ID", value: lastID) }
            do {
                let response = try await HTTPClient.shared.execute(request, timeout: .hours(24 * 365))
                guard response.status == .ok else {
                    let text = String(buffer: try await response.body.collect(upTo: 1 << 16))
                    FileHandle.standardError.write(Data("error: \(response.status.code) \(text)\n".utf8))
                    throw ExitCode(response.status.code == 503 ? ExitCodes.unavailable : ExitCodes.failure)
                }
                var parser = SSEParser()
                var line = [UInt8]()
                for try await chunk in response.body {
                    for message in parser.feed(chunk.readableBytesView) {
                        switch message {
                        case .event(let event):
                            let hasID = event.id != nil && event.id != lastID
                            let id = hasID ? event.id! : "-"
                            if hasID { lastID = event.id }
                            line.removeAll(keepingCapacity: true)
                            line.append(contentsOf: "\(id)\t\(event.type)\t\(event.data)\n".utf8)
                            output.write(Data(line))
                            printed += 1
                            if let count, printed >= count { return }
                        case .retry(let milliseconds):
                            retryMilliseconds = milliseconds
                        case .comment:
                            break
                        }
                    }
                }
            } catch let exit as ExitCode {
                throw exit
            } catch {
                FileHandle.standardError.write(Data("stream interrupted: \(error)\n".utf8))
            }
            if once { return }
            try await Task.sleep(for: .milliseconds(retryMilliseconds))
        }
    }
}
