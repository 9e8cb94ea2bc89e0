import RaftCore

/// One seed, run and judged: what `raftsim` prints and what the tests assert.
public struct SimulationRun: Sendable {
    public var seed: UInt64
    public var options: SimOptions
    public var violation: Violation?
    public var stats: SimStats
    public var acknowledged: Int
    /// The seed, the options, the faults with their times and the events that led to the failure.
    public var report: String

    public var passed: Bool { violation == nil }

    /// Runs `seed` with its swarm options, `ticks` long, with `brokenRules` broken on purpose.
    package static func run(seed: UInt64, nodes: Int, ticks: Int? = nil, brokenRules: Set<BrokenRule> = [],
                           traceEvents: Int = 60, echo: ((String) -> Void)? = nil) -> SimulationRun {
        var options = SimOptions.swarm(seed: seed, nodes: nodes)
        if let ticks { options.safetyTicks = ticks }
        options.brokenRules = brokenRules
        let sim = Simulator(seed: seed, options: options)
        sim.trace.echo = echo
        let violation = sim.run()
        var report = ""
        if let violation {
            var lines: [String] = []
            lines.append("seed \(seed) FAILED at \(SimTime(microseconds: sim.stats.simulatedUs)): \(violation)")
            lines.append("  options: \(options)")
            lines.append("  faults (\(sim.trace.faults.count)):")
            for (t, f) in sim.trace.faults.suffix(40) { lines.append("    \(t) \(f)") }
            lines.append("  last events (of \(sim.trace.total)):")
            for e in sim.trace.last(traceEvents) { lines.append("    " + e) }
            var replay = "raftsim --seed \(seed) --nodes \(nodes)"
            if let ticks { replay += " --ticks \(ticks)" }
            for r in brokenRules.sorted(by: { $0.rawValue < $1.rawValue }) { replay += " --break \(r.rawValue)" }
            lines.append("  replay: \(replay) --trace")
            report = lines.joined(separator: "\n")
        }
        return SimulationRun(seed: seed, options: options, violation: violation, stats: sim.stats,
                             acknowledged: sim.acknowledged, report: report)
    }
}
