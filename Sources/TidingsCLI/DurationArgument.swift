import ArgumentParser
import TidingsServer

/// A duration on the command line: `500ms`, `30s`, `15m`, `24h`, `7d`, or bare seconds.
struct DurationArgument: ExpressibleByArgument, Sendable {
    var duration: Duration

    init(_ duration: Duration) {
        self.duration = duration
    }

    init?(argument: String) {
        guard let duration = DurationParser.parse(argument) else { return nil }
        self.duration = duration
    }

    var defaultValueDescription: String {
        let ms = duration.milliseconds
        if ms % 86_400_000 == 0 { return "\(ms / 86_400_000)d" }
        if ms % 3_600_000 == 0 { return "\(ms / 3_600_000)h" }
        if ms % 60_000 == 0 { return "\(ms / 60_000)m" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return "\(ms)ms"
    }
}

/// Exit codes of the contract.
enum ExitCodes {
    static let usage: Int32 = 64
    static let unavailable: Int32 = 69
    static let failure: Int32 = 1
}
