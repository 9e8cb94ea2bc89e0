import ArgumentParser

/// `mqbench`: RaftMQ's benchmark tool. `storage` measures the commitlog against the disk it runs on,
/// `raft-append` a Raft group's raw log, `produce` and `consume` RocketMQ sends and pulls through the
/// nameservers' routes, `chaos` the fault-injection suite.
@main
struct MQBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqbench",
        abstract: "Benchmarks for RaftMQ.",
        subcommands: [StorageBenchmark.self, RaftAppendBenchmark.self, ProduceBenchmark.self, ConsumeBenchmark.self, ChaosCommand.self, CodecBenchmark.self])
}
