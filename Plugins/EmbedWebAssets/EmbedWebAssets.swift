import Foundation
import PackagePlugin

/// Compiles the files the gateway serves into the target: `clients/js/*.js` (the `tidings.js`
/// client), `web/*` (the dashboard, the demo page, the icon) and `openapi/*.yaml` (the API
/// description, which the tool also converts to JSON). The binary then serves them from any
/// directory, with no file to find at run time.
///
/// The generated file declares `EmbeddedWebAssets.files: [String: String]`, each file's name
/// mapped to its bytes in base64.
@main
struct EmbedWebAssets: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: any Target) throws -> [Command] {
        let root = context.package.directoryURL
        let directories = [
            root.appending(path: "clients/js", directoryHint: .isDirectory),
            root.appending(path: "web", directoryHint: .isDirectory),
            root.appending(path: "openapi", directoryHint: .isDirectory),
        ]
        var files: [URL] = []
        for directory in directories {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            files += names.filter { !$0.hasPrefix(".") && !$0.hasSuffix(".md") }.sorted().map { directory.appending(path: $0) }
        }
        let output = context.pluginWorkDirectoryURL.appending(path: "EmbeddedWebAssets.swift")
        return [
            .buildCommand(
                displayName: "Embedding \(files.count) web file(s) into \(target.name)",
                executable: try context.tool(named: "EmbedWebAssetsTool").url,
                arguments: [output.path] + files.map(\.path),
                inputFiles: directories + files,
                outputFiles: [output]
            )
        ]
    }
}
