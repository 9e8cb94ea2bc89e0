import ArgumentParser
import Client
import Logging
import NIOCore
import NIOPosix
import Remoting

/// `mqbench produce -n NS -t TOPIC --size BYTES --concurrency N --duration SECONDS [--json]`: a closed
/// loop of sends through the Swift producer (route lookup, SEND_MESSAGE_V2, answered after commit),
/// with a fixed number in flight. Bounded by count and time.
struct ProduceBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "produce", abstract: "Send messages through the nameservers' routes and measure throughput and latency (closed loop, or open loop with --rate).")

    @Option(name: .customShort("n"), help: "Nameservers, e.g. '127.0.0.1:9876;127.0.0.2:9876;127.0.0.3:9876'.")
    var namesrv: String

    @Option(name: .customShort("t"), help: "Topic (auto-created from TBW102 when the broker allows it).")
    var topic = "BenchTopic"

    @OptionGroup var load: LoadOptions

    func run() async throws {
        let client = try BenchClient(namesrv, ifEmpty: "-n names no nameserver")
        let producer = Producer(nameServers: client.addresses, remoting: client.remoting, logger: Logger(label: "mqbench"))
        let message = OutgoingMessage(topic: topic, body: [UInt8](repeating: UInt8(ascii: "m"), count: load.size), tags: "bench")
        // The route (and the topic) exist before the clock starts.
        _ = try await producer.send(message)
        let loop = load.loop(unit: "msgs")
        // Only SEND_OK counts as sent: a SYNC_MASTER's SLAVE_NOT_AVAILABLE or FLUSH_SLAVE_TIMEOUT is a failure here.
        let sent = await loop.run {
            let r = try await producer.send(message)
            if r.status != .sendOK { throw NotSendOK(status: r.status) }
        }
        await client.close()
        if sent == 0 { throw ExitCode(1) }
    }
}

struct NotSendOK: Error, CustomStringConvertible {
    var status: SendStatus
    var description: String { "answered \(status.rawValue), not SEND_OK" }
}
