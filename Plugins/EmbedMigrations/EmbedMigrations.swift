import Foundation
import PackagePlugin

/// Turns the package's `migrations/*.sql` files into a Swift source compiled into the target, so
/// the built binary carries its migrations and needs no source tree at run time.
///
/// The files are read from `<package>/migrations`, sorted by name; the generated file declares
/// `EmbeddedMigrations.all: [Migration]`.
@main
struct EmbedMigrations: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let directory = context.package.directoryURL.appending(path: "migrations", directoryHint: .isDirectory)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        let files = names.filter { $0.hasSuffix(".sql") }.sorted().map { directory.appending(path: $0) }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedMigrations.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) migration(s) into \(target.name)",
                executable: try context.tool(named: "EmbedMigrationsTool").url,
                arguments: [output.path] + files.map(\.path),
                inputFiles: [directory] + files,
                outputFiles: [output]
            )
        ]
    }
}
