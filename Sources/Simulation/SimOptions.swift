import RaftCore

/// Everything that shapes one run. `SimOptions.swarm(seed:)` draws a different mix of faults for
/// every seed (TigerBeetle's swarm testing), so a range of seeds explores calm and hostile runs.
public struct SimOptions: Sendable, CustomStringConvertible {
    public var nodes: Int = 3
    /// Length of the safety phase, in nominal ticks (one tick is `tickIntervalUs` of simulated time).
    public var safetyTicks: Int = 1_000
    /// The liveness phase must converge within this many nominal ticks after the faults stop.
    public var livenessTicks: Int = 1_000
    /// After the healed group converges, a minority of followers crashes for good and this many new
    /// proposals must be acknowledged (the leader's own copy then counts toward every quorum).
    public var minorityDownStage = true
    public var minorityDownAcks = 16
    public var tickIntervalUs: UInt64 = 10_000

    // Raft configuration of every node.
    public var electionTimeoutTicks = 10
    public var heartbeatTicks = 1
    public var preVote = true
    /// RaftConfig.campaignOnStart (what mqbroker runs with; a swarm seed picks it half the time).
    public var campaignOnStart = false
    public var checkQuorum = true
    public var preferredLeader: Bool = false
    public var maxEntriesPerAppend = 64
    public var maxInflightAppends = 64
    public var maxAppendBytes = 1 << 20
    package var brokenRules: Set<BrokenRule> = []

    // Network.
    public var delayMeanUs: Double = 1_000
    public var delayMaxUs: Double = 20_000
    public var lossProbability: Double = 0
    public var duplicateProbability: Double = 0
    /// Links are FIFO (TCP); this share of messages is delayed past the ones sent after it.
    public var reorderProbability: Double = 0
    /// Inputs a node holds while its disk is busy or it is paused; more are dropped.
    public var mailboxLimit = 2_048

    // Disk.
    public var syncLatencyMeanUs: Double = 300
    public var syncLatencyMaxUs: Double = 5_000
    public var tearProbability: Double = 0.5
    /// A leader writes its own entries and goes on while they sync (`Ready.syncMayBeDeferred`), as
    /// mqbroker's driver does under SYNC_FLUSH; off, every Ready waits for its sync.
    public var deferLeaderSync = true

    // Clocks: each node's tick interval is scaled by a factor in 1 ± clockSkew.
    public var clockSkew: Double = 0

    // Faults: one is drawn every `faultIntervalMeanUs` on average, among the enabled kinds.
    public var faultIntervalMeanUs: Double = 300_000
    public var crashes = true
    /// A new leader crashes within a few milliseconds of winning, with this probability: what leaves
    /// uncommitted entries of several terms on different nodes (the Raft paper's figure 8).
    public var crashNewLeaderProbability: Double = 0
    public var pauses = true
    public var partitions = true
    public var transfers = true
    public var slowDisks = true
    /// The transport's connection-loss hints (`RaftNode.leaderConnectionLost`): when a node crashes,
    /// the nodes it had an open link to learn of it within a millisecond; and now and then a hint
    /// arrives about a peer that is in fact alive (a connection reset).
    public var connectionLossHints = true
    /// Retention deletes a prefix of a node's log now and then (never entries it has not applied); a
    /// follower that then lacks what its leader deleted is reset to the leader's base.
    public var retention = true

    // Workload.
    public var clients = 4
    public var proposalIntervalMeanUs: Double = 2_000
    public var proposalsInFlightPerClient = 4
    public var readProbability: Double = 0.1

    public init() {}

