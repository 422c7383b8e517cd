// Fuzz target: the publish body decoder and validator (PublishRequest, JSONParser).
//
// - A body it accepts is JSON Foundation reads too, and every decoded field is what Foundation
//   reads there: the type, the key, the targets, and `data` as the same JSON value. The event
//   re-encoded by the gateway's own encoders (the long-poll object, the WebSocket frame, a
//   publish body) is JSON Foundation reads back to those values, and the re-encoded body decodes
//   to the same request.
// - A body it rejects for its fields names each problem with a JSON pointer that locates a value
//   of the body (or a missing member of an object in it); a malformed one says at which byte.
import Foundation
import FuzzSupport
import NIOCore
import TidingsCore
@testable import TidingsServer

/// Small limits, so that short inputs reach them.
let limits = PublishRequest.Limits(maxBatch: 8, maxEventBytes: 1024, maxTargets: 8)

func check(_ body: [UInt8]) {
    let foundation = FoundationJSON.parse(body)
    // Numbers beyond a Double (1e400) are valid JSON that Foundation refuses: nothing to compare.
    if foundation == nil, let document = try? JSONParser.parse(body), FoundationJSON.hasUnrepresentableNumber(document) { return }
    let request: PublishRequest
    do {
        request = try PublishRequest.decode(body, limits: limits)
    } catch {
        checkRejection(error, body: body, foundation: foundation)
        return
    }
    guard let foundation else {
        return fuzzCheck(false, "accepted a body Foundation refuses")
    }
    let objects = request.isBatch ? (foundation as? [Any] ?? []) : [foundation]
    fuzzCheck(objects.count == request.events.count, "\(request.events.count) events from \(objects.count) objects")
    for (index, (event, object)) in zip(request.events, objects).enumerated() {
        guard let original = object as? [String: Any] else {
            return fuzzCheck(false, "an event accepted from a non-object")
        }
        checkFields(event, original)
        let stored = Event(id: EventID(index + 1), targets: event.targets, type: event.type, data: event.data, createdAt: Date())
        checkEncoded(PollEventEncoding.encode(stored), of: stored, original: original, frame: false)
        checkEncoded(WebSocketEventEncoding.encode(stored), of: stored, original: original, frame: true)
    }
    // The request as a body again: the same request (targets compared as sets: a re-encoded
    // body lists users before topics).
    let again = reencode(request)
    do {
        let decoded = try PublishRequest.decode(Array(again.utf8), limits: limits)
        fuzzCheck(decoded.isBatch == request.isBatch && decoded.events.count == request.events.count, "re-encoded \(again) decodes differently")
        for (a, b) in zip(decoded.events, request.events) {
            fuzzCheck(a.type == b.type && a.data == b.data && a.idempotencyKey == b.idempotencyKey && Set(a.targets) == Set(b.targets),
                      "re-encoded \(again) decodes to \(a), not \(b)")
        }
    } catch {
        fuzzCheck(false, "the re-encoded body \(again) is rejected: \(error)")
    }
}

/// A rejection says where: a byte offset for malformed JSON, else pointers into the body.
func checkRejection(_ error: PublishError, body: [UInt8], foundation: Any?) {
    switch error {
    case .malformed(let message):
        let offset = message.split(separator: " ").last.flatMap { Int($0) }
        fuzzCheck(message.contains(" at byte ") && offset.map { $0 <= body.count } == true, "malformed without a byte offset: \(message)")
    case .invalid(let errors), .tooLarge(let errors):
        fuzzCheck(!errors.isEmpty, "a rejection without errors")
        guard let foundation else {
            return fuzzCheck(false, "JSONParser accepted a document Foundation refuses")
        }
        for error in errors {
            fuzzCheck(FoundationJSON.locates(error.pointer, in: foundation), "pointer \(error.pointer) (\(error.detail)) locates nothing")
        }
    }
}

