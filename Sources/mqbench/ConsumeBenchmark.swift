import ArgumentParser
import Client
import Foundation
import Logging
import NIOCore
import NIOPosix
import Remoting
import Synchronization

/// `mqbench consume -n NS -t TOPIC [-g GROUP] --duration SECONDS [--json]`: one clustering consumer
/// (the Swift client: rebalance, long-polled pulls of 32, offsets committed) on every queue of the
/// topic, for a time or a count. Measures messages and bytes per second over the span in which
/// messages arrived (a backlog's drain rate, or the produce rate when a producer runs alongside) and
/// the delivery latency: arrival here minus the broker's store timestamp (whole milliseconds, the
/// same clock on one machine). Bounded by count and time.
struct ConsumeBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "consume", abstract: "Consume a topic through the nameservers' routes and measure throughput and delivery latency.")

    @Option(name: .customShort("n"), help: "Nameservers, e.g. '127.0.0.1:9876;127.0.0.2:9876;127.0.0.3:9876'.")
    var namesrv: String

    @Option(name: .customShort("t"), help: "Topic.")
    var topic = "BenchTopic"

    @Option(name: .customShort("g"), help: "Consumer group (default: a new one, which starts from each queue's first message).")
    var group: String?

    @Option(name: .long, help: "Where a group without committed offsets starts: first or last.")
    var from = "first"

    @Option(name: .long, help: "Seconds to run.")
    var duration: Double = 10

    @Option(name: .long, help: "Stop after this many messages.")
    var maxCount = 5_000_000

    @Flag(name: .long, help: "End with one JSON line.")
    var json = false

    func validate() throws {
        guard duration > 0, maxCount > 0 else { throw ValidationError("--duration and --max-count must be positive") }
        guard from == "first" || from == "last" else { throw ValidationError("--from is first or last, not \(from)") }
    }

    final class Tally: Sendable {
        struct State {
            var all = Latencies()
            var recent = Latencies()
            var received = 0
            var bytes = 0
            var first: ContinuousClock.Instant?
            var last: ContinuousClock.Instant?
        }
        let state = Mutex(State())
    }

    func run() async throws {
        let client = try BenchClient(namesrv, ifEmpty: "-n names no nameserver")
        var options = Consumer.Options(group: group ?? "mqbench_consume_\(getpid())_\(UInt32.random(in: 0...UInt32.max))", topic: topic)
        options.startFrom = from == "first" ? .first : .last
        options.consumeRetryTopic = false
        options.rebalanceInterval = .milliseconds(200)
        let consumer = Consumer(nameServers: client.addresses, remoting: client.remoting, logger: Logger(label: "mqbench"), options: options)
        let tally = Tally()
        let maxCount = self.maxCount
        let started = ContinuousClock.now
        let end = started + .milliseconds(Int64(duration * 1_000))
        // Says once that the count is reached (buffered: no race with the waiter below).
        let (reachedStream, reached) = AsyncStream.makeStream(of: Void.self)
        let consuming = Task {
            await consumer.run { (messages: [ReceivedMessage]) -> Consumer.ConsumeStatus in
                let now = ContinuousClock.now
                let wallMs = Int64(Date().timeIntervalSince1970 * 1_000)
                let full = tally.state.withLock { s -> Bool in
                    if s.first == nil { s.first = now }
                    s.last = now
                    for m in messages where s.received < maxCount {
                        s.received += 1
                        s.bytes += m.body.count
                        let d = Duration.milliseconds(max(0, wallMs - m.storeTimestamp))
                        s.all.record(d)
                        s.recent.record(d)
                    }
                    return s.received >= maxCount
                }
                if full { reached.yield() }
                return .success
            }
        }
        let reporter = Task {
            var last = (0, 0)
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                let (n, b, p99) = tally.state.withLock { s -> (Int, Int, Double?) in
                    defer { s.recent.reset() }
                    return (s.received, s.bytes, s.recent.ms(99))
                }
                printLine("\(n - last.0) msgs/s, \(format(Double(b - last.1) / 1e6, 1)) MB/s, delivery p99 \(p99.map { format($0, 0) } ?? "-") ms")
                last = (n, b)
            }
        }
        // Until the time is up or the count reached.
        await withTaskGroup(of: Void.self) { g in
            g.addTask { try? await Task.sleep(until: end) }
            g.addTask { for await _ in reachedStream { break } }
            await g.next()
            reached.finish()
            g.cancelAll()
        }
        reporter.cancel()
        consuming.cancel()
        _ = await consuming.result
        await client.close()
        let s = tally.state.withLock { $0 }
        var seconds = 0.0
        if let f = s.first, let l = s.last {
            let c = (l - f).components
            seconds = Double(c.seconds) + Double(c.attoseconds) / 1e18
        }
        let perSecond = seconds > 0 ? Double(s.received) / seconds : 0
        printLine("received \(s.received) messages (\(format(Double(s.bytes) / 1e6, 1)) MB) over \(format(seconds, 1)) s: \(format(perSecond, 0)) msgs/s, \(format(seconds > 0 ? Double(s.bytes) / seconds / 1e6 : 0, 1)) MB/s, delivery p50 \(s.all.ms(50).map { format($0, 0) } ?? "-") ms, p99 \(s.all.ms(99).map { format($0, 0) } ?? "-") ms")
        if json {
            // INTERFACES.md's fields: `sent` counts what was consumed (also as `received`); `failed`
            // is 0, since the consumer retries a failed pull itself and no message is given up.
            func j(_ v: Double?) -> String { v.map { format($0, 3) } ?? "null" }
            print("{\"sent\":\(s.received),\"failed\":0,\"received\":\(s.received),\"bytes\":\(s.bytes),\"seconds\":\(format(seconds, 3)),\"msgsPerSec\":\(format(perSecond, 1)),\"mbPerSec\":\(format(seconds > 0 ? Double(s.bytes) / seconds / 1e6 : 0, 2)),\"p50Ms\":\(j(s.all.ms(50))),\"p99Ms\":\(j(s.all.ms(99))),\"p999Ms\":\(j(s.all.ms(99.9))),\"maxMs\":\(j(s.all.maxMs))}")
        }
        if s.received == 0 { throw ExitCode(1) }
    }
}
