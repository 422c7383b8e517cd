import Testing
import TidingsServer

@Suite struct DurationParserTests {
    @Test func writtenDurations() {
        #expect(DurationParser.parse("500ms") == .milliseconds(500))
        #expect(DurationParser.parse("30s") == .seconds(30))
        #expect(DurationParser.parse("15m") == .seconds(900))
        #expect(DurationParser.parse("1.5h") == .seconds(5400))
        #expect(DurationParser.parse("7d") == .seconds(604_800))
        #expect(DurationParser.parse("25") == .seconds(25))
    }

    /// A number too large for a `Duration` in milliseconds is not a duration (it trapped).
    @Test func durationsBeyondAnyClockAreRefused() {
        for text in ["1e300s", "1e19", "99999999999999999999d", "9223372036854776s"] {
            #expect(DurationParser.parse(text) == nil, "\(text)")
        }
    }
}
