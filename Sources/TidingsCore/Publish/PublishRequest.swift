import Foundation

/// A publish request body decoded and validated: one event object or an array of them.
///
/// Validation is all-or-nothing: any error rejects the whole request, and every problem found
/// is reported with a JSON pointer into the body (`/event`, `/0/users/2`).
public struct PublishRequest: Sendable, Equatable {
    public var events: [NewEvent]
    /// True when the body was an array (the answer then lists `ids`).
    public var isBatch: Bool

    /// Limits applied while decoding.
    public struct Limits: Sendable {
        /// Most events in one array.
        public var maxBatch = 1_000
        /// Most bytes of one event's compact `data`.
        public var maxEventBytes = 64 * 1024
        /// Most targets of one event.
        public var maxTargets = 1_000

        public init(maxBatch: Int = 1_000, maxEventBytes: Int = 64 * 1024, maxTargets: Int = 1_000) {
            self.maxBatch = maxBatch
            self.maxEventBytes = maxEventBytes
            self.maxTargets = maxTargets
        }
    }

    /// Decodes a request body.
    public static func decode(_ body: [UInt8], limits: Limits = .init()) throws(PublishError) -> PublishRequest {
        let document: JSONValue
        do {
            document = try JSONParser.parse(body)
        } catch {
            throw .malformed(error.description)
        }
        var decoder = Decoder(body: body, limits: limits)
        switch document {
        case .array(let items):
            guard !items.isEmpty else {
                throw .invalid([.init(pointer: "", detail: "the array holds no event")])
            }
            guard items.count <= limits.maxBatch else {
                throw .invalid([.init(pointer: "", detail: "an array holds at most \(limits.maxBatch) events, this one has \(items.count)")])
            }
            var events: [NewEvent] = []
            events.reserveCapacity(items.count)
            for (offset, item) in items.enumerated() {
                if let event = decoder.event(item, pointer: "/\(offset)") { events.append(event) }
            }
            try decoder.finish()
            return PublishRequest(events: events, isBatch: true)
        default:
            let event = decoder.event(document, pointer: "")
            try decoder.finish()
            return PublishRequest(events: [event!], isBatch: false)
        }
    }

    /// Decodes a publish carried in a message with envelope fields of its own (a WebSocket's
    /// `{"type":"publish","ref":…}`): either the fields of one event beside the envelope, or an
    /// `events` array (then decoded exactly like a `POST /events` array body).
    /// - Parameters:
    ///   - document: `message` parsed (the caller already looked at its envelope).
    ///   - envelope: the message's own fields, which are not the event's.
    public static func decode(
        message: [UInt8], document: JSONValue, envelope: Set<String>, limits: Limits = .init()
    ) throws(PublishError) -> PublishRequest {
        guard case .object(let members) = document else {
            throw .invalid([.init(pointer: "", detail: "a message must be a JSON object, not \(document.kindName)")])
        }
        if let batch = members.first(where: { $0.key == "events" }) {
            guard case .array = batch.value else {
                throw .invalid([.init(pointer: "/events", detail: "must be an array of events, not \(batch.value.kindName)")])
            }
            // The contract answers a batch with "the same problem object POST /events answers":
            // its pointers are into the `events` array, as they would be into that body.
            return try decode(Array(message[batch.range]), limits: limits)
        }
        var decoder = Decoder(body: message, limits: limits, envelope: envelope)
        let event = decoder.event(document, pointer: "")
        try decoder.finish()
        return PublishRequest(events: [event!], isBatch: false)
    }

    private struct Decoder {
        let body: [UInt8]
        let limits: Limits
        /// Top-level fields that belong to the message around the event.
        var envelope: Set<String> = []
        var problems: [PublishError.FieldError] = []
        var tooLarge: [PublishError.FieldError] = []

        init(body: [UInt8], limits: Limits, envelope: Set<String> = []) {
            self.body = body
            self.limits = limits
            self.envelope = envelope
        }

        func finish() throws(PublishError) {
            if !tooLarge.isEmpty { throw .tooLarge(tooLarge) }
            if !problems.isEmpty { throw .invalid(problems) }
        }

