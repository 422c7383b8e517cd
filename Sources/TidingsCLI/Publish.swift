import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import TidingsCore

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Publish one event through POST /events and print its id.")

    @Option(help: "Gateway URL, e.g. http://127.0.0.1:8080.") var url: String
    @Option(help: "Publisher token or publish key.") var token: String
    @Option(help: "Target user id (repeatable).") var user: [String] = []
    @Option(help: "Target topic (repeatable).") var topic: [String] = []
    @Option(help: "Event type.") var event: String
    @Option(help: "Event data as JSON.") var data: String
    @Option(help: "Idempotency key.") var idempotencyKey: String?

    func validate() throws {
        guard !user.isEmpty || !topic.isEmpty else { throw ValidationError("give --user or --topic") }
        guard (try? JSONParser.parse(Array(data.utf8))) != nil else { throw ValidationError("--data must be valid JSON") }
    }

    func run() async throws {
        var body = #"{"event":"# + Self.quote(event) + #","data":"# + data
        if !user.isEmpty { body += #","users":["# + user.map(Self.quote).joined(separator: ",") + "]" }
        if !topic.isEmpty { body += #","topics":["# + topic.map(Self.quote).joined(separator: ",") + "]" }
        if let idempotencyKey { body += #","idempotency_key":"# + Self.quote(idempotencyKey) }
        body += "}"
        var request = HTTPClientRequest(url: GatewayURL.events(url))
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: body))
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        } catch {
            FileHandle.standardError.write(Data("error: cannot reach \(url): \(error)\n".utf8))
            throw ExitCode(ExitCodes.unavailable)
        }
        let text = String(buffer: try await response.body.collect(upTo: 1 << 20))
        guard response.status == .accepted else {
            FileHandle.standardError.write(Data("error: \(response.status.code) \(text)\n".utf8))
            throw ExitCode(ExitCodes.failure)
        }
        print(text)
    }

    static func quote(_ text: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [text], options: [.withoutEscapingSlashes])
        return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
    }
}
