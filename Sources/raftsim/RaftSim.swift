import ArgumentParser
import Glibc
import RaftCore
import Simulation

/// `raftsim`: runs the deterministic cluster simulator over one seed or a range of seeds.
@main
struct RaftSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raftsim",
        abstract: "Runs a whole Raft group on a simulated network, disk and clock, with faults drawn from a seed.",
        discussion: """
            Every choice of a run (fault mix, timings, message delays, crashes) comes from its seed, so
            a failing seed replays exactly: `raftsim --seed N --nodes 3 --trace`.
            A range ends with the line `N passed, M failed`; the exit status is 0 only when none failed.
            """
    )

    @Option(help: "Run one seed.")
    var seed: UInt64?

    @Option(help: "Run a range of seeds, A..B (inclusive).")
    var seeds: String?

    @Option(help: "Cluster size.")
    var nodes: Int = 3

    @Option(help: "Length of the safety phase in ticks (10 ms each); default per SimOptions.")
    var ticks: Int?

    @Option(name: .customLong("break"), help: "Break a Raft rule on purpose, to prove the checkers catch it: \(BrokenRule.allCases.map(\.rawValue).joined(separator: ", ")).")
    var broken: [String] = []

    @Flag(help: "Print every event of the run as it happens (with --seed).")
    var trace = false

    @Flag(help: "Stop at the first failing seed.")
    var stopAtFirstFailure = false

    @Flag(help: "Print one line per seed.")
    var verbose = false

    mutating func validate() throws {
        if (seed == nil) == (seeds == nil) { throw ValidationError("give exactly one of --seed N or --seeds A..B") }
        if ![1, 3, 5, 7].contains(nodes) { throw ValidationError("--nodes must be 1, 3, 5 or 7") }
        if let ticks, ticks < 1 { throw ValidationError("--ticks must be positive") }
        if let seeds, parseRange(seeds) == nil { throw ValidationError("--seeds must look like 1..500") }
        for b in broken where BrokenRule(rawValue: b) == nil {
            throw ValidationError("unknown rule \"\(b)\" for --break; known: \(BrokenRule.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() throws {
        let rules = Set(broken.compactMap(BrokenRule.init(rawValue:)))
        let range = seed.map { $0...$0 } ?? parseRange(seeds!)!
        installCrashNote()
        var passed = 0, failed = 0
        var simulatedUs: UInt64 = 0
        let start = monotonicSeconds()
        for s in range {
            setCrashNote(seed: s, nodes: nodes, ticks: ticks, rules: rules)
            let echo: ((String) -> Void)? = trace ? { print($0) } : nil
            let result = SimulationRun.run(seed: s, nodes: nodes, ticks: ticks, brokenRules: rules, echo: echo)
            simulatedUs += result.stats.simulatedUs
            if result.passed {
                passed += 1
                if verbose || seed != nil { print(summary(result)) }
            } else {
                failed += 1
                print(result.report)
                if stopAtFirstFailure { break }
            }
        }
        let wall = monotonicSeconds() - start
        let simulated = Double(simulatedUs) / 1_000_000
        let perNode = simulated * Double(nodes)
        print("simulated \(fixed(simulated)) s of a \(nodes)-node cluster in \(fixed(wall)) s: \(fixed(wall > 0 ? simulated / wall : 0)) cluster-seconds per second (\(fixed(wall > 0 ? perNode / wall : 0)) node-seconds per second)")
        print("\(passed) passed, \(failed) failed")
        if failed > 0 { throw ExitCode(1) }
    }

    private func summary(_ r: SimulationRun) -> String {
        let s = r.stats
        let leader = s.livenessLeaderUs.map { "\($0 / 1000)ms" } ?? "-"
        let converge = s.livenessConvergenceUs.map { "\($0 / 1000)ms" } ?? "-"
        let minority = s.minorityDownUs.map { ", with a minority down acknowledged again in \($0 / 1000)ms" } ?? ""
        return "seed \(r.seed) ok: \(r.acknowledged) acknowledged of \(s.proposed) proposed, \(s.reads) reads, \(s.leadersElected) leaders, \(s.crashes) crashes, \(s.partitions) partitions, \(s.pauses) pauses, \(s.transfers) transfers, \(s.retentions) retentions, \(s.resets) resets, \(s.delivered) delivered, \(s.dropped) dropped; after healing a leader in \(leader), converged in \(converge)\(minority)"
    }
}

private func parseRange(_ text: String) -> ClosedRange<UInt64>? {
    let parts = text.split(separator: ".", omittingEmptySubsequences: true)
    guard text.contains(".."), parts.count == 2, let a = UInt64(parts[0]), let b = UInt64(parts[1]), a <= b else { return nil }
    return a...b
}

private func fixed(_ x: Double) -> String {
    let scaled = (x * 10).rounded()
    return "\(Int(scaled) / 10).\(abs(Int(scaled) % 10))"
}

private func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

// A precondition failure inside the Raft core (a bug the simulator found) traps the process; the
// signal handler still names the seed and how to replay it. The note is prepared before each run
// so the handler only calls write(2).
private let crashNoteCapacity = 512
nonisolated(unsafe) private let crashNote = UnsafeMutablePointer<CChar>.allocate(capacity: crashNoteCapacity)
nonisolated(unsafe) private var crashNoteLength = 0

private func setCrashNote(seed: UInt64, nodes: Int, ticks: Int?, rules: Set<BrokenRule>) {
    var text = "\nraftsim: the process crashed while running seed \(seed); replay: raftsim --seed \(seed) --nodes \(nodes)"
    if let ticks { text += " --ticks \(ticks)" }
    for r in rules.sorted(by: { $0.rawValue < $1.rawValue }) { text += " --break \(r.rawValue)" }
    text += " --trace\n"
    let bytes = Array(text.utf8.prefix(crashNoteCapacity))
    for (k, b) in bytes.enumerated() { crashNote[k] = CChar(bitPattern: b) }
    crashNoteLength = bytes.count
}

private func installCrashNote() {
    for sig in [SIGILL, SIGTRAP, SIGSEGV, SIGABRT, SIGBUS] {
        signal(sig) { s in
            _ = write(2, crashNote, crashNoteLength)
            signal(s, SIG_DFL)
            raise(s)
        }
    }
}