        mutating func event(_ value: JSONValue, pointer: String) -> NewEvent? {
            guard case .object(let members) = value else {
                problems.append(.init(pointer: pointer, detail: "an event must be a JSON object, not \(value.kindName)"))
                return nil
            }
            let before = problems.count + tooLarge.count
            var type: EventType?
            var data: String?
            var targets: [Target] = []
            var seen = Set<Target>()
            var key: String?
            var sawType = false
            var sawData = false
            var seenKeys = Set<String>()
            var targetFieldFailed = false

            func add(_ target: Target) {
                if seen.insert(target).inserted { targets.append(target) }
            }

            // A field given twice is refused once, and neither value is looked into: readers
            // differ on which one counts (Foundation keeps the last), so a pointer into either
            // may name a place another reader cannot find.
            var twice = Set<String>()
            for member in members where !seenKeys.insert(member.key).inserted { twice.insert(member.key) }
            seenKeys.removeAll()
            for member in members {
                if pointer.isEmpty, envelope.contains(member.key) { continue }
                let at = pointer + "/" + escapePointer(member.key)
                if twice.contains(member.key) {
                    if !seenKeys.insert(member.key).inserted {
                        problems.append(.init(pointer: at, detail: "the field appears twice"))
                    }
                    // Present, if not valid: no "is required" or "needs a target" besides.
                    switch member.key {
                    case "event": sawType = true
                    case "data": sawData = true
                    case "user", "users", "topic", "topics": targetFieldFailed = true
                    default: break
                    }
                    continue
                }
                switch member.key {
                case "event":
                    sawType = true
                    guard let text = member.value.stringValue else {
                        problems.append(.init(pointer: at, detail: "must be a string, not \(member.value.kindName)"))
                        continue
                    }
                    guard let valid = EventType(text) else {
                        problems.append(.init(pointer: at, detail: "must be 1–64 characters of A–Z, a–z, 0–9, '.', '_', ':' or '-'"))
                        continue
                    }
                    type = valid
                case "data":
                    sawData = true
                    let compact = JSONParser.compact(body[member.range])
                    if compact.utf8.count > limits.maxEventBytes {
                        tooLarge.append(.init(pointer: at, detail: "data is \(compact.utf8.count) bytes, more than the \(limits.maxEventBytes) allowed"))
                        continue
                    }
                    data = compact
                case "user", "topic":
                    targetFieldFailed = true  // cleared below when the field is valid
                    guard let name = member.value.stringValue else {
                        problems.append(.init(pointer: at, detail: "must be a string, not \(member.value.kindName)"))
                        continue
                    }
                    if let target = makeTarget(kind: member.key, name: name, pointer: at) {
                        add(target)
                        targetFieldFailed = false
                    }
                case "users", "topics":
                    let failuresBefore = problems.count
                    defer { if problems.count > failuresBefore { targetFieldFailed = true } }
                    guard case .array(let names) = member.value else {
                        problems.append(.init(pointer: at, detail: "must be an array of strings, not \(member.value.kindName)"))
                        continue
                    }
                    let kind = member.key == "users" ? "user" : "topic"
                    for (offset, element) in names.enumerated() {
                        guard let name = element.stringValue else {
                            problems.append(.init(pointer: "\(at)/\(offset)", detail: "must be a string, not \(element.kindName)"))
                            continue
                        }
                        if let target = makeTarget(kind: kind, name: name, pointer: "\(at)/\(offset)") { add(target) }
                    }
                case "idempotency_key":
                    guard let text = member.value.stringValue else {
                        problems.append(.init(pointer: at, detail: "must be a string, not \(member.value.kindName)"))
                        continue
                    }
                    // Code points, as JSON Schema's maxLength counts them (and at most 512 bytes).
                    let count = text.unicodeScalars.count
                    guard (1...128).contains(count) else {
                        problems.append(.init(pointer: at, detail: "must be 1–128 characters"))
                        continue
                    }
                    // PostgreSQL text cannot hold NUL: such a key could never be stored.
                    guard !text.utf8.contains(0) else {
                        problems.append(.init(pointer: at, detail: "must not contain NUL (\\u0000)"))
                        continue
                    }
                    key = text
                default:
                    problems.append(.init(pointer: at, detail: "unknown field; an event has event, data, user, users, topic, topics and idempotency_key"))
                }
            }
            if !sawType { problems.append(.init(pointer: pointer + "/event", detail: "is required")) }
            if !sawData { problems.append(.init(pointer: pointer + "/data", detail: "is required (use null for none)")) }
            if targets.isEmpty, !targetFieldFailed {
                problems.append(.init(pointer: pointer, detail: "needs at least one target: user, users, topic or topics"))
            }
            if targets.count > limits.maxTargets {
                problems.append(.init(pointer: pointer, detail: "an event has at most \(limits.maxTargets) targets, this one has \(targets.count)"))
            }
            guard problems.count + tooLarge.count == before, let type, let data else { return nil }
            return NewEvent(targets: targets, type: type, data: data, idempotencyKey: key)
        }

        mutating func makeTarget(kind: String, name: String, pointer: String) -> Target? {
            guard Target.isValidName(name) else {
                problems.append(.init(pointer: pointer, detail: "a \(kind) must be 1–128 characters of A–Z, a–z, 0–9, '.', '_', '@', ':' or '-'"))
                return nil
            }
            return kind == "user" ? .user(name) : .topic(name)
        }
    }
}

/// JSON pointer escaping (RFC 6901): `~` → `~0`, `/` → `~1`.
package func escapePointer(_ token: String) -> String {
    guard token.utf8.contains(where: { $0 == UInt8(ascii: "~") || $0 == UInt8(ascii: "/") }) else { return token }
    return token.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1")
}

/// Why a publish request was rejected; nothing of it is stored.
public enum PublishError: Error, Sendable, Equatable {
    /// One problem with one field, located by a JSON pointer into the request body.
    public struct FieldError: Sendable, Equatable, Codable {
        public var pointer: String
        public var detail: String

        public init(pointer: String, detail: String) {
            self.pointer = pointer
            self.detail = detail
        }
    }

    /// The body is not JSON (400).
    case malformed(String)
    /// An event's data is larger than allowed (413).
    case tooLarge([FieldError])
    /// Fields are missing or invalid (422).
    case invalid([FieldError])

}
