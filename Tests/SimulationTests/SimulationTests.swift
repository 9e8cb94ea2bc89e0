import Testing
@testable import Simulation
@testable import RaftCore
import TestSupport

/// Whole-cluster runs from fixed seeds. CI also runs `raftsim` in release over 500 seeds per
/// cluster size (scripts/simulate.sh); these are the quick, in-process ones.
@Suite(.ownThreads) struct SimulationSeedTests {
    @Test(arguments: [3, 5])
    func fixedSeedsKeepEveryInvariantAndConverge(nodes: Int) {
        for seed in UInt64(1)...8 {
            let r = SimulationRun.run(seed: seed, nodes: nodes, ticks: 300)
            #expect(r.passed, "\(r.report)")
            #expect(r.stats.livenessConvergenceUs != nil, "seed \(seed) did not converge")
            #expect(r.stats.minorityDownUs != nil, "seed \(seed): no acknowledgements with a minority down")
        }
    }

    @Test func aCalmClusterAcknowledgesWhatItIsSentAndElectsOneLeader() {
        var o = SimOptions()
        o.safetyTicks = 300
        o.crashes = false
        o.pauses = false
        o.partitions = false
        o.transfers = false
        o.slowDisks = false
        let sim = Simulator(seed: 7, options: o)
        #expect(sim.run() == nil)
        #expect(sim.stats.leadersElected == 1, "nothing disturbs the first leader")
        #expect(sim.acknowledged > 100, "\(sim.acknowledged) acknowledged")
        #expect(sim.stats.proposed - sim.acknowledged <= o.clients * o.proposalsInFlightPerClient,
                "only proposals in flight when the safety phase ended are not acknowledged")
    }

    @Test func aSeedReplaysExactly() {
        let a = SimulationRun.run(seed: 42, nodes: 3, ticks: 300)
        let b = SimulationRun.run(seed: 42, nodes: 3, ticks: 300)
        #expect(a.stats.events == b.stats.events)
        #expect(a.stats.delivered == b.stats.delivered)
        #expect(a.stats.crashes == b.stats.crashes)
        #expect(a.acknowledged == b.acknowledged)
        let c = SimulationRun.run(seed: 43, nodes: 3, ticks: 300)
        #expect(c.stats.events != a.stats.events, "another seed is another run")
    }

    @Test func swarmOptionsDifferBetweenSeeds() {
        let descriptions = Set((UInt64(1)...20).map { SimOptions.swarm(seed: $0, nodes: 3).description })
        #expect(descriptions.count > 15)
    }
}

/// The checkers can fail: a deliberately broken rule is caught (STYLE 13; the proof that
/// the simulator finds real bugs). scripts/simulate.sh repeats these in release for 3 and 5 nodes.
@Suite(.ownThreads) struct BrokenRuleTests {
    @Test func countingAnOldTermsEntryTowardCommitIsCaught() {
        let found = (UInt64(1)...10).contains { !SimulationRun.run(seed: $0, nodes: 3, ticks: 400, brokenRules: [.commitOldTermByCounting]).passed }
        #expect(found, "committing an old term's entry by counting (§5.4.2 broken) went unnoticed for 10 seeds")
    }

    @Test func votingWithoutTheElectionRestrictionIsCaught() {
        let found = (UInt64(1)...10).contains { !SimulationRun.run(seed: $0, nodes: 3, ticks: 400, brokenRules: [.voteForStaleLog]).passed }
        #expect(found, "a vote for a stale log (§5.4.1 broken) went unnoticed for 10 seeds")
    }

    @Test func acknowledgingBeforeTheWriteIsDurableIsCaught() {
        // Rarer in three nodes since leaders defer their syncs (seed 108 at 400 ticks); five nodes
        // catch it at seed 5.
        let found = (UInt64(1)...10).contains { !SimulationRun.run(seed: $0, nodes: 5, brokenRules: [.ackBeforePersist]).passed }
        #expect(found, "acknowledging appends before fsync went unnoticed for 10 seeds of 5 nodes")
    }

    @Test func aLeaderCountingItsUnsyncedCopyIsCaught() {
        // Seed 2 at the default length.
        let found = (UInt64(1)...10).contains { !SimulationRun.run(seed: $0, nodes: 3, brokenRules: [.countOwnBeforeSync]).passed }
        #expect(found, "a leader counting its own unsynced write toward commit went unnoticed for 10 seeds")
    }

    @Test func aLeaderThatNeverSyncsItsDeferredWritesIsCaughtWithAMinorityDown() {
        // With every member up, the two followers' copies commit without the leader's, so a driver
        // that never makes its deferred writes durable goes unnoticed (checked: 40 seeds of 3 nodes,
        // 20 of 5); once a minority is down, every commit needs the leader's copy.
        func passes(_ seed: UInt64, nodes: Int, minorityDown: Bool) -> Bool {
            var o = SimOptions.swarm(seed: seed, nodes: nodes)
            o.safetyTicks = 300
            o.brokenRules = [.neverSyncDeferred]
            o.minorityDownStage = minorityDown
            guard let v = Simulator(seed: seed, options: o).run() else { return true }
            // Caught by the stage's liveness check, not by another checker.
            #expect(v.rule == "liveness" && "\(v)".contains("down:"), "seed \(seed): \(v)")
            return false
        }
        let seeds = UInt64(1)...5
        #expect(seeds.allSatisfy { passes($0, nodes: 3, minorityDown: false) }, "without the stage nothing should stall")
        // Deferring is drawn for three seeds in four (seed 4 does not defer, and passes).
        for seed in seeds {
            let defers = SimOptions.swarm(seed: seed, nodes: 3).deferLeaderSync
            #expect(passes(seed, nodes: 3, minorityDown: true) == !defers, "seed \(seed), deferring: \(defers)")
        }
    }

