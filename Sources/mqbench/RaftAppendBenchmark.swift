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

    @Option(name: .long, help: "Entry size in bytes.")
    var size = 1_024

    @Option(name: .long, help: "Appends in flight.")
    var concurrency = 64

    @Option(name: .long, help: "Seconds to run.")
    var duration: Double = 10

    @Option(name: .long, help: "Stop after this many appends.")
    var maxCount = 5_000_000

    @Option(name: .long, help: "Seconds of warm-up not counted.")
    var warmup: Double = 1

    @Flag(name: .long, help: "End with one JSON line.")
    var json = false

    func validate() throws {
        guard size > 0, concurrency > 0, duration > 0, maxCount > 0, warmup >= 0 else {
            throw ValidationError("--size, --concurrency, --duration and --max-count must be positive")
        }
    }

    final class Tally: Sendable {
        struct State {
            var latenciesMs: [Double] = []
            var sent = 0
            var failed = 0
            var firstFailure: String?
        }
        let state = Mutex(State())
        /// Appends started, against --max-count.
        let started = Atomic<Int>(0)
    }

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
        let data = [UInt8](repeating: UInt8(ascii: "m"), count: size)
        let tally = Tally()
        let start = ContinuousClock.now
        let warmupEnd = start + .milliseconds(Int64(warmup * 1_000))
        let end = warmupEnd + .milliseconds(Int64(duration * 1_000))
        let maxCount = self.maxCount

        let reporter = Task {
            var last = 0
            var lastLatencies = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                let (sent, p99) = tally.state.withLock { s -> (Int, Double?) in
                    let recent = s.latenciesMs[min(lastLatencies, s.latenciesMs.count)...].sorted()
                    lastLatencies = s.latenciesMs.count
                    return (s.sent, recent.isEmpty ? nil : recent[min(recent.count - 1, Int(Double(recent.count) * 0.99))])
                }
                let rate = sent - last
                last = sent
                printLine("\(rate) appends/s, \(format(Double(rate * data.count) / 1e6, 1)) MB/s, p99 \(p99.map { format($0, 2) } ?? "-") ms")
            }
        }
        await withTaskGroup(of: Void.self) { tasks in
            for _ in 0..<concurrency {
                tasks.addTask {
                    while ContinuousClock.now < end && tally.started.add(1, ordering: .relaxed).newValue <= maxCount {
                        let t0 = ContinuousClock.now
                        do {
                            _ = try await log.append(data, deadline: t0 + .seconds(5))
                            let t = (ContinuousClock.now - t0).components
                            let ms = Double(t.seconds) * 1_000 + Double(t.attoseconds) / 1e15
                            if t0 >= warmupEnd {
                                tally.state.withLock { $0.sent += 1; $0.latenciesMs.append(ms) }
                            }
                        } catch {
                            tally.state.withLock { s in
                                s.failed += 1
                                if s.firstFailure == nil { s.firstFailure = "\(error)" }
                            }
                        }
                    }
                }
            }
        }
        reporter.cancel()
        let elapsed = (ContinuousClock.now < end ? ContinuousClock.now : end) - warmupEnd
        let seconds = max(0.001, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        let s = tally.state.withLock { $0 }
        await remoting.close()
        try? await loops.shutdownGracefully()
        let sorted = s.latenciesMs.sorted()
        func pct(_ p: Double) -> Double? { sorted.isEmpty ? nil : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let rate = Double(s.sent) / seconds
        if let f = s.firstFailure { printLine("\(s.failed) appends failed; the first: \(f)") }
        printLine("sent \(s.sent) in \(format(seconds, 1)) s: \(format(rate, 0)) appends/s, \(format(rate * Double(size) / 1e6, 1)) MB/s, p50 \(pct(0.5).map { format($0, 2) } ?? "-") ms, p99 \(pct(0.99).map { format($0, 2) } ?? "-") ms, max \(sorted.last.map { format($0, 2) } ?? "-") ms")
        if json {
            func j(_ v: Double?) -> String { v.map { format($0, 3) } ?? "null" }
            print("{\"sent\":\(s.sent),\"failed\":\(s.failed),\"msgsPerSec\":\(format(rate, 1)),\"mbPerSec\":\(format(rate * Double(size) / 1e6, 2)),\"p50Ms\":\(j(pct(0.5))),\"p99Ms\":\(j(pct(0.99))),\"p999Ms\":\(j(pct(0.999))),\"maxMs\":\(j(sorted.last))}")
        }
        if s.sent == 0 { throw ExitCode(1) }
    }
}

/// Progress goes to stderr so that stdout carries only the final JSON line.
func printLine(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
