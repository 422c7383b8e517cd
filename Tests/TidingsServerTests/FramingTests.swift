import Foundation
import NIOCore
import Testing
import TidingsCore
@testable import TidingsServer

@Suite("SSE framing")
struct FramingTests {
    private func frame(_ id: EventID?, _ type: String, _ data: String) -> String {
        String(buffer: SSEFrame.event(id: id, type: EventType(type)!, data: data))
    }

    private func parse(_ text: String) -> [SSEEvent] {
        var parser = SSEParser()
        return parser.feed(Array(text.utf8)).compactMap {
            if case .event(let event) = $0 { return event }
            return nil
        }
    }

    @Test func singleLineEvent() {
        #expect(frame(42, "order.updated", #"{"a":1}"#) == "id: 42\nevent: order.updated\ndata: {\"a\":1}\n\n")
    }

    @Test func ephemeralEventHasNoIdLine() {
        #expect(frame(nil, "notice", "1") == "event: notice\ndata: 1\n\n")
    }

    @Test func emptyDataIsOneEmptyDataLine() {
        let text = frame(1, "x", "")
        #expect(text == "id: 1\nevent: x\ndata: \n\n")
        #expect(parse(text) == [SSEEvent(id: "1", type: "x", data: "")])
    }

    @Test(arguments: [
        ("a\nb", "data: a\ndata: b\n"),
        ("a\rb", "data: a\ndata: b\n"),
        ("a\r\nb", "data: a\ndata: b\n"),
        ("a\n\nb", "data: a\ndata: \ndata: b\n"),
        ("a\n", "data: a\ndata: \n"),
        ("\r\n\r\n", "data: \ndata: \ndata: \n"),
    ])
    func lineBreaksInDataBecomeSeveralDataLines(data: String, expected: String) {
        let text = frame(7, "t", data)
        #expect(text == "id: 7\nevent: t\n" + expected + "\n")
        // A client reassembles the data with LF between lines: no line break escapes the event.
        let events = parse(text)
        #expect(events.count == 1)
        #expect(events.first?.data == data.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n"))
    }

    @Test func unicodeDataIsWrittenAsUTF8() {
        let data = #"{"text":"Grüße 東京 🚀"}"#
        let events = parse(frame(3, "msg", data))
        #expect(events == [SSEEvent(id: "3", type: "msg", data: data)])
    }

    @Test(arguments: ["", "has space", "new\nline", "cr\rhere", "nul\u{0}", String(repeating: "a", count: 65), "émoji", "semi;colon", "slash/x"])
    func hostileEventTypesAreRejected(type: String) {
        #expect(EventType(type) == nil)
    }

    @Test(arguments: ["a", "order.updated", "a:b-c_d.e", String(repeating: "a", count: 64)])
    func validEventTypesAreAccepted(type: String) {
        #expect(EventType(type)?.rawValue == type)
    }

    @Test(arguments: ["user:", "user:a b", "user:a\nb", "user:\u{0}", "topic:" + String(repeating: "x", count: 129), "group:1", "user", "user:ü"])
    func hostileTargetsAreRejected(text: String) {
        #expect(Target(text) == nil)
    }

    @Test func validTargetsRoundTrip() {
        for text in ["user:42", "user:a@b.c", "topic:news.eu", "topic:x:y-z_1", "topic:" + String(repeating: "x", count: 128)] {
            #expect(Target(text)?.description == text)
        }
    }

    @Test func preambleAndKeepAlive() {
        #expect(String(buffer: SSEFrame.preamble(retryMilliseconds: 2500)) == "retry: 2500\n: tidings\n\n")
        #expect(String(buffer: SSEFrame.keepAlive) == ": keep-alive\n\n")
    }
}

@Suite("SSE parser")
struct SSEParserTests {
    @Test(arguments: ["\n", "\r", "\r\n"])
    func everyLineEndingIsUnderstood(ending: String) {
        var parser = SSEParser()
        let text = ["id: 5", "event: e", "data: a", "data: b", "", ": c", "retry: 10", ""].joined(separator: ending)
        let messages = parser.feed(Array(text.utf8))
        #expect(messages == [.event(SSEEvent(id: "5", type: "e", data: "a\nb")), .comment("c"), .retry(10)])
    }

    @Test func crlfSplitAcrossChunks() {
        var parser = SSEParser()
        var messages = parser.feed(Array("data: x\r".utf8))
        messages += parser.feed(Array("\n\r\n".utf8))
        #expect(messages == [.event(SSEEvent(id: nil, type: "message", data: "x"))])
    }

    @Test func byteByByteFeedingGivesTheSameResult() {
        let text = "retry: 3000\n: tidings\n\nid: 1\nevent: t\ndata: {\"a\":\"b\"}\n\n"
        var whole = SSEParser()
        var bytewise = SSEParser()
        let expected = whole.feed(Array(text.utf8))
        var got: [SSEParser.Message] = []
        for byte in text.utf8 { got += bytewise.feed([byte]) }
        #expect(got == expected)
        #expect(expected.count == 3)
    }
}
