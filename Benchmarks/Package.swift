// swift-tools-version:6.1
// Micro-benchmarks of Tidings' hot paths (package-benchmark). Run from this folder:
//   swift package benchmark                      # run and print
//   swift package benchmark thresholds check     # fail on a regression past Thresholds/
//   swift package --allow-writing-to-package-directory benchmark thresholds update
// scripts/bench.sh runs the check and then the load scenarios.

import Foundation
import PackageDescription

// A path dependency's identity is its folder name, which depends on where the repository is cloned.
let mainPackage = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "TidingsBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "TidingsCoreBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "TidingsCore", package: mainPackage),
            ],
            path: "Benchmarks/TidingsCoreBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [
                .plugin(name: "BenchmarkPlugin", package: "benchmark")
            ]
        )
    ]
)
