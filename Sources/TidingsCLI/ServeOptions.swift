import ArgumentParser

/// The options of a command as data: name, kind, argument type and current value, found by
/// reflecting over the command's properties so that a new option needs no listing.
enum ServeOptions {
    struct Option {
        var name: String
        var isBoolean: Bool
        var isRepeatable: Bool
        /// A boolean flag that also has `--no-<name>`.
        var hasInversion: Bool
        /// The type ArgumentParser converts one argument to (`Int`, `DurationArgument`, …).
        var argumentType: Any.Type?

        /// Whether ArgumentParser would accept `text` as this option's value.
        func accepts(_ text: String) -> Bool {
            guard let type = argumentType as? any ExpressibleByArgument.Type else { return true }
            return type.init(argument: text) != nil
        }
    }

    static func reflect(_ command: any ParsableCommand.Type) -> [Option] {
        let help = command.helpMessage(columns: 10_000)
        let wrappers = Dictionary(
            Mirror(reflecting: command.init()).children.compactMap { child in
                child.label.map { (EnvironmentDefaults.kebab(String($0.dropFirst())), child.value) }
            },
            uniquingKeysWith: { first, _ in first })
        return EnvironmentDefaults.flags(of: command).map { flag in
            let wrapper = wrappers[flag.name] as? any ParsedArgument
            return Option(
                name: flag.name,
                isBoolean: flag.isBoolean,
                isRepeatable: flag.isRepeatable,
                hasInversion: help.contains("--[no-]\(flag.name)") || help.contains("--no-\(flag.name)"),
                argumentType: wrapper.map { elementType(of: type(of: $0).valueType) })
        }
    }

    /// Each option's value in a parsed command, by name; nil for an optional that is unset.
    static func values(of command: any ParsableCommand) -> [String: Any?] {
        var values: [String: Any?] = [:]
        for child in Mirror(reflecting: command).children {
            guard let label = child.label, let wrapper = child.value as? any ParsedArgument else { continue }
            values[EnvironmentDefaults.kebab(String(label.dropFirst()))] = wrapper.parsedValue
        }
        return values
    }

    /// For `x-file` the option `x`, for `x` the option `x-file`, when both exist.
    static func sibling(of name: String, in options: [Option]) -> String? {
        let other = name.hasSuffix("-file") ? String(name.dropLast(5)) : name + "-file"
        return options.contains { $0.name == other } ? other : nil
    }

    static func elementType(of type: Any.Type) -> Any.Type {
        (type as? any ArgumentContainer.Type).map { elementType(of: $0.elementType) } ?? type
    }
}

/// An ArgumentParser property wrapper whose value type and parsed value reflection can reach.
protocol ParsedArgument {
    static var valueType: Any.Type { get }
    var parsedValue: Any? { get }
}

extension Option: ParsedArgument {
    static var valueType: Any.Type { Value.self }
    var parsedValue: Any? { unwrap(wrappedValue) }
}

extension Flag: ParsedArgument {
    static var valueType: Any.Type { Value.self }
    var parsedValue: Any? { unwrap(wrappedValue) }
}

/// `Optional` and `Array` around an argument type.
protocol ArgumentContainer {
    static var elementType: Any.Type { get }
    var optionalValue: Any? { get }
}

extension Optional: ArgumentContainer {
    static var elementType: Any.Type { Wrapped.self }
    var optionalValue: Any? { self.map { unwrap($0) } ?? nil }
}

extension Array: ArgumentContainer {
    static var elementType: Any.Type { Element.self }
    var optionalValue: Any? { self }
}

private func unwrap(_ value: Any) -> Any? {
    if let container = value as? any ArgumentContainer { return container.optionalValue }
    return value
}
