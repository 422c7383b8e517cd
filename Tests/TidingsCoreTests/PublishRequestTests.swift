import Testing
@testable import TidingsCore

@Suite("JSON parser")
struct JSONParserTests {
    @Test(arguments: [
        "", "{", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "-", "+1", "tru", "nul", "\"\u{01}\"", "\"\\x\"",
        "\"\\ud800\"", "{\"a\" 1}", "[1 2]", "1 2", "NaN", "'a'", "{a:1}",
    ])
    func invalidDocumentsAreRejected(text: String) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(text.utf8)) }
    }

    @Test func invalidUTF8IsRejected() {
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xFF, 0xFE, 0x22]) }
    }

    @Test func deepNestingIsRejectedWithoutCrashing() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(Array(deep.utf8)) }
    }

    @Test func valuesAreParsed() throws {
        let value = try JSONParser.parse(Array(#" {"a": [1, -2.5e3, true, false, null, "x\"\u00e9\ud83d\ude80"]} "#.utf8))
        guard case .object(let members) = value, case .array(let items) = members[0].value else {
            Issue.record("not an object with an array")
            return
        }
        #expect(items == [.number("1"), .number("-2.5e3"), .bool(true), .bool(false), .null, .string("x\"é🚀")])
    }

    @Test func compactRemovesOnlyWhitespaceOutsideStrings() throws {
        let text = "{ \"a b\" : [ 1 ,\n 2.50 ] , \"c\" : \"x  y\\\" z\" }"
        _ = try JSONParser.parse(Array(text.utf8))
        #expect(JSONParser.compact(Array(text.utf8)[...]) == #"{"a b":[1,2.50],"c":"x  y\" z"}"#)
    }
}

@Suite("Publish request validation")
struct PublishRequestTests {
    private func decode(_ text: String, limits: PublishRequest.Limits = .init()) throws(PublishError) -> PublishRequest {
        try PublishRequest.decode(Array(text.utf8), limits: limits)
    }

    private func invalid(_ text: String, limits: PublishRequest.Limits = .init()) -> [PublishError.FieldError] {
        do {
            _ = try decode(text, limits: limits)
        } catch .invalid(let errors) {
            return errors
        } catch {
            Issue.record("expected invalid, got \(error)")
        }
        return []
    }

    @Test func singleEventWithEveryTargetKind() throws {
        let request = try decode(#"{"event":"a.b","data":{"x": 1},"user":"42","users":["42","7"],"topic":"news","topics":["t1"],"idempotency_key":"k1"}"#)
        #expect(!request.isBatch)
        #expect(request.events == [
            NewEvent(targets: [.user("42"), .user("7"), .topic("news"), .topic("t1")], type: EventType("a.b")!, data: #"{"x":1}"#, idempotencyKey: "k1")
        ])
    }

    /// The limit counts distinct targets: a repeated name is one target (what the OpenAPI
    /// document says; schemathesis found the document's `maxItems` on the arrays was wrong).
    @Test func theTargetLimitCountsDistinctTargets() throws {
        let repeated = Array(repeating: "\"0\"", count: 1_500).joined(separator: ",")
        let request = try decode(#"{"event":"e","data":null,"topics":["# + repeated + #"]}"#)
        #expect(request.events[0].targets == [.topic("0")])
        let many = (0...1_000).map { "\"t\($0)\"" }.joined(separator: ",")
        let errors = invalid(#"{"event":"e","data":null,"topics":["# + many + #"]}"#)
        #expect(errors.map(\.detail) == ["an event has at most 1000 targets, this one has 1001"])
    }

    @Test func dataKeepsNumbersExactly() throws {
        let request = try decode(#"{"event":"n","user":"1","data":[12345678901234567890123, 1.000, -0e-0]}"#)
        #expect(request.events[0].data == "[12345678901234567890123,1.000,-0e-0]")
    }

    @Test func stringsWithEscapedLineBreaksStayOnOneLine() throws {
        let request = try decode(#"{"event":"n","user":"1","data":"line1\nline2\r\u0000"}"#)
        #expect(!request.events[0].data.contains("\n"))
        #expect(!request.events[0].data.contains("\r"))
        #expect(!request.events[0].data.contains("\u{0}"))
    }

    @Test func batchKeepsOrder() throws {
        let request = try decode(#"[{"event":"a","data":1,"user":"u"},{"event":"b","data":2,"topic":"t"}]"#)
        #expect(request.isBatch)
        #expect(request.events.map(\.type.rawValue) == ["a", "b"])
    }

    @Test func malformedJSONIs400() {
        #expect(throws: PublishError.self) { try decode("{nope") }
        do { _ = try decode("{nope") } catch { if case .malformed = error {} else { Issue.record("\(error)") } }
    }

    @Test func missingFieldsArePointedAt() {
        #expect(invalid(#"{"user":"1"}"#) == [
            .init(pointer: "/event", detail: "is required"),
            .init(pointer: "/data", detail: "is required (use null for none)"),
        ])
        #expect(invalid(#"{"event":"e","data":1}"#).map(\.pointer) == [""])
    }

    @Test func hostileValuesArePointedAt() {
        let errors = invalid(#"[{"event":"ok","data":1,"user":"1"},{"event":"bad\nname","data":1,"users":["ok","no pe"],"idempotency_key":""}]"#)
        #expect(errors.map(\.pointer) == ["/1/event", "/1/users/1", "/1/idempotency_key"])
    }

    /// An idempotency key's 1–128 characters are Unicode code points, as the API description's
    /// `maxLength` counts them: counted as grapheme clusters, one letter with 1,000 combining
    /// accents passed as a single character, and a key's bytes had no bound but the body's.
    /// A field given twice is refused as such, and neither value is looked into: a pointer into
    /// one of them would name a place a reader that keeps the other (Foundation keeps the last)
    /// cannot find. (Found by `Fuzz/PublishBody`.)
    @Test func aFieldGivenTwiceIsPointedAtAndNeitherValueIsLookedInto() {
        #expect(invalid(#"{"users":["a","b","bad!"],"users":["c"],"event":"e","data":1}"#).map(\.pointer) == ["/users"])
        #expect(invalid(#"{"users":["c"],"users":[1,2,3],"event":"e","data":1}"#).map(\.pointer) == ["/users"])
        #expect(invalid(#"{"user":"a","event":"bad event","event":"e","data":1}"#).map(\.pointer) == ["/event"])
        #expect(invalid(#"[{"user":"a","event":"e","data":1,"idempotency_key":"","idempotency_key":"k"}]"#).map(\.pointer) == ["/0/idempotency_key"])
    }

    @Test func idempotencyKeyLengthCountsCodePoints() throws {
        let accents = String(repeating: "\u{301}", count: 1_000)
        #expect(invalid(#"{"event":"e","data":1,"user":"1","idempotency_key":"e\#(accents)"}"#).map(\.pointer) == ["/idempotency_key"])
        let longest = String(repeating: "\u{e9}", count: 128)  // é: 128 code points, 256 bytes
        #expect(try decode(#"{"event":"e","data":1,"user":"1","idempotency_key":"\#(longest)"}"#).events[0].idempotencyKey == longest)
        #expect(invalid(#"{"event":"e","data":1,"user":"1","idempotency_key":"\#(longest)a"}"#).map(\.pointer) == ["/idempotency_key"])
    }

    @Test func wrongTypesAndUnknownFields() {
        let errors = invalid(#"{"event":1,"data":null,"user":["x"],"topics":"t","extra":true}"#)
        #expect(errors.map(\.pointer) == ["/event", "/user", "/topics", "/extra"])
    }

    @Test func notAnObject() {
        #expect(invalid("42").map(\.pointer) == [""])
        #expect(invalid("[1]").map(\.pointer) == ["/0"])
        #expect(invalid("[]").map(\.pointer) == [""])
    }

    @Test func batchLimit() {
        let item = #"{"event":"e","data":1,"user":"u"}"#
        let body = "[" + Array(repeating: item, count: 4).joined(separator: ",") + "]"
        #expect(invalid(body, limits: .init(maxBatch: 3)).count == 1)
        #expect((try? decode(body, limits: .init(maxBatch: 4)))?.events.count == 4)
    }

    @Test func oversizedDataIs413() {
        let body = #"{"event":"e","user":"u","data":"\#(String(repeating: "x", count: 100))"}"#
        do {
            _ = try decode(body, limits: .init(maxEventBytes: 50))
            Issue.record("accepted")
        } catch .tooLarge(let errors) {
            #expect(errors.map(\.pointer) == ["/data"])
        } catch {
            Issue.record("\(error)")
        }
        #expect((try? decode(body, limits: .init(maxEventBytes: 102))) != nil)
    }

    @Test func pointerTokensAreEscaped() {
        #expect(invalid(#"{"event":"e","data":1,"user":"u","a/b~c":1}"#).map(\.pointer) == ["/a~1b~0c"])
    }
}
