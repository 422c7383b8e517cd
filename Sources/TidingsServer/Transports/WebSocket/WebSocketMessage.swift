import Foundation
import HTTPTypes
import Metrics
import NIOCore
import TidingsCore

/// One message from a WebSocket client, parsed: `subscribe`, `unsubscribe` or `publish`, each
/// answered with `{"type":"ack","ref":…}` or `{"type":"error","ref":…,"problem":{…}}` (the
/// problem `POST /events` would answer). Anything else is an error with status 422.
struct WebSocketMessage {
    let bytes: [UInt8]
    let document: JSONValue

    /// Fields of the message itself (not of a published event).
    static let envelope: Set<String> = ["type", "ref"]

    /// What a message asks for, read from its bytes alone (the session's rights are checked
    /// when it is handled).
    enum Command {
        case subscribe(topics: [String])
        case unsubscribe(topics: [String])
        /// The events decoded, or why not; a token without publish rights is refused first.
        case publish(Result<PublishRequest, PublishError>)
    }

    /// The message's `ref` (`nil` when it has none or an invalid one) and what it asks for, or
    /// the problem that refuses it.
    func read(maxEventBytes: Int) -> (ref: String?, command: Result<Command, Problem>) {
        guard case .object(let members) = document else {
            return (nil, .failure(Self.invalid("", "a message must be a JSON object, not \(document.kindName)")))
        }
        var ref: String?
        if let value = members.first(where: { $0.key == "ref" })?.value {
            guard let text = value.stringValue, (1...64).contains(text.count) else {
                return (nil, .failure(Self.invalid("/ref", "must be a string of 1–64 characters")))
            }
            ref = text
        }
        switch members.first(where: { $0.key == "type" })?.value.stringValue {
        case "subscribe":
            return (ref, Self.topics(members, subscribe: true).map { .subscribe(topics: $0) })
        case "unsubscribe":
            return (ref, Self.topics(members, subscribe: false).map { .unsubscribe(topics: $0) })
        case "publish":
            let decoded = Result { () throws(PublishError) in
                try PublishRequest.decode(
                    message: bytes, document: document, envelope: Self.envelope, limits: .init(maxEventBytes: maxEventBytes))
            }
            return (ref, .success(.publish(decoded)))
        default:
            return (ref, .failure(Self.invalid("/type", "must be \"subscribe\", \"unsubscribe\" or \"publish\"")))
        }
    }

    /// Answers the message (on `loop`, the stream's event loop; a publish answers when stored).
    func handle(in session: WebSocketSession, loop: any EventLoop) {
        let (ref, command) = read(maxEventBytes: session.gateway.configuration.maxEventBytes)
        switch command {
        case .failure(let problem):
            answer(.error(ref: ref, problem), in: session)
        case .success(.subscribe(let topics)):
            answer(change(topics, in: session, subscribe: true, ref: ref), in: session)
        case .success(.unsubscribe(let topics)):
            answer(change(topics, in: session, subscribe: false, ref: ref), in: session)
        case .success(.publish(let decoded)):
            publish(decoded, in: session, loop: loop, ref: ref)
        }
    }

    /// The topics of a subscribe or unsubscribe message: every one valid, no other fields.
    private static func topics(_ members: [JSONValue.Member], subscribe: Bool) -> Result<[String], Problem> {
        var problems: [PublishError.FieldError] = []
        for member in members where !envelope.contains(member.key) && member.key != "topics" {
            problems.append(.init(pointer: "/" + escapePointer(member.key), detail: "unknown field; a \(subscribe ? "subscribe" : "unsubscribe") message has type, ref and topics"))
        }
        guard case .array(let values)? = members.first(where: { $0.key == "topics" })?.value, !values.isEmpty else {
            problems.append(.init(pointer: "/topics", detail: "must be a non-empty array of topic names"))
            return .failure(invalid(problems))
        }
        var topics: [String] = []
        for (index, value) in values.enumerated() {
            guard let name = value.stringValue, Target.isValidName(name) else {
                problems.append(.init(pointer: "/topics/\(index)", detail: "must be 1–128 characters of A–Z, a–z, 0–9, '.', '_', '@', ':' or '-'"))
                continue
            }
            topics.append(name)
        }
        guard problems.isEmpty else { return .failure(invalid(problems)) }
        return .success(topics)
    }

