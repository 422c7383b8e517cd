import Foundation

/// What `--print-config` and config-file errors never show: the one list of secret options,
/// and the password inside any URL or conninfo value.
enum Secrets {
    /// Options whose whole value is a secret.
    static let options: Set<String> = ["jwt-secret", "publish-key"]

    static let mask = "********"

    static func isSecret(_ option: String) -> Bool {
        options.contains(option)
    }

    /// `value` as it may be shown for `option`.
    static func masked(_ value: String, option: String) -> String {
        if isSecret(option) { return mask }
        return maskingPasswords(in: value)
    }

    /// `postgresql://user:pw@host/db` → `postgresql://user:********@host/db`, and
    /// `host=db password=pw` (or `?password=pw`) → `… password=********`.
    static func maskingPasswords(in value: String) -> String {
        var text = value
        if let scheme = text.range(of: "://"), let at = text[scheme.upperBound...].firstIndex(of: "@"),
            let colon = text[scheme.upperBound..<at].firstIndex(of: ":")
        {
            text.replaceSubrange(text.index(after: colon)..<at, with: mask)
        }
        if let password = text.range(of: #"password\s*=\s*('([^'\\]|\\.)*'|\S+)"#, options: .regularExpression) {
            text.replaceSubrange(password, with: "password=" + mask)
        }
        return text
    }
}
