import Foundation

/// Parses durations written `500ms`, `30s`, `15m`, `24h`, `7d`; a bare number means seconds.
public enum DurationParser {
    public static func parse(_ text: String) -> Duration? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            let number = trimmed.dropLast(suffix.count)
            // "ms" ends in "s": only accept "s" when what remains is a number.
            guard let value = Double(number), value >= 0, value.isFinite else { continue }
            return milliseconds(value * scale * 1000)
        }
        guard let value = Double(trimmed), value >= 0, value.isFinite else { return nil }
        return milliseconds(value * 1000)
    }

    /// `nil` for a number of milliseconds no `Duration` holds (converting it would trap).
    private static func milliseconds(_ value: Double) -> Duration? {
        let rounded = value.rounded()
        guard rounded < Double(Int64.max) else { return nil }
        return .milliseconds(Int64(rounded))
    }
}

extension Duration {
    /// Whole milliseconds.
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
