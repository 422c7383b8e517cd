// Fuzz target: WebSocket client messages (WebSocketMessage.read), from an arbitrary text frame.
//
// Text that is not UTF-8 JSON closes the stream (1007) before this; anything else is read
// without crashing into a subscribe, an unsubscribe, a publish or a 422 problem, and each agrees
// with Foundation's reading of the message: the topics listed, the events of a publish (decoded
// again from Foundation's re-encoding of the event fields), every error pointer locating a value
// of the message (or a missing member of an object in it). The answers (`ack`, `error`) are JSON
// that Foundation reads back to the same ref and problem.
import Foundation
import FuzzSupport
import HTTPTypes
import TidingsCore
@testable import TidingsServer

let maxEventBytes = 1024

func checkPointers(_ errors: [PublishError.FieldError], in document: Any, _ what: String) {
    fuzzCheck(!errors.isEmpty, "\(what) without errors")
    for error in errors {
        fuzzCheck(FoundationJSON.locates(error.pointer, in: document), "\(what): pointer \(error.pointer) (\(error.detail)) locates nothing")
    }
}

/// Both requests carry the same events (targets as sets, data as JSON values).
func sameEvents(_ a: PublishRequest, _ b: PublishRequest) -> Bool {
    a.events.count == b.events.count && zip(a.events, b.events).allSatisfy { x, y in
        x.type == y.type && x.idempotencyKey == y.idempotencyKey && Set(x.targets) == Set(y.targets)
            && FoundationJSON.equal(FoundationJSON.parse(Array(x.data.utf8)), FoundationJSON.parse(Array(y.data.utf8)))
    }
}

func checkAnswers(ref: String?, problem: Problem?) {
    let ack = WebSocketMessage.Answer.ack(ref: ref, ids: [1, 42]).json
    let read = FoundationJSON.parse(Array(ack.utf8)) as? [String: Any]
    fuzzCheck(read?["type"] as? String == "ack" && read?["ref"] as? String == ref && (read?["ids"] as? [String]) == ["1", "42"],
              "ack \(ack) for ref \(ref.debugDescription)")
    guard let problem else { return }
    let error = WebSocketMessage.Answer.error(ref: ref, problem).json
    let answer = FoundationJSON.parse(Array(error.utf8)) as? [String: Any]
    let body = answer?["problem"] as? [String: Any]
    let pointers = (body?["errors"] as? [[String: Any]])?.map { $0["pointer"] as? String }
    fuzzCheck(answer?["type"] as? String == "error" && answer?["ref"] as? String == ref && body?["status"] as? Int == Int(problem.status.code)
              && pointers == problem.errors?.map { $0.pointer }, "error answer \(error)")
}

func check(_ bytes: [UInt8]) {
    guard String(validating: bytes, as: UTF8.self) != nil, let document = try? JSONParser.parse(bytes) else { return }
    guard let foundation = FoundationJSON.parse(bytes) else {
        // Numbers beyond a Double (1e400) are valid JSON that Foundation refuses.
        return fuzzCheck(FoundationJSON.hasUnrepresentableNumber(document), "JSONParser accepted a message Foundation refuses")
    }
    let (ref, command) = WebSocketMessage(bytes: bytes, document: document).read(maxEventBytes: maxEventBytes)
    // A repeated envelope field is read first-wins here and last-wins by Foundation: compare the
    // envelope only when each field is given once.
    let keys = if case .object(let members) = document { members.map(\.key) } else { [String]() }
    let fields = foundation as? [String: Any] ?? [:]
    let unique = Set(keys).count == keys.count
    if unique, let text = fields["ref"] as? String, (1...64).contains(text.count) {
        fuzzCheck(ref == text, "ref \(ref.debugDescription) vs \(text.debugDescription)")
    } else if unique {
        fuzzCheck(ref == nil, "ref \(ref.debugDescription) from \(fields["ref"] ?? "nothing")")
    }
    switch command {
    case .failure(let problem):
        fuzzCheck(problem.status == .unprocessableContent, "status \(problem.status)")
        checkPointers(problem.errors ?? [], in: foundation, "problem \(problem.detail)")
        checkAnswers(ref: ref, problem: problem)
    case .success(.subscribe(let topics)), .success(.unsubscribe(let topics)):
        fuzzCheck(!topics.isEmpty && topics.allSatisfy(Target.isValidName), "topics \(topics)")
        fuzzCheck(Set(fields.keys).isSubset(of: ["type", "ref", "topics"]), "fields \(fields.keys.sorted())")
        if unique {
            fuzzCheck(fields["topics"] as? [String] == topics, "topics \(topics) vs \(fields["topics"] ?? "nothing")")
            if case .success(.subscribe) = command {
                fuzzCheck(fields["type"] as? String == "subscribe", "type")
            } else {
                fuzzCheck(fields["type"] as? String == "unsubscribe", "type")
            }
        }
        checkAnswers(ref: ref, problem: nil)
    case .success(.publish(let decoded)):
        if unique { fuzzCheck(fields["type"] as? String == "publish", "type \(fields["type"] ?? "nothing")") }
        switch decoded {
        case .failure(.invalid(let errors)), .failure(.tooLarge(let errors)):
            // A batch answers what POST /events answers for its array: pointers into `events`.
            if keys.contains("events") {
                guard unique else { return }
                checkPointers(errors, in: fields["events"] as? [Any] ?? foundation, "publish")
            } else {
                checkPointers(errors, in: foundation, "publish")
            }
            checkAnswers(ref: ref, problem: Problem.publish(.invalid(errors)))
        case .failure(.malformed(let message)):
            fuzzCheck(false, "a parsed message is malformed: \(message)")
        case .success(let request):
            guard unique else { return }
            // The event fields without the envelope, as Foundation writes them.
            let again: Any = fields["events"] ?? fields.filter { $0.key != "type" && $0.key != "ref" }
            let body = Array(FoundationJSON.text(again).utf8)
            do {
                let direct = try PublishRequest.decode(body, limits: .init(maxEventBytes: maxEventBytes))
                fuzzCheck(sameEvents(request, direct) && direct.isBatch == request.isBatch,
                          "the message's events differ from the body \(String(decoding: body, as: UTF8.self))")
            } catch .invalid, .tooLarge {
                // Foundation writes data less compactly (`1.0` as `1`, `/` as `\/`): a size limit
                // can differ, nothing else.
                fuzzCheck(body.count > maxEventBytes, "the body \(String(decoding: body, as: UTF8.self)) is refused")
            } catch {
                fuzzCheck(false, "the body \(String(decoding: body, as: UTF8.self)) is refused: \(error)")
            }
            checkAnswers(ref: ref, problem: nil)
        }
    }
}
