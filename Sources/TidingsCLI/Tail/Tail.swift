import ArgumentParser
import Foundation

/// How `tidings tail` reads the stream.
enum TailTransport: String, ExpressibleByArgument, CaseIterable, Sendable {
    /// `GET /events`, Server-Sent Events.
    case sse
    /// `GET /ws`, a WebSocket.
    case ws
    /// `GET /poll`, long polling.
    case poll
}

struct Tail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a stream: one line per event, id, event type and data separated by tabs.",
        discussion: """
            Reconnects like a browser, resuming with the last id it printed. Ephemeral events print '-' \
            as id. --transport picks GET /events (sse, the default), GET /ws (ws: reconnects after a \
            close for a slow consumer, a shutdown, an expired token or a dropped connection) or \
            GET /poll (poll: without --last-event-id the first answer gives the current position); \
            the output is the same for all three.
            """)

    @Option(help: "Gateway URL, e.g. http://127.0.0.1:8080.") var url: String
    @Option(help: "Subscriber token.") var token: String
    @Option(help: "Topic to add to the stream (repeatable).") var topic: [String] = []
    @Option(help: "Resume after this id.") var lastEventId: String?
    @Option(help: "Stop after this many events.") var count: Int?
    @Option(help: "sse (GET /events), ws (GET /ws) or poll (GET /poll).") var transport: TailTransport = .sse
    @Flag(help: "Do not reconnect when the stream ends.") var once = false

    func run() async throws {
        let printer = TailPrinter(lastID: lastEventId, limit: count)
        switch transport {
        case .sse: try await tailEvents(printer)
        case .ws: try await tailWebSocket(printer)
        case .poll: try await tailPoll(printer)
        }
    }

    /// The query of a stream request: the topics, then `extra`.
    func query(_ extra: [URLQueryItem] = []) -> [URLQueryItem]? {
        let items = topic.map { URLQueryItem(name: "topic", value: $0) } + extra
        return items.isEmpty ? nil : items
    }

    /// A refused request: the status and body on standard error, then the exit code (`69` for
    /// `503`, else `1`).
    static func refused(status: UInt, body: String) -> ExitCode {
        FileHandle.standardError.write(Data("error: \(status) \(body)\n".utf8))
        return ExitCode(status == 503 ? ExitCodes.unavailable : ExitCodes.failure)
    }

    static func interrupted(_ reason: String) {
        FileHandle.standardError.write(Data("stream interrupted: \(reason)\n".utf8))
    }

    /// Runs `stream` again and again until it returns true (`--count` reached): after `delay`
    /// (1 s unless the stream changes it) when it ends or fails, a failure reported on standard
    /// error; an `ExitCode` ends the command. With `--once`, runs it once.
    func reconnecting(_ stream: (_ delay: inout Duration) async throws -> Bool) async throws {
        var delay = Duration.seconds(1)
        while true {
            do {
                if try await stream(&delay) { return }
            } catch let exit as ExitCode {
                throw exit
            } catch {
                Self.interrupted("\(error)")
            }
            if once { return }
            try await Task.sleep(for: delay)
        }
    }
}