    /// A seed's own mix of faults and timings.
    public static func swarm(seed: UInt64, nodes: Int) -> SimOptions {
        var r = SimRandom(seed: seed ^ 0x5157_4152_4d53_494d)
        var o = SimOptions()
        o.nodes = nodes
        o.heartbeatTicks = r.pick([1, 1, 2, 3])
        o.preVote = r.chance(0.85)
        // From the seed itself, not the sequence of draws, so that every other choice of a seed
        // stays what it was before this option existed (recorded seeds replay the same faults).
        o.campaignOnStart = (seed &* 0x9E37_79B9_7F4A_7C15) >> 63 == 1
        // Likewise: three seeds in four defer the leader's syncs.
        o.deferLeaderSync = (seed &* 0xC2B2_AE3D_27D4_EB4F) >> 62 != 0
        o.checkQuorum = r.chance(0.85)
        o.preferredLeader = r.chance(0.2)
        o.maxEntriesPerAppend = r.pick([1, 2, 8, 64, 1024])
        o.maxInflightAppends = r.pick([1, 2, 16, 256])
        o.maxAppendBytes = r.pick([64, 4096, 1 << 20])
        o.delayMeanUs = r.pick([200, 1_000, 3_000, 8_000])
        o.delayMaxUs = o.delayMeanUs * r.pick([3, 10, 30])
        o.lossProbability = r.pick([0, 0, 0.01, 0.05, 0.2])
        o.duplicateProbability = r.pick([0, 0, 0.01, 0.05])
        o.reorderProbability = r.pick([0, 0, 0.01, 0.1])
        o.syncLatencyMeanUs = r.pick([100, 300, 2_000])
        o.syncLatencyMaxUs = o.syncLatencyMeanUs * 20
        o.tearProbability = r.pick([0, 0.5, 1])
        o.clockSkew = r.pick([0, 0.05, 0.2, 0.4])
        o.faultIntervalMeanUs = r.pick([50_000, 200_000, 1_000_000])
        o.crashes = r.chance(0.8)
        o.crashNewLeaderProbability = o.crashes ? r.pick([0, 0.1, 0.3, 0.6]) : 0
        o.pauses = r.chance(0.6)
        o.partitions = r.chance(0.8)
        o.transfers = r.chance(0.5)
        o.slowDisks = r.chance(0.4)
        o.clients = r.int(in: 1...6)
        o.proposalIntervalMeanUs = r.pick([1_000, 4_000, 20_000])
        o.proposalsInFlightPerClient = r.pick([1, 4, 32])
        o.readProbability = r.pick([0, 0.1, 0.3])
        o.connectionLossHints = r.chance(0.7)
        o.retention = r.chance(0.4)
        return o
    }

    public var description: String {
        var parts = ["nodes=\(nodes)", "ticks=\(safetyTicks)+\(livenessTicks)", "hb=\(heartbeatTicks)",
                     "preVote=\(preVote)", "campaignOnStart=\(campaignOnStart)", "checkQuorum=\(checkQuorum)", "preferred=\(preferredLeader)",
                     "append=\(maxEntriesPerAppend)e/\(maxAppendBytes)B", "inflight=\(maxInflightAppends)",
                     "delay=\(Int(delayMeanUs))us(max \(Int(delayMaxUs)))", "loss=\(lossProbability)",
                     "dup=\(duplicateProbability)", "reorder=\(reorderProbability)", "sync=\(Int(syncLatencyMeanUs))us\(deferLeaderSync ? "(leader deferred)" : "")", "tear=\(tearProbability)",
                     "skew=\(clockSkew)", "faultEvery=\(Int(faultIntervalMeanUs / 1000))ms"]
        var faults: [String] = []
        if crashes { faults.append(crashNewLeaderProbability > 0 ? "crash(new leaders \(crashNewLeaderProbability))" : "crash") }
        if pauses { faults.append("pause") }
        if partitions { faults.append("partition") }
        if transfers { faults.append("transfer") }
        if slowDisks { faults.append("slow-disk") }
        if connectionLossHints { faults.append("conn-loss-hints") }
        if retention { faults.append("retention") }
        parts.append("faults=" + (faults.isEmpty ? "none" : faults.joined(separator: ",")))
        parts.append("clients=\(clients)x\(proposalsInFlightPerClient) every \(Int(proposalIntervalMeanUs))us")
        if !brokenRules.isEmpty { parts.append("BROKEN=" + brokenRules.map(\.rawValue).sorted().joined(separator: ",")) }
        return parts.joined(separator: " ")
    }
}
