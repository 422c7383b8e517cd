import ArgumentParser
import Foundation

@main
struct Tidings: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tidings",
        abstract: "A Server-Sent Events notification gateway.",
        discussion: "Every flag can also be set with an environment variable TIDINGS_<FLAG_IN_CAPS> (for example TIDINGS_JWT_SECRET); `serve` also reads a JSON file given by --config (flag > environment > file).",
        subcommands: [Serve.self, Migrate.self, Token.self, Publish.self, Tail.self, Bench.self]
    )

    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        let subcommands: [any ParsableCommand.Type] = configuration.subcommands
        var augmented = arguments
        let environment = ProcessInfo.processInfo.environment
        if arguments.first == Serve._commandName {
            await serve(arguments, environment: environment)
        } else if let name = arguments.first, let command = subcommands.first(where: { $0._commandName == name }) {
            augmented = EnvironmentDefaults.augment(arguments, for: command, environment: environment)
        }
        await main(augmented)
    }

    /// `serve` layers flags, environment and `--config` file; `--print-config` ends here.
    static func serve(_ arguments: [String], environment: [String: String]) async -> Never {
        let layers: ConfigLayers
        do {
            layers = try await ConfigLayers.resolve(arguments, for: Serve.self, environment: environment)
        } catch {
            FileHandle.standardError.write(Data("Error: \(error.description)\n".utf8))
            exit(withError: ExitCode(ExitCodes.usage))
        }
        guard layers.arguments.contains("--print-config") else {
            await main(layers.arguments)
            exit()
        }
        do {
            let command = try Serve.parse(Array(layers.arguments.dropFirst()))
            print(PrintConfig.render(command, sources: layers.sources))
            exit()
        } catch {
            Serve.exit(withError: error)
        }
    }
}
