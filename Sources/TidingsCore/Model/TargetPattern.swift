/// A permission pattern: an exact name, or a prefix ending in `*` (`news.*`, `user:*`, `*`).
///
/// Used for a subscriber token's `topics` claim (matched against topic names) and a publisher
/// token's `publish` claim (matched against full targets such as `topic:news.eu`).
public struct TargetPattern: Hashable, Sendable, CustomStringConvertible {
    public let text: String
    private let isPrefix: Bool
    private let stem: Substring

    public init(_ text: String) {
        self.text = text
        if text.hasSuffix("*") {
            self.isPrefix = true
            self.stem = text.dropLast()
        } else {
            self.isPrefix = false
            self.stem = Substring(text)
        }
    }

    /// Byte for byte: Swift's string comparison takes canonically equivalent text as equal (the
    /// Kelvin sign U+212A as `K`), and a claim admits only what it spells.
    public func matches(_ candidate: String) -> Bool {
        isPrefix ? candidate.utf8.starts(with: stem.utf8) : candidate.utf8.elementsEqual(text.utf8)
    }

    public var description: String { text }
}

extension Sequence where Element == TargetPattern {
    /// True when any pattern matches.
    public func anyMatches(_ candidate: String) -> Bool {
        contains { $0.matches(candidate) }
    }
}
