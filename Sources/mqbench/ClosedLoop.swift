import ArgumentParser
import Foundation
import Synchronization

/// The load options every closed-loop benchmark takes (INTERFACES.md's mqbench flags).
struct LoadOptions: ParsableArguments {
    @Option(name: .long, help: "Message (or entry) size in bytes.")
    var size = 1_024

    @Option(name: .long, help: "Operations in flight.")
    var concurrency = 64

    @Option(name: .long, help: "Seconds to run.")
    var duration: Double = 10

    @Option(name: .long, help: "Stop after this many operations.")
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

    func loop(unit: String) -> ClosedLoop {
        ClosedLoop(concurrency: concurrency, duration: duration, warmup: warmup, maxCount: maxCount, size: size, json: json, unit: unit)
    }
}

/// A closed loop: `concurrency` workers each run `operation` back to back until the duration (after a
/// warm-up not counted) or the count runs out. Progress once a second on stderr; the summary, and with
/// `json` one JSON line on stdout (INTERFACES.md: sent, failed, msgsPerSec, mbPerSec, p50Ms, p99Ms,
/// p999Ms, maxMs). Returns how many succeeded.
struct ClosedLoop {
    var concurrency: Int
    var duration: Double
    var warmup: Double
    var maxCount: Int
    /// Bytes per operation, for MB/s.
    var size: Int
    var json: Bool
    /// "appends", "msgs": the unit in progress lines.
    var unit: String

    final class Tally: Sendable {
        struct State {
            var latenciesMs: [Double] = []
            var sent = 0
            var failed = 0
            var firstFailure: String?
        }
        let state = Mutex(State())
        /// Operations started, against maxCount.
        let started = Atomic<Int>(0)
    }

    func run(_ operation: @escaping @Sendable () async throws -> Void) async -> Int {
        let tally = Tally()
        let start = ContinuousClock.now
        let warmupEnd = start + .milliseconds(Int64(warmup * 1_000))
        let end = warmupEnd + .milliseconds(Int64(duration * 1_000))
        let (maxCount, size, unit) = (self.maxCount, self.size, self.unit)
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
                printLine("\(rate) \(unit)/s, \(format(Double(rate * size) / 1e6, 1)) MB/s, p99 \(p99.map { format($0, 2) } ?? "-") ms")
            }
        }
        await withTaskGroup(of: Void.self) { tasks in
            for _ in 0..<concurrency {
                tasks.addTask {
                    while ContinuousClock.now < end && tally.started.add(1, ordering: .relaxed).newValue <= maxCount {
                        let t0 = ContinuousClock.now
                        do {
                            try await operation()
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
        let sorted = s.latenciesMs.sorted()
        func pct(_ p: Double) -> Double? { sorted.isEmpty ? nil : sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let rate = Double(s.sent) / seconds
        if let f = s.firstFailure { printLine("\(s.failed) \(unit) failed; the first: \(f)") }
        printLine("sent \(s.sent) in \(format(seconds, 1)) s: \(format(rate, 0)) \(unit)/s, \(format(rate * Double(size) / 1e6, 1)) MB/s, p50 \(pct(0.5).map { format($0, 2) } ?? "-") ms, p99 \(pct(0.99).map { format($0, 2) } ?? "-") ms, max \(sorted.last.map { format($0, 2) } ?? "-") ms")
        if json {
            func j(_ v: Double?) -> String { v.map { format($0, 3) } ?? "null" }
            print("{\"sent\":\(s.sent),\"failed\":\(s.failed),\"msgsPerSec\":\(format(rate, 1)),\"mbPerSec\":\(format(rate * Double(size) / 1e6, 2)),\"p50Ms\":\(j(pct(0.5))),\"p99Ms\":\(j(pct(0.99))),\"p999Ms\":\(j(pct(0.999))),\"maxMs\":\(j(sorted.last))}")
        }
        return s.sent
    }
}
