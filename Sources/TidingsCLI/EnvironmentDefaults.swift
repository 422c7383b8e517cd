import Foundation
import ArgumentParser

/// Reads `TIDINGS_<FLAG>` for every flag of a command that the command line does not set.
///
/// The flags are found by reflecting over the command's properties, so a new option gets its
/// variable without being listed anywhere. Repeatable options take comma-separated values;
/// boolean flags take `1`/`true`/`yes`, and `0`/`false`/`no` for a flag that is on by default. `DATABASE_URL` also sets `--database-url`.
enum EnvironmentDefaults {
    struct Flag {
        var name: String
        var isBoolean: Bool
        var isRepeatable: Bool
    }

    static func flags(of command: any ParsableCommand.Type) -> [Flag] {
        Mirror(reflecting: command.init()).children.compactMap { child in
            guard let label = child.label, label.hasPrefix("_") else { return nil }
            let typeName = String(describing: type(of: child.value))
            let isFlag = typeName.hasPrefix("Flag<")
            guard isFlag || typeName.hasPrefix("Option<") else { return nil }
            return Flag(
                name: kebab(String(label.dropFirst())),
                isBoolean: isFlag,
                isRepeatable: typeName.hasPrefix("Option<Array<"))
        }
    }

    static func augment(_ arguments: [String], for command: any ParsableCommand.Type, environment: [String: String]) -> [String] {
        var result = arguments
        for flag in flags(of: command) {
            let option = "--" + flag.name
            let inverted = "--no-" + flag.name
            if arguments.contains(where: { $0 == option || $0.hasPrefix(option + "=") || $0 == inverted }) { continue }
            var value = environment[variable(for: flag.name)]
            if value == nil, flag.name == "database-url" { value = environment["DATABASE_URL"] }
            guard let value, !value.isEmpty else { continue }
            if flag.isBoolean {
                if ["1", "true", "yes", "on"].contains(value.lowercased()) {
                    result.append(option)
                } else if ["0", "false", "no", "off"].contains(value.lowercased()), hasInversion(flag.name, in: command) {
                    // A flag that is on by default (`--jwt-require-exp`) is turned off by its `--no-` form.
                    result.append(inverted)
                }
            } else if flag.isRepeatable {
                for part in value.split(separator: ",") { result.append(contentsOf: [option, String(part)]) }
            } else {
                result.append(contentsOf: [option, value])
            }
        }
        return result
    }

    /// True when `command` has `--no-<name>` (a flag declared with `inversion: .prefixedNo`).
    static func hasInversion(_ name: String, in command: any ParsableCommand.Type) -> Bool {
        command.helpMessage(columns: 10_000).contains("--no-\(name)")
    }

    static func variable(for flag: String) -> String {
        "TIDINGS_" + flag.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    static func kebab(_ camel: String) -> String {
        var out = ""
        for character in camel {
            if character.isUppercase {
                out.append("-")
                out.append(contentsOf: character.lowercased())
            } else {
                out.append(character)
            }
        }
        return out
    }
}
