// swift-tools-version: 6.1
// RaftMQ: a RocketMQ-compatible message broker whose commitlog is a Raft log.
// Module map and import rules: docs/architecture.md (and ../shared/ARCHITECTURE.md).
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "RaftMQ",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "mqnamesrv", targets: ["mqnamesrv"]),
        .executable(name: "mqbroker", targets: ["mqbroker"]),
        .executable(name: "mqadmin", targets: ["mqadmin"]),
        .executable(name: "mqbench", targets: ["mqbench"]),
        .executable(name: "mqshutdown", targets: ["mqshutdown"]),
        .executable(name: "raftsim", targets: ["raftsim"]),
        // For Fuzz/ (a separate package depending on this one by path).
        .library(name: "Config", targets: ["Config"]),
        .library(name: "LogFormat", targets: ["LogFormat"]),
        .library(name: "LogStore", targets: ["LogStore"]),
        .library(name: "Remoting", targets: ["Remoting"]),
        .library(name: "Replication", targets: ["Replication"]),
        .library(name: "ClassicHA", targets: ["ClassicHA"]),
        .library(name: "RaftCore", targets: ["RaftCore"]),
        .library(name: "AdminHTTP", targets: ["AdminHTTP"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        // Latency percentiles in mqbench (constant memory, no coordinated-omission-prone sorting).
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // /metrics: swift-metrics' API with swift-prometheus's registry and text exposition.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        // CRC32C (SSE4.2 with a portable fallback selected at run time) and zlib's CRC32.
        .target(
            name: "CChecksum",
            linkerSettings: [.linkedLibrary("z")]
        ),
        // The bytes both replication modes agree on. Standard library (+ CChecksum) only.
        .target(name: "LogFormat", dependencies: ["CChecksum"], swiftSettings: strict),
        // Segment files, index, group commit, recovery, retention. Knows nothing of roles.
        .target(name: "LogStore", dependencies: ["LogFormat"], swiftSettings: strict),
        // The pure Raft state machine: decides, never waits. Standard library only.
        .target(name: "RaftCore", swiftSettings: strict),
        // The RocketMQ remoting protocol on SwiftNIO: frames, JSON and ROCKETMQ headers, server, client.
        .target(
            name: "Remoting",
            dependencies: [
                "CZlib",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // RaftReplica (the driver of a RaftCore node over LogStore and the peer port) and its wire
        // format.
        .target(
            name: "Replication",
            dependencies: [
                "RaftCore", "LogStore", "LogFormat", "Remoting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Classic master/slave replication: RocketMQ's HA port streaming the log's bytes (never
        // imports RaftCore).
        .target(
            name: "ClassicHA",
            dependencies: [
                "LogStore", "LogFormat",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // libnghttp2 (apt: libnghttp2-dev, installed by scripts/install-deps.sh).
        .systemLibrary(name: "CNghttp2", pkgConfig: "libnghttp2", providers: [.apt(["libnghttp2-dev"])]),
        // The HTTP admin endpoint: /raft/state, /healthz over h2c (libnghttp2) and HTTP/1.1 on one port.
        .target(
            name: "AdminHTTP",
            dependencies: [
                "CNghttp2",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // zlib's inflate (apt: zlib1g-dev): compressed broker registrations.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        // mqnamesrv's tables and protocol: broker registration, routes, cluster info, KV config.
        .target(
            name: "NameServer",
            dependencies: [
                "CZlib", "CChecksum", "Remoting",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Broker semantics over the committed log: topics and metadata entries, consume queues,
        // send, pull with long polling, consumer offsets, registration with the nameservers.
        .target(
            name: "Broker",
            dependencies: [
                "CChecksum", "Remoting", "Config", "LogStore", "LogFormat", "Replication", "RaftCore", "ClassicHA",
                .product(name: "NIOCore", package: "swift-nio"),
                // ThreadSpecificVariable: each event loop thread's batch of fast-path sends.
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The Swift producer and consumer (route lookup, fast failover, rebalance, offsets).
        .target(
            name: "Client",
            dependencies: [
                "Remoting", "LogFormat",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // What the server executables share: SIGTERM/SIGINT handling, their log files (swift-log), pid files.
        .target(name: "ProcessLifecycle", dependencies: [.product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        // RocketMQ's mqshutdown: stops brokers or nameservers through their pid files.
        .executableTarget(
            name: "mqshutdown",
            dependencies: ["ProcessLifecycle", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "mqnamesrv",
            dependencies: [
                "Config", "NameServer", "Remoting", "ProcessLifecycle",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // The deterministic whole-cluster simulator: seeded network, disk and clock with faults, and
        // the invariant checkers.
        .target(name: "Simulation", dependencies: ["RaftCore"], swiftSettings: strict),
        // RocketMQ .properties -> typed, validated configuration.
        .target(name: "Config", swiftSettings: strict),
        .executableTarget(
            name: "mqbroker",
            dependencies: [
                "Config", "LogStore", "LogFormat", "RaftCore", "Replication", "Remoting", "AdminHTTP", "ProcessLifecycle", "Broker", "Client",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // RocketMQ's admin command; for now the Raft group commands over the raw-log API.
        .executableTarget(
            name: "mqadmin",
            dependencies: [
                "Replication", "Remoting", "Client", "LogFormat",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "mqbench",
            dependencies: [
                "LogStore", "LogFormat", "RaftCore", "Replication", "Remoting", "Client",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "raftsim",
            dependencies: [
                "Simulation", "RaftCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // Test support: appends until killed, printing what was acknowledged (CommandTests SIGKILL it).
        .executableTarget(name: "storewriter", dependencies: ["LogStore", "LogFormat"], swiftSettings: strict),
        // Shared by the test targets only: a seeded generator, and the trait that runs each test on threads
        // of its own (OwnThreads.swift).
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(name: "ProcessLifecycleTests", dependencies: ["TestSupport", "ProcessLifecycle", .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .testTarget(name: "LogFormatTests", dependencies: ["LogFormat", "CChecksum", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "LogStoreTests", dependencies: ["LogStore", "LogFormat", "TestSupport"], swiftSettings: strict),
        // Transcripts/ holds the interaction scripts, read through #filePath (and rewritten in place).
        .testTarget(name: "RaftCoreTests", dependencies: ["RaftCore", "TestSupport"], exclude: ["Transcripts"], swiftSettings: strict),
        .testTarget(name: "RemotingTests", dependencies: ["Remoting", "TestSupport", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio")], swiftSettings: strict),
        .testTarget(name: "ReplicationTests", dependencies: ["Replication", "RaftCore", "TestSupport", .product(name: "NIOCore", package: "swift-nio")], swiftSettings: strict),
        .testTarget(name: "AdminHTTPTests", dependencies: ["TestSupport", "AdminHTTP", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .testTarget(name: "NameServerTests", dependencies: ["TestSupport", "NameServer", "Remoting", "CZlib", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .testTarget(name: "ClientTests", dependencies: ["TestSupport", "Client", "Remoting", "LogFormat", .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
        .testTarget(name: "ClassicHATests", dependencies: ["TestSupport", "ClassicHA", "LogStore", "LogFormat"], swiftSettings: strict),
        .testTarget(name: "BrokerTests", dependencies: ["TestSupport", "Broker", "LogStore", "LogFormat", "Remoting", "Replication", "RaftCore", .product(name: "Logging", package: "swift-log"),
                                                    .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                                                    .product(name: "NIOEmbedded", package: "swift-nio")], swiftSettings: strict),
        .testTarget(name: "SimulationTests", dependencies: ["TestSupport", "Simulation", "RaftCore"], swiftSettings: strict),
        .testTarget(name: "ConfigTests", dependencies: ["Config", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "CommandTests", dependencies: ["TestSupport", "mqnamesrv", "mqbroker", "mqadmin", "mqbench", "raftsim", "storewriter", "mqshutdown", "LogStore", "LogFormat", "Replication", "Remoting", "Client", .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"), .product(name: "Logging", package: "swift-log")], swiftSettings: strict),
    ]
)
