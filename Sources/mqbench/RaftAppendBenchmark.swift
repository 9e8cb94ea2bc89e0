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
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = .error
            return h
        }
        let addresses = brokers.split(whereSeparator: { $0 == ";" || $0 == "," }).map(String.init)
        guard !addresses.isEmpty else { throw ValidationError("-b names no broker") }
        let loops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let remoting = RemotingClient(group: loops, logger: Logger(label: "mqbench"))
        let log = RaftLogClient(group: group, addresses: addresses, client: remoting)
        let data = [UInt8](repeating: UInt8(ascii: "m"), count: load.size)
        let loop = load.loop(unit: "appends")
        let sent = await loop.run { _ = try await log.append(data, deadline: .now + .seconds(5)) }
        await remoting.close()
        try? await loops.shutdownGracefully()
        if sent == 0 { throw ExitCode(1) }
    }
}

/// Progress goes to stderr so that stdout carries only the final JSON line.
func printLine(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
