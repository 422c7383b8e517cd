import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing

/// `tidings tail --transport poll` against a scripted gateway: the polls it sends and the lines
/// it prints, data exactly as the gateway wrote it.
@Suite("tidings tail over long polling")
struct TailTransportTests {
    /// Runs `body` with a gateway whose `GET /poll` gives `answers` in turn (then empty ones
    /// after a short wait) and records each poll's query.
    static func withPollGateway(
        _ answers: [String], _ body: @Sendable (_ baseURL: String, _ queries: @Sendable () -> [String]) async throws -> Void
    ) async throws {
        let queries = Mutex<[String]>([])
        let router = Router()
        router.get("/poll") { request, _ -> Response in
            let number = queries.withLock { list in
                list.append(request.uri.query ?? "")
                return list.count - 1
            }
            let text = number < answers.count ? answers[number] : #"{"events":[],"last_event_id":"0"}"#
            if number >= answers.count { try await Task.sleep(for: .milliseconds(50)) }
            return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        let (ports, port) = AsyncStream<Int>.makeStream()
        var logger = Logger(label: "tail-test")
        logger.logLevel = .critical
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { port.yield($0.localAddress?.port ?? 0) }, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw TestFailure("the scripted gateway did not start") }
            do {
                try await body("http://127.0.0.1:\(port)", { queries.withLock { $0 } })
            } catch {
                await group.triggerGracefulShutdown()
                throw error
            }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
    }

    @Test func pollsFromEachAnswersPositionAndPrintsTheDataAsWritten() async throws {
        let answers = [
            #"{"events":[],"last_event_id":"10"}"#,
            #"{"events":[{"id":"11","event":"order.updated","data":{"a":[1,{"b":"x\"y}"}],"u":"\u00e9"}},{"id":"12","event":"tidings.reset","data":{"reason":"history_expired","last_event_id":"3","oldest_available":null}}],"last_event_id":"12"}"#,
            #"{"events":[{"id":"13","event":"n","data":1.50}],"last_event_id":"13"}"#,
        ]
        try await Self.withPollGateway(answers) { baseURL, queries in
            let run = try await CLITests.run(["tail", "--url", baseURL, "--token", "t", "--transport", "poll", "--topic", "news", "--count", "3"])
            #expect(run.status == 0, "\(run.error)")
            #expect(
                run.output == """
                    11\torder.updated\t{"a":[1,{"b":"x\\"y}"}],"u":"\\u00e9"}
                    12\ttidings.reset\t{"reason":"history_expired","last_event_id":"3","oldest_available":null}
                    13\tn\t1.50

                    """)
            #expect(
                queries() == [
                    "topic=news&timeout=25s", "topic=news&timeout=25s&last_event_id=10", "topic=news&timeout=25s&last_event_id=12",
                ])
        }
    }

    @Test func aResumePointIsTheFirstPollsCursor() async throws {
        try await Self.withPollGateway([#"{"events":[{"id":"8","event":"e","data":"text"}],"last_event_id":"8"}"#]) { baseURL, queries in
            let run = try await CLITests.run(["tail", "--url", baseURL + "/events", "--token", "t", "--transport", "poll", "--last-event-id", "7", "--count", "1"])
            #expect(run.status == 0, "\(run.error)")
            #expect(run.output == "8\te\t\"text\"\n")
            #expect(queries() == ["timeout=25s&last_event_id=7"])
        }
    }
}
