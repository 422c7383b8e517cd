import ArgumentParser
import Foundation

@main
struct Tidings: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tidings",
        abstract: "A Server-Sent Events notification gateway.",
        discussion: "Every flag can also be set with an environment variable TIDINGS_<FLAG_IN_CAPS> (for example TIDINGS_JWT_SECRET).",
        subcommands: [Serve.self, Migrate.self, Token.self, Publish.self, Tail.self, Bench.self]
    )

    static func main() async {
        let arguments = Array(CommandLine.arguments.dropFirst())
        let subcommands: [any ParsableCommand.Type] = configuration.subcommands
        var augmented = arguments
        if let name = arguments.first, let command = subcommands.first(where: { $0._commandName == name }) {
            augmented = EnvironmentDefaults.augment(arguments, for: command, environment: ProcessInfo.processInfo.environment)
        }
        await main(augmented)
    }
}