    /// Adds or removes topics: live events from the next one on (no replay). To subscribe, every
    /// topic must be allowed by the token's `topics` claim; otherwise nothing changes.
    private func change(_ topics: [String], in session: WebSocketSession, subscribe: Bool, ref: String?) -> Answer {
        let subscription = session.sink.subscription
        if subscribe {
            let denied = topics.enumerated().filter { !session.subscriber.mayRead(topic: $0.element) }
            guard denied.isEmpty else {
                return .error(ref: ref, Problem.forbidden(
                    "the token's topics claim does not allow every topic; nothing changed",
                    errors: denied.map { .init(pointer: "/topics/\($0.offset)", detail: "not allowed by the token's topics claim") }))
            }
            let held = session.gateway.bus.targets(of: subscription)?.count ?? 0
            guard held - 1 + topics.count <= WebSocketSession.maxTopics else {
                return .error(ref: ref, Self.invalid("/topics", "a stream holds at most \(WebSocketSession.maxTopics) topics"))
            }
        }
        let targets = topics.map(Target.topic)
        session.gateway.bus.update(subscription, adding: subscribe ? targets : [], removing: subscribe ? [] : targets)
        return .ack(ref: ref, ids: nil)
    }

    /// Publishes like `POST /events`, with the token's `publish` claim as the credential.
    private func publish(_ request: Result<PublishRequest, PublishError>, in session: WebSocketSession, loop: any EventLoop, ref: String?) {
        guard let publisher = session.subscriber.publisher else {
            return answer(.error(ref: ref, Problem.forbidden("the token has no publish claim")), in: session)
        }
        let decoded: PublishRequest
        switch request {
        case .success(let request): decoded = request
        case .failure(let error): return answer(.error(ref: ref, Problem.publish(error)), in: session)
        }
        let controller = PublishController(gateway: session.gateway)
        session.gateway.metrics.publishRequests.increment()
        Task {
            let result: Answer
            do {
                let ids = try await controller.store(decoded, by: publisher)
                result = .ack(ref: ref, ids: ids)
            } catch let problem as Problem {
                session.gateway.metrics.publishRejected.increment()
                result = .error(ref: ref, problem)
            } catch {
                result = .error(ref: ref, Problem.unavailable("the event store is unavailable", retryAfter: 2))
            }
            loop.execute { answer(result, in: session) }
        }
    }

    private func answer(_ answer: Answer, in session: WebSocketSession) {
        session.sink.writeOwn(WebSocketWire.text(answer.json))
    }

    private static func invalid(_ pointer: String, _ detail: String) -> Problem {
        invalid([.init(pointer: pointer, detail: detail)])
    }

    private static func invalid(_ errors: [PublishError.FieldError]) -> Problem {
        Problem(.unprocessableContent, type: "invalid-message", title: "Unprocessable Content",
                detail: "the message is not one the gateway understands", errors: errors)
    }

    /// What the gateway answers a message.
    enum Answer: Encodable {
        case ack(ref: String?, ids: [EventID]?)
        case error(ref: String?, Problem)

        private enum CodingKeys: String, CodingKey {
            case type, ref, ids, problem
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            switch self {
            case .ack(let ref, let ids):
                try container.encode("ack", forKey: .type)
                try container.encodeIfPresent(ref, forKey: .ref)
                try container.encodeIfPresent(ids?.map(String.init), forKey: .ids)
            case .error(let ref, let problem):
                try container.encode("error", forKey: .type)
                try container.encodeIfPresent(ref, forKey: .ref)
                try container.encode(problem, forKey: .problem)
            }
        }

        var json: String {
            // Encoding strings, arrays and a problem cannot fail.
            String(decoding: (try? Problem.encoder.encode(self)) ?? Data(), as: UTF8.self)
        }
    }
}
