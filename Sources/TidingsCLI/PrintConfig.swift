import ArgumentParser

/// `tidings serve --print-config`: every option with its effective value, secrets masked, and
/// the layer it came from, one per line: `port = 8080 (config file)`.
enum PrintConfig {
    static func render(_ command: any ParsableCommand, sources: [String: ConfigLayers.Source]) -> String {
        let values = ServeOptions.values(of: command)
        let options = ServeOptions.reflect(type(of: command))
        let width = options.map(\.name.count).max() ?? 0
        var lines = ["# tidings serve: effective configuration (secrets masked)"]
        for option in options where option.name != "print-config" {
            let shown = describe(values[option.name] ?? nil, option: option.name)
            let source = sources[option.name] ?? .default
            let padding = String(repeating: " ", count: width - option.name.count)
            lines.append("\(option.name)\(padding) = \(shown) (\(source.rawValue))")
        }
        return lines.joined(separator: "\n")
    }

    static func describe(_ value: Any?, option: String) -> String {
        guard let value else { return "-" }
        if let list = value as? [Any] {
            return "[" + list.map { describe($0, option: option) }.joined(separator: ", ") + "]"
        }
        let text = (value as? any ExpressibleByArgument)?.defaultValueDescription ?? "\(value)"
        return Secrets.masked(text, option: option)
    }
}