    @Test func aFailureReportNamesTheSeedTheFaultsAndHowToReplay() throws {
        let run = try #require((UInt64(1)...10).lazy.map { SimulationRun.run(seed: $0, nodes: 3, ticks: 400, brokenRules: [.voteForStaleLog]) }.first { !$0.passed })
        #expect(run.report.contains("seed \(run.seed) FAILED"))
        #expect(run.report.contains("faults ("))
        #expect(run.report.contains("last events"))
        #expect(run.report.contains("replay: raftsim --seed \(run.seed) --nodes 3 --ticks 400 --break stale-vote"))
    }
}

@Suite(.ownThreads) struct CheckerTests {
    private func node(_ slot: Int, leaderOf term: Term) -> SimNode {
        let n = SimNode(slot: slot, tickIntervalUs: 10_000)
        var config = RaftConfig(id: n.id, voters: [NodeID(0), NodeID(1), NodeID(2)])
        config.preVote = false
        n.raft = RaftNode(config: config, log: n.reader, hardState: HardState(term: term), appliedIndex: .zero)
        return n
    }

    @Test func twoLeadersInOneTermAreAnElectionSafetyViolation() throws {
        var checker = Checker(nodes: 3)
        let a = node(0, leaderOf: Term(3)), b = node(1, leaderOf: Term(3))
        for n in [a, b] {
            n.raft!.campaign(.election)  // term 4, then votes
            n.raft!.step(Message(from: NodeID(2), to: n.id, term: Term(4), body: .voteResponse(granted: true)))
            #expect(n.raft!.role == .leader)
        }
        try checker.observe(a)
        #expect(throws: Violation.self) { try checker.observe(b) }
    }

    @Test func aCommittedEntryThatChangesIsAStateMachineSafetyViolation() throws {
        var checker = Checker(nodes: 3)
        let a = SimNode(slot: 0, tickIntervalUs: 10_000), b = SimNode(slot: 1, tickIntervalUs: 10_000)
        a.disk.append([Entry(term: Term(1), index: LogIndex(1), data: [1])])
        b.disk.append([Entry(term: Term(2), index: LogIndex(1), data: [2])])
        for (n, t) in [(a, Term(1)), (b, Term(2))] {
            n.raft = RaftNode(config: RaftConfig(id: n.id, voters: [NodeID(0), NodeID(1), NodeID(2)]), log: n.reader,
                              hardState: HardState(term: t, commit: LogIndex(1)), appliedIndex: .zero)
        }
        try checker.afterWrite(a)
        #expect(throws: Violation.self) { try checker.afterWrite(b) }
    }
}

@Suite(.ownThreads) struct SimDiskTests {
    private func entries(_ range: ClosedRange<UInt64>, term: UInt64 = 1) -> [Entry] {
        range.map { Entry(term: Term(term), index: LogIndex($0), data: [UInt8($0 & 0xff)]) }
    }

    @Test func aCrashNeverLosesWhatWasSynced() {
        for seed in UInt64(1)...200 {
            var random = SimRandom(seed: seed)
            let disk = SimDisk()
            disk.append(entries(1...5))
            disk.write(hardState: HardState(term: Term(1), vote: NodeID(0), commit: LogIndex(3)))
            disk.sync()
            disk.truncate(after: LogIndex(4))
            disk.append(entries(5...9, term: 2))
            disk.write(hardState: HardState(term: Term(2), commit: LogIndex(4)))
            disk.crash(&random, tearProbability: 1)
            #expect(disk.lastIndex >= LogIndex(4), "seed \(seed): synced entries 1...4 survive")
            #expect(disk.entries.prefix(4) == entries(1...4)[...])
            let tail = disk.entries.dropFirst(4)
            #expect(tail == entries(5...5)[...] || tail.allSatisfy { $0.term == Term(2) }, "seed \(seed): the tail is the old 5 or a prefix of the new writes")
            #expect(disk.hardState.term >= Term(1))
            #expect(disk.entries == disk.durableEntries, "after a reboot the node reads what is durable")
        }
    }

    @Test func crashesTearUnsyncedWritesInEveryWay() {
        var kept = Set<Int>()
        for seed in UInt64(1)...200 {
            var random = SimRandom(seed: seed)
            let disk = SimDisk()
            disk.append(entries(1...10))
            disk.crash(&random, tearProbability: 0.5)
            kept.insert(disk.entries.count)
        }
        #expect(kept.contains(0) && kept.contains(10) && kept.count > 3, "lost, kept and torn: \(kept.sorted())")
    }
}

@Suite(.ownThreads) struct SimRandomTests {
    @Test func theGeneratorIsDeterministicAndTheExponentialHasItsMean() {
        var a = SimRandom(seed: 9), b = SimRandom(seed: 9)
        #expect((0..<100).map { _ in a.next() } == (0..<100).map { _ in b.next() })
        var r = SimRandom(seed: 1)
        let samples = (0..<20_000).map { _ in r.exponential(mean: 1000, max: 1e9) }
        let mean = samples.reduce(0, +) / Double(samples.count)
        #expect(mean > 950 && mean < 1050, "mean \(mean)")
        #expect(samples.allSatisfy { $0 >= 0 })
    }
}
