import ArgumentParser
import Configuration
import Foundation
import SystemPackage

/// The layers of `tidings serve`'s settings: command line, then environment, then the `--config`
/// file, then the defaults the options declare.
///
/// Every option of the command is a file key under its long name (`"port"`, `"jwt-secret"`,
/// `"publish-key"`), found by reflection like its environment variable, so a new option needs no
/// listing here. The file is read by swift-configuration's `FileProvider<JSONSnapshot>`; each
/// value is checked against the option's own argument type before it is handed to
/// ArgumentParser, so a bad value or an unknown key fails at start naming the key.
struct ConfigLayers {
    /// Where an option's value came from, highest precedence first.
    enum Source: String, Sendable {
        case flag
        case environment
        case file = "config file"
        case `default`
    }

    /// The arguments ArgumentParser parses: the command line plus what the lower layers add.
    var arguments: [String]
    /// The source of every option that is not at its default.
    var sources: [String: Source]

    /// Options that only steer this layering and mean nothing inside a config file.
    static let notInFile: Set<String> = ["config", "print-config"]

    static func resolve(
        _ commandLine: [String], for command: any ParsableCommand.Type, environment: [String: String]
    ) async throws(ConfigFileError) -> ConfigLayers {
        let options = ServeOptions.reflect(command)
        var sources: [String: Source] = [:]
        for option in options where isGiven(option.name, in: commandLine) { sources[option.name] = .flag }
        var arguments = EnvironmentDefaults.augment(commandLine, for: command, environment: environment)
        for option in options where sources[option.name] == nil && isGiven(option.name, in: arguments) {
            sources[option.name] = .environment
        }
        guard let path = value(of: "config", in: arguments) else {
            return ConfigLayers(arguments: arguments, sources: sources)
        }
        let file = try await ConfigFile(path: path, options: options)
        for option in options where sources[option.name] == nil {
            // `x` and `x-file` are two spellings of one setting: a higher layer's either wins.
            if let sibling = ServeOptions.sibling(of: option.name, in: options), sources[sibling] != nil { continue }
            guard let values = try file.arguments(for: option) else { continue }
            arguments.append(contentsOf: values)
            sources[option.name] = .file
        }
        return ConfigLayers(arguments: arguments, sources: sources)
    }

    static func isGiven(_ name: String, in arguments: [String]) -> Bool {
        arguments.contains { $0 == "--" + name || $0.hasPrefix("--\(name)=") || $0 == "--no-" + name }
    }

    /// The last value given to `--name` (as `--name value` or `--name=value`).
    static func value(of name: String, in arguments: [String]) -> String? {
        var found: String?
        var index = arguments.startIndex
        while index < arguments.endIndex {
            let argument = arguments[index]
            if argument == "--" + name, index + 1 < arguments.endIndex {
                found = arguments[index + 1]
                index += 1
            } else if argument.hasPrefix("--\(name)=") {
                found = String(argument.dropFirst(name.count + 3))
            }
            index += 1
        }
        return found
    }
}

/// A `--config` file that cannot be used, naming the file and the key.
struct ConfigFileError: Error, CustomStringConvertible {
    var description: String
}

/// One `--config` file, read through swift-configuration.
struct ConfigFile {
    let path: String
    let snapshot: any ConfigSnapshot
    /// The keys the file sets (a `null` value counts as unset).
    let keys: Set<String>
    /// The keys set to `true`/`false` or a list of them: JSONSnapshot reads a bool as a number
    /// and a number as a bool, so `"port": true` would be port 1 without this.
    let booleanKeys: Set<String>

    init(path: String, options: [ServeOptions.Option]) async throws(ConfigFileError) {
        self.path = path
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigFileError(description: "--config: cannot read \(path)")
        }
        // The file's own keys, to refuse the unknown ones; FileProvider only answers lookups.
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw ConfigFileError(description: "--config \(path): not a JSON object")
        }
        let known = Set(options.map(\.name)).subtracting(ConfigLayers.notInFile)
        if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
            throw ConfigFileError(description: "--config \(path): unknown key \"\(unknown)\"")
        }
        if let nested = object.keys.sorted().first(where: { object[$0] is [String: Any] }) {
            throw ConfigFileError(description: "--config \(path): key \"\(nested)\": an object is not a valid value")
        }
        keys = Set(object.filter { !($0.value is NSNull) }.keys)
        booleanKeys = Set(object.filter { Self.isBoolean($0.value) }.keys)
        do {
            let provider = try await FileProvider<JSONSnapshot>(
                parsingOptions: .init(secretsSpecifier: .specific(Secrets.options)),
                filePath: FilePath(path))
            snapshot = provider.snapshot()
        } catch {
            throw ConfigFileError(description: "--config \(path): \(error)")
        }
    }

    /// The command-line arguments that stand for the file's value of `option`; nil when unset.
    func arguments(for option: ServeOptions.Option) throws(ConfigFileError) -> [String]? {
        guard keys.contains(option.name) else { return nil }
        let key = AbsoluteConfigKey([option.name])
        if option.isBoolean {
            guard booleanKeys.contains(option.name), case .bool(let on) = lookup(key, [.bool]) else {
                throw invalid(option, "must be true or false")
            }
            if on { return ["--" + option.name] }
            return option.hasInversion ? ["--no-" + option.name] : []
        }
        if booleanKeys.contains(option.name) { throw invalid(option, "true or false is not a valid value") }
        guard let content = lookup(key, [.string, .int, .double, .stringArray, .intArray, .doubleArray]) else {
            throw invalid(option, "not a valid value")
        }
        let texts: [String]
        switch content {
        case .string(let text): texts = [text]
        case .int(let number): texts = [String(number)]
        case .double(let number): texts = [String(number)]
        case .stringArray(let list) where option.isRepeatable: texts = list
        case .intArray(let list) where option.isRepeatable: texts = list.map(String.init)
        case .doubleArray(let list) where option.isRepeatable: texts = list.map { String($0) }
        default: throw invalid(option, "a single value, not a list")
        }
        for text in texts where !option.accepts(text) {
            throw invalid(option, Secrets.isSecret(option.name) ? "not a valid value" : "\"\(text)\" is not a valid value")
        }
        return texts.map { "--\(option.name)=\($0)" }
    }

    /// JSONSerialization gives `true` and `false` as NSNumber's boolean subclass, which also
    /// casts to Int; its class tells them apart.
    static func isBoolean(_ value: Any) -> Bool {
        if let list = value as? [Any] { return list.contains(where: isBoolean) }
        return value is NSNumber && ObjectIdentifier(type(of: value)) == ObjectIdentifier(type(of: NSNumber(value: true)))
    }

    private func lookup(_ key: AbsoluteConfigKey, _ types: [ConfigType]) -> ConfigContent? {
        for type in types {
            if let value = try? snapshot.value(forKey: key, type: type).value { return value.content }
        }
        return nil
    }

    private func invalid(_ option: ServeOptions.Option, _ detail: String) -> ConfigFileError {
        ConfigFileError(description: "--config \(path): key \"\(option.name)\": \(detail)")
    }
}
