import ArgumentParser
import Logging
import NIOCore
import NIOPosix
import Remoting
import Replication
import Synchronization

/// `mqbench raft-append`: a closed loop of appends to a Raft group's raw log (docs/raw-log-api.md)
/// with a fixed number in flight, each answered after commit. Progress once a second; bounded by
/// count and time.
struct RaftAppendBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raft-append",
        abstract: "Append entries to a Raft group through the raw-log API and measure throughput and latency.")

    @Option(name: .customShort("b"), help: "Broker addresses of the group, e.g. '127.0.0.1:30911;127.0.0.2:30911;127.0.0.3:30911'.")
    var brokers: String

    @Option(name: .customShort("g"), help: "The group (dLegerGroup).")
    var group = "RaftNode00"

    @OptionGroup var load: LoadOptions

    func run() async throws {
        let client = try BenchClient(brokers, ifEmpty: "-b names no broker")
        let log = RaftLogClient(group: group, addresses: client.addresses, client: client.remoting)
        let data = [UInt8](repeating: UInt8(ascii: "m"), count: load.size)
        let loop = load.loop(unit: "appends")
        let sent = await loop.run { _ = try await log.append(data, deadline: .now + .seconds(5)) }
        await client.close()
        if sent == 0 { throw ExitCode(1) }
    }
}

/// What the network benchmarks share: errors only on stderr, one event loop, one remoting client,
/// and the addresses of `list` ("a;b" or "a,b"), at least one (else the error `ifEmpty`).
struct BenchClient {
    let loops: MultiThreadedEventLoopGroup
    let remoting: RemotingClient
    let addresses: [String]

    init(_ list: String, ifEmpty: String) throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .error
            return h
        }
        addresses = list.split(whereSeparator: { $0 == ";" || $0 == "," }).map(String.init)
        guard !addresses.isEmpty else { throw ValidationError(ifEmpty) }
        loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        remoting = RemotingClient(group: loops, logger: Logger(label: "mqbench"))
    }

    func close() async {
        await remoting.close()
        try? await loops.shutdownGracefully()
    }
}

/// Progress goes to stderr so that stdout carries only the final JSON line.
func printLine(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
