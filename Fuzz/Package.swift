// swift-tools-version: 6.1
// libFuzzer targets over RaftMQ's decoders and recovery (issue 7). Separate from the main package so
// its build never sees them; built with both sanitizers (TOOLCHAIN.md), by scripts/fuzz.sh:
//   swift build -c debug --product FuzzX --sanitize fuzzer -Xswiftc -sanitize=fuzzer,address
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]
let package = Package(
    name: "RaftMQFuzz",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "FuzzRemotingFrame", targets: ["FuzzRemotingFrame"]),
        .executable(name: "FuzzConfig", targets: ["FuzzConfig"]),
        .executable(name: "FuzzLogFormat", targets: ["FuzzLogFormat"]),
        .executable(name: "FuzzRaftWire", targets: ["FuzzRaftWire"]),
        .executable(name: "FuzzRecovery", targets: ["FuzzRecovery"]),
        .executable(name: "FuzzHAStream", targets: ["FuzzHAStream"]),
        .executable(name: "FuzzRaftCore", targets: ["FuzzRaftCore"]),
        .executable(name: "FuzzAdminHTTP", targets: ["FuzzAdminHTTP"]),
    ],
    dependencies: [
        .package(name: "RaftMQ", path: ".."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
    ],
    targets: [
        .executableTarget(name: "FuzzRemotingFrame", dependencies: [.product(name: "Remoting", package: "RaftMQ"), .product(name: "NIOCore", package: "swift-nio")], swiftSettings: strict),
        .executableTarget(name: "FuzzConfig", dependencies: [.product(name: "Config", package: "RaftMQ")], swiftSettings: strict),
        .executableTarget(name: "FuzzLogFormat", dependencies: [.product(name: "LogFormat", package: "RaftMQ")], swiftSettings: strict),
        .executableTarget(name: "FuzzRaftWire", dependencies: [.product(name: "Replication", package: "RaftMQ"), .product(name: "NIOCore", package: "swift-nio")], swiftSettings: strict),
        .executableTarget(name: "FuzzRecovery", dependencies: [.product(name: "LogStore", package: "RaftMQ"), .product(name: "LogFormat", package: "RaftMQ")], swiftSettings: strict),
        .executableTarget(name: "FuzzHAStream", dependencies: [.product(name: "ClassicHA", package: "RaftMQ"), .product(name: "LogStore", package: "RaftMQ"), .product(name: "LogFormat", package: "RaftMQ")], swiftSettings: strict),
        .executableTarget(name: "FuzzRaftCore", dependencies: [.product(name: "RaftCore", package: "RaftMQ")], swiftSettings: strict),
        .executableTarget(name: "FuzzAdminHTTP", dependencies: [.product(name: "AdminHTTP", package: "RaftMQ"), .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio")], swiftSettings: strict),
    ]
)