/// The decoded event says what Foundation reads in the original object.
func checkFields(_ event: NewEvent, _ original: [String: Any]) {
    fuzzCheck(original["event"] as? String == event.type.rawValue, "event type \(event.type) vs \(original["event"] ?? "nothing")")
    fuzzCheck(original["idempotency_key"] as? String == event.idempotencyKey, "idempotency key \(event.idempotencyKey ?? "none")")
    fuzzCheck(!event.data.utf8.contains(where: { $0 == 0x0A || $0 == 0x0D }), "data is not one line: \(event.data)")
    fuzzCheck(FoundationJSON.equal(FoundationJSON.parse(Array(event.data.utf8)), original["data"]),
              "data \(event.data) is not the body's \(original["data"] ?? "nothing")")
    var expected = Set<Target>()
    if let user = original["user"] as? String { expected.insert(.user(user)) }
    if let topic = original["topic"] as? String { expected.insert(.topic(topic)) }
    for user in original["users"] as? [String] ?? [] { expected.insert(.user(user)) }
    for topic in original["topics"] as? [String] ?? [] { expected.insert(.topic(topic)) }
    fuzzCheck(Set(event.targets) == expected && Set(event.targets).count == event.targets.count,
              "targets \(event.targets) vs \(expected)")
    fuzzCheck(!event.targets.isEmpty && event.targets.count <= limits.maxTargets, "\(event.targets.count) targets")
}

/// An encoder's output is JSON that Foundation reads as the event.
func checkEncoded(_ buffer: ByteBuffer, of event: Event, original: [String: Any], frame: Bool) {
    var bytes = Array(buffer.readableBytesView)
    if frame {
        // A final unmasked text frame: 0x81, then the length in 1, 3 or 9 bytes.
        fuzzCheck(bytes.count >= 2 && bytes[0] == 0x81, "not a text frame")
        let header = switch bytes[1] { case 126: 4; case 127: 10; default: 2 }
        let length = switch bytes[1] {
        case 126: Int(bytes[2]) << 8 | Int(bytes[3])
        case 127: bytes[2..<10].reduce(0) { $0 << 8 | Int($1) }
        default: Int(bytes[1])
        }
        fuzzCheck(bytes.count == header + length, "frame length \(length), payload \(bytes.count - header)")
        bytes = Array(bytes[header...])
    }
    guard let object = FoundationJSON.parse(bytes) as? [String: Any] else {
        return fuzzCheck(false, "the encoding \(String(decoding: bytes, as: UTF8.self)) is not a JSON object")
    }
    fuzzCheck(object["id"] as? String == event.id.map(String.init), "id")
    fuzzCheck(object["event"] as? String == event.type.rawValue, "event")
    fuzzCheck(FoundationJSON.equal(object["data"], original["data"]), "data \(object["data"] ?? "nothing") vs \(original["data"] ?? "nothing")")
    if frame { fuzzCheck(object["type"] as? String == "event", "type") }
}

/// A publish body for `request`, strings written by Foundation, `data` as decoded.
func reencode(_ request: PublishRequest) -> String {
    let objects = request.events.map { event in
        var fields = [#""event":\#(FoundationJSON.text(event.type.rawValue))"#, #""data":\#(event.data)"#]
        let users = event.targets.compactMap { if case .user(let name) = $0 { name } else { nil } }
        let topics = event.targets.compactMap { if case .topic(let name) = $0 { name } else { nil } }
        if !users.isEmpty { fields.append(#""users":\#(FoundationJSON.text(users))"#) }
        if !topics.isEmpty { fields.append(#""topics":\#(FoundationJSON.text(topics))"#) }
        if let key = event.idempotencyKey { fields.append(#""idempotency_key":\#(FoundationJSON.text(key))"#) }
        return "{" + fields.joined(separator: ",") + "}"
    }
    return request.isBatch ? "[" + objects.joined(separator: ",") + "]" : objects[0]
}
