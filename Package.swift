// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "tidings",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tidings", targets: ["TidingsCLI"]),
        .library(name: "TidingsCore", targets: ["TidingsCore"]),
        .library(name: "TidingsPostgres", targets: ["TidingsPostgres"]),
        .library(name: "TidingsServer", targets: ["TidingsServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/apple/swift-async-algorithms.git", from: "1.1.4"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-configuration.git", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .target(name: "CTidingsPrefetch"),
        .target(name: "CTidingsEpoll"),
        .target(
            name: "TidingsCore",
            dependencies: [
                "CTidingsPrefetch",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "TidingsPostgres",
            dependencies: [
                "CLibPQ",
                "TidingsCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings,
            plugins: ["EmbedMigrations"]
        ),
        .executableTarget(
            name: "EmbedMigrationsTool",
            swiftSettings: swiftSettings
        ),
        .plugin(
            name: "EmbedMigrations",
            capability: .buildTool(),
            dependencies: ["EmbedMigrationsTool"]
        ),
        .executableTarget(
            name: "EmbedWebAssetsTool",
            dependencies: [.product(name: "Yams", package: "Yams")],
            swiftSettings: swiftSettings
        ),
        .plugin(
            name: "EmbedWebAssets",
            capability: .buildTool(),
            dependencies: ["EmbedWebAssetsTool"]
        ),
        .target(
            name: "TidingsServer",
            dependencies: [
                "CTidingsPrefetch",
                "TidingsCore",
                "TidingsPostgres",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings,
            plugins: ["EmbedWebAssets"]
        ),
        .target(
            name: "TidingsBench",
            dependencies: [
                "CTidingsEpoll",
                "TidingsCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "TidingsCLI",
            dependencies: [
                "TidingsServer",
                "TidingsCore",
                "TidingsPostgres",
                "TidingsBench",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // Test support shared by the test targets (a proxy that loses a COMMIT, a private cluster); not a product.
        .target(
            name: "TidingsTestSupport",
            dependencies: ["TidingsBench", .product(name: "NIOPosix", package: "swift-nio")],
            path: "Tests/TidingsTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TidingsCoreTests",
            dependencies: ["TidingsCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "TidingsServerTests",
            dependencies: [
                "TidingsServer",
                "TidingsBench",
                "TidingsCore",
                "TidingsPostgres",
                "TidingsTestSupport",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: swiftSettings
        ),
            .testTarget(
            name: "TidingsPostgresTests",
            dependencies: [
                "TidingsPostgres",
                "TidingsBench",
                "TidingsCore",
                "TidingsTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)

// Fuzz targets (Fuzz/, run by `make fuzz`): they exist only when TIDINGS_FUZZ=1, so a normal
// `swift build` or `swift test` never sees them. scripts/fuzz.sh builds them into .build-fuzz
// with libFuzzer and AddressSanitizer; the two libraries they exercise get the same flags so
// libFuzzer sees their coverage.
if Context.environment["TIDINGS_FUZZ"] == "1" {
    let fuzzFlags = ["-sanitize=fuzzer,address"]
    for target in package.targets where ["TidingsCore", "TidingsServer"].contains(target.name) {
        target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags(fuzzFlags)]
    }
    package.targets.append(.target(name: "CFuzzer", path: "Fuzz/CFuzzer"))
    package.targets.append(
        .target(
            name: "FuzzSupport",
            dependencies: ["CFuzzer", "TidingsCore"],
            path: "Fuzz/FuzzSupport",
            swiftSettings: swiftSettings + [.unsafeFlags(fuzzFlags)]
        ))
    for name in ["FuzzPublishBody", "FuzzSSEFrame", "FuzzCredentials", "FuzzWebSocketMessage"] {
        package.targets.append(
            .executableTarget(
                name: name,
                dependencies: [
                    "FuzzSupport", "TidingsCore", "TidingsServer",
                    .product(name: "Crypto", package: "swift-crypto"),
                    .product(name: "Hummingbird", package: "hummingbird"),
                    .product(name: "HTTPTypes", package: "swift-http-types"),
                    .product(name: "JWTKit", package: "jwt-kit"),
                    .product(name: "NIOCore", package: "swift-nio"),
                ],
                path: "Fuzz/\(name.dropFirst(4))",
                // Not -sanitize=fuzzer here: it would turn main.swift into libFuzzer's callback.
                swiftSettings: swiftSettings + [.unsafeFlags(["-sanitize=address"])],
                // gold stops with an internal error on these binaries; lld links them.
                linkerSettings: [.unsafeFlags(fuzzFlags + ["-use-ld=lld"])]
            ))
    }
}
