import ArgumentParser
import Foundation
import Histogram
import Synchronization

/// The load options every produce-style benchmark takes (INTERFACES.md's mqbench flags).
struct LoadOptions: ParsableArguments {
    @Option(name: .long, help: "Message (or entry) size in bytes.")
    var size = 1_024

    @Option(name: .long, help: "Operations in flight (closed loop); with --rate, the most that may be in flight.")
    var concurrency = 64

    @Option(name: .long, help: "Open loop: start this many operations per second whatever the answers do; each latency counts from the operation's scheduled start, so a stall is not hidden (no coordinated omission).")
    var rate: Double?

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
        if let rate, !(rate > 0 && rate <= 10_000_000) { throw ValidationError("--rate must be between 0 and 10,000,000 operations per second") }
    }

    func loop(unit: String) -> LoadLoop {
        LoadLoop(concurrency: concurrency, rate: rate, duration: duration, warmup: warmup, maxCount: maxCount, size: size, json: json, unit: unit)
    }
}

/// Latencies in microseconds (1 us to 10 min, 3 significant digits): HdrHistogram, constant memory
/// whatever the count, so a long run does not grow the client.
struct Latencies {
    private(set) var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)

    var count: UInt64 { histogram.totalCount }

    mutating func record(_ d: Duration) {
        let c = d.components
        let us = max(1, c.seconds * 1_000_000 + c.attoseconds / 1_000_000_000_000)
        histogram.record(min(UInt64(us), histogram.highestTrackableValue))
    }

    mutating func reset() { histogram.reset() }

    /// The latency at `percentile` (0-100) in milliseconds; nil when nothing was recorded.
    func ms(_ percentile: Double) -> Double? {
        count == 0 ? nil : Double(histogram.valueAtPercentile(percentile)) / 1_000
    }

    var maxMs: Double? { count == 0 ? nil : Double(histogram.max) / 1_000 }
}

/// A load loop, bounded by time (after a warm-up not counted) and by count. Closed (`rate` nil):
/// `concurrency` workers each run `operation` back to back. Open (`rate` set): operations start on a
/// fixed schedule, at most `concurrency` in flight; one that must wait for a free slot still counts
/// its latency from its scheduled start. Progress once a second on stderr; the summary, and with
/// `json` one JSON line on stdout (INTERFACES.md: sent, failed, msgsPerSec, mbPerSec, p50Ms, p99Ms,
/// p999Ms, maxMs). Returns how many succeeded.
struct LoadLoop {
    var concurrency: Int
    var rate: Double?
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
            var all = Latencies()
            /// Since the last progress line.
            var recent = Latencies()
            var sent = 0
            var failed = 0
            var firstFailure: String?
        }
        let state = Mutex(State())
        /// Operations started, against maxCount.
        let started = Atomic<Int>(0)
        /// Open loop: operations in flight.
        let inFlight = Atomic<Int>(0)

        func done(scheduled t0: ContinuousClock.Instant, counted: Bool, _ outcome: Result<Void, any Error>) {
            let latency = ContinuousClock.now - t0
            state.withLock { s in
                switch outcome {
                case .success:
                    guard counted else { return }
                    s.sent += 1
                    s.all.record(latency)
                    s.recent.record(latency)
                case .failure(let error):
                    s.failed += 1
                    if s.firstFailure == nil { s.firstFailure = "\(error)" }
                }
            }
        }
    }

    func run(_ operation: @escaping @Sendable () async throws -> Void) async -> Int {
        let tally = Tally()
        let start = ContinuousClock.now
        let warmupEnd = start + .milliseconds(Int64(warmup * 1_000))
        let end = warmupEnd + .milliseconds(Int64(duration * 1_000))
        let (maxCount, size, unit) = (self.maxCount, self.size, self.unit)
        let reporter = Task {
            var last = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                let (sent, p99) = tally.state.withLock { s -> (Int, Double?) in
                    defer { s.recent.reset() }
                    return (s.sent, s.recent.ms(99))
                }
                let perSecond = sent - last
                last = sent
                printLine("\(perSecond) \(unit)/s, \(format(Double(perSecond * size) / 1e6, 1)) MB/s, p99 \(p99.map { format($0, 2) } ?? "-") ms")
            }
        }
        if let rate {
            await openLoop(rate: rate, until: end, warmupEnd: warmupEnd, tally: tally, operation)
        } else {
            await withTaskGroup(of: Void.self) { tasks in
                for _ in 0..<concurrency {
                    tasks.addTask {
                        while ContinuousClock.now < end && tally.started.add(1, ordering: .relaxed).newValue <= maxCount {
                            let t0 = ContinuousClock.now
                            do {
                                try await operation()
                                tally.done(scheduled: t0, counted: t0 >= warmupEnd, .success(()))
                            } catch {
                                tally.done(scheduled: t0, counted: t0 >= warmupEnd, .failure(error))
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
        let perSecond = Double(s.sent) / seconds
        if let f = s.firstFailure { printLine("\(s.failed) \(unit) failed; the first: \(f)") }
        let mode = rate.map { "open loop at \(format($0, 0))/s" } ?? "closed loop, \(concurrency) in flight"
        printLine("sent \(s.sent) in \(format(seconds, 1)) s (\(mode)): \(format(perSecond, 0)) \(unit)/s, \(format(perSecond * Double(size) / 1e6, 1)) MB/s, p50 \(s.all.ms(50).map { format($0, 2) } ?? "-") ms, p99 \(s.all.ms(99).map { format($0, 2) } ?? "-") ms, max \(s.all.maxMs.map { format($0, 2) } ?? "-") ms")
        if json {
            func j(_ v: Double?) -> String { v.map { format($0, 3) } ?? "null" }
            print("{\"sent\":\(s.sent),\"failed\":\(s.failed),\"msgsPerSec\":\(format(perSecond, 1)),\"mbPerSec\":\(format(perSecond * Double(size) / 1e6, 2)),\"p50Ms\":\(j(s.all.ms(50))),\"p99Ms\":\(j(s.all.ms(99))),\"p999Ms\":\(j(s.all.ms(99.9))),\"maxMs\":\(j(s.all.maxMs))}")
        }
        return s.sent
    }

    /// Starts operation k at `start + k / rate` until `end` or `maxCount`, at most `concurrency` at
    /// once. A late start (no free slot, or the scheduler itself behind) keeps its scheduled time.
    private func openLoop(rate: Double, until end: ContinuousClock.Instant, warmupEnd: ContinuousClock.Instant, tally: Tally,
                          _ operation: @escaping @Sendable () async throws -> Void) async {
        let start = ContinuousClock.now
        let interval = 1.0 / rate
        let limit = concurrency
        await withDiscardingTaskGroup { tasks in
            var k = 0
            while k < maxCount {
                let scheduled = start + .nanoseconds(Int64(Double(k) * interval * 1e9))
                if scheduled >= end { break }
                if scheduled > .now { try? await Task.sleep(until: scheduled, tolerance: .microseconds(50)) }
                // Saturated: wait for a free slot (the late start keeps its scheduled time).
                while tally.inFlight.load(ordering: .acquiring) >= limit { try? await Task.sleep(for: .microseconds(100)) }
                tally.inFlight.add(1, ordering: .relaxed)
                k += 1
                tasks.addTask {
                    do {
                        try await operation()
                        tally.done(scheduled: scheduled, counted: scheduled >= warmupEnd, .success(()))
                    } catch {
                        tally.done(scheduled: scheduled, counted: scheduled >= warmupEnd, .failure(error))
                    }
                    tally.inFlight.subtract(1, ordering: .releasing)
                }
            }
        }
    }
}
