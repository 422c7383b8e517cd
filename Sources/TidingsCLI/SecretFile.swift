import Foundation
import TidingsServer

/// Secrets read from files (`--jwt-secret-file`, `--publish-key-file`), so that they show in
/// neither `ps` nor the environment.
enum SecretFile {
    /// The whole file, without its trailing line break.
    static func read(_ path: String, flag: String) throws(ConfigurationError) -> String {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError("\(flag): cannot read \(path)")
        }
        var trimmed = Substring(text)
        while let last = trimmed.last, last.isNewline { trimmed.removeLast() }
        guard !trimmed.isEmpty else { throw ConfigurationError("\(flag): \(path) is empty") }
        return String(trimmed)
    }

    /// One value a line; blank lines and lines starting with `#` are skipped.
    static func lines(_ path: String, flag: String) throws(ConfigurationError) -> [String] {
        let values = try read(path, flag: flag).split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
        guard !values.isEmpty else { throw ConfigurationError("\(flag): \(path) holds no key") }
        return values
    }

    /// The value of `flag` or of `flag-file`; both at once is a usage error.
    static func choose(_ value: String?, file: String?, flag: String) throws(ConfigurationError) -> String? {
        guard let file else { return value }
        guard value == nil else { throw ConfigurationError("give \(flag) or \(flag)-file, not both") }
        return try read(file, flag: flag + "-file")
    }
}
