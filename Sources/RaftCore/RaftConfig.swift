/// How one node of a group behaves. Every limit is named and positive: there is no "0 means unlimited".
public struct RaftConfig: Sendable {
    /// This node.
    public var id: NodeID
    /// Every voting member, this node included.
    public var voters: [NodeID]
    /// A follower that hears nothing for a random number of ticks in
    /// [electionTimeoutTicks, electionTimeoutMaxTicks) campaigns. Also the leader's check-quorum
    /// period and the length of a follower's leader lease.
    public var electionTimeoutTicks: Int = 10
    /// The upper end (exclusive) of the randomized election timeout; nil means 2 * electionTimeoutTicks
    /// (RaftMQ's raftElectionTimeoutMaxMs).
    public var electionTimeoutMaxTicks: Int? = nil
    var electionTimeoutRangeTicks: Int { (electionTimeoutMaxTicks ?? 2 * electionTimeoutTicks) - electionTimeoutTicks }
    /// A leader sends heartbeats every this many ticks. Must be less than electionTimeoutTicks.
    public var heartbeatTicks: Int = 1
    /// Campaign with a pre-vote round first, so a node that was cut off does not disrupt the group by
    /// bumping terms when it comes back (Raft thesis §9.6).
    public var preVote: Bool = true
    /// A leader that has not heard from a quorum for an election timeout steps down, and a follower
    /// that heard from its leader within the election timeout ignores votes (thesis §6.2, §4.2.3).
    public var checkQuorum: Bool = true
    /// The node the group moves its leadership to when that node is healthy and caught up.
    public var preferredLeader: NodeID? = nil
    /// When the transport reports that the leader's connection closed (`leaderConnectionLost`), the
    /// surviving voters campaign one after another, this many ticks apart, in the order of their ids:
    /// the first after one tick, the next `connectionLossCampaignSpacingTicks` later, and so on. All
    /// of them learn of the crash at once, and a random delay lets two collide and split the vote
    /// (measured: 1 kill in 5 took an extra election timeout); spaced turns let the first win alone,
    /// and if its log is too old to win, the next one's turn comes.
    public var connectionLossCampaignSpacingTicks: Int = 3
    /// A node that starts (the group's first start, a restart after a stop or a crash) campaigns in
    /// its turn by id, 1 + rank x `connectionLossCampaignSpacingTicks` ticks after its start, instead
    /// of after a full election timeout: after a whole group restarts, the first member up with a
    /// log good enough leads at once (measured by the chaos suite: a kill-all then cost the election
    /// timeout on top of the restart, and the slowest healings passed 2 s). Only with `preVote`: a
    /// node restarting beside a live leader asks for pre-votes its peers refuse (they hold the
    /// leader's lease), and then hears the leader's heartbeat.
    public var campaignOnStart: Bool = false
    /// Seeds the generator of randomized election timeouts. Give each node a different seed.
    public var randomSeed: UInt64 = 0

    /// Append messages in flight to one follower before the leader waits for answers.
    public var maxInflightAppends: Int = 256
    /// Entry bytes in flight to one follower before the leader waits for answers.
    public var maxInflightBytes: Int = 32 << 20
    /// Entries in one append message.
    public var maxEntriesPerAppend: Int = 1024
    /// Entry bytes in one append message (a single larger entry still goes alone).
    public var maxAppendBytes: Int = 1 << 20
    /// Bytes of proposals the leader holds that are not yet committed.
    public var maxUncommittedBytes: Int = 64 << 20
    /// Proposals the leader holds that are not yet committed.
    public var maxPendingProposals: Int = 10_000
    /// The largest single proposal.
    public var maxEntryBytes: Int = 4 << 20
    /// ReadIndex requests waiting for their heartbeat round or for the leader's first commit.
    public var maxPendingReads: Int = 10_000
    /// Committed entry bytes handed out in one Ready (at least one entry always goes).
    public var maxCommittedBytesPerReady: Int = 8 << 20

    /// Deliberately broken rules, only for proving that the simulator's checkers catch real bugs.
    package var brokenRules: Set<BrokenRule> = []

    public init(id: NodeID, voters: [NodeID]) {
        self.id = id
        self.voters = voters
    }

    /// Checks the configuration; every problem is a programmer error at the call site.
    func validate() {
        precondition(Set(voters).count == voters.count, "RaftConfig: voters \(voters) are not unique")
        precondition(voters.contains(id), "RaftConfig: \(id) is not among the voters \(voters)")
        precondition(electionTimeoutTicks > 0, "RaftConfig: electionTimeoutTicks must be positive")
        precondition(heartbeatTicks > 0, "RaftConfig: heartbeatTicks must be positive")
        precondition(connectionLossCampaignSpacingTicks > 0, "RaftConfig: connectionLossCampaignSpacingTicks must be positive")
        if let m = electionTimeoutMaxTicks {
            precondition(m > electionTimeoutTicks, "RaftConfig: electionTimeoutMaxTicks must be above electionTimeoutTicks")
        }
        precondition(heartbeatTicks < electionTimeoutTicks, "RaftConfig: heartbeatTicks must be less than electionTimeoutTicks")
        precondition(maxInflightAppends > 0, "RaftConfig: maxInflightAppends must be positive")
        precondition(maxInflightBytes > 0, "RaftConfig: maxInflightBytes must be positive")
        precondition(maxEntriesPerAppend > 0, "RaftConfig: maxEntriesPerAppend must be positive")
        precondition(maxAppendBytes > 0, "RaftConfig: maxAppendBytes must be positive")
        precondition(maxUncommittedBytes > 0, "RaftConfig: maxUncommittedBytes must be positive")
        precondition(maxPendingProposals > 0, "RaftConfig: maxPendingProposals must be positive")
        precondition(maxEntryBytes > 0, "RaftConfig: maxEntryBytes must be positive")
        precondition(maxPendingReads > 0, "RaftConfig: maxPendingReads must be positive")
        precondition(maxCommittedBytesPerReady > 0, "RaftConfig: maxCommittedBytesPerReady must be positive")
        if let p = preferredLeader {
            precondition(voters.contains(p), "RaftConfig: preferredLeader \(p) is not among the voters")
        }
    }
}

/// Rules the simulator's self-test breaks on purpose (`raftsim --break`).
package enum BrokenRule: String, Sendable, Hashable, CaseIterable {
    /// Commit by counting replicas of an entry of an earlier term (what Raft §5.4.2 forbids, and what
    /// DLedger 0.2.2 does).
    case commitOldTermByCounting = "old-term-commit"
    /// Grant votes without the election restriction (§5.4.1).
    case voteForStaleLog = "stale-vote"
    /// Acknowledge appends before they are durable.
    case ackBeforePersist = "ack-before-persist"
    /// A leader counts its own entries toward their quorum once written, before a deferred sync
    /// made them durable (`Ready.syncMayBeDeferred`).
    case countOwnBeforeSync = "own-before-sync"
    /// A driver's rule, broken by the simulator's driver model (RaftNode ignores it): the leader's
    /// deferred writes are never made durable on their own, only by a later full sync.
    case neverSyncDeferred = "never-sync-deferred"
}

/// Why a request to the node was refused. The driver turns these into client answers (SYSTEM_BUSY,
/// "not leader, try X", ...).
public enum RaftError: Error, Hashable, Sendable, CustomStringConvertible {
    case notLeader(leader: NodeID?)
    case leadershipTransferInProgress(to: NodeID)
    case emptyProposal
    case proposalTooLarge(bytes: Int, limit: Int)
    case tooManyUncommittedBytes(limit: Int)
    case tooManyPendingProposals(limit: Int)
    case tooManyPendingReads(limit: Int)
    case unknownNode(NodeID)

    public var description: String {
        switch self {
        case .notLeader(let l): return "not the leader" + (l.map { "; the leader is \($0)" } ?? "; no leader is known")
        case .leadershipTransferInProgress(let to): return "leadership is moving to \(to)"
        case .emptyProposal: return "a proposal must carry at least one byte"
        case .proposalTooLarge(let b, let l): return "a proposal of \(b) bytes exceeds maxEntryBytes (\(l))"
        case .tooManyUncommittedBytes(let l): return "more than maxUncommittedBytes (\(l)) are waiting to commit"
        case .tooManyPendingProposals(let l): return "more than maxPendingProposals (\(l)) are waiting to commit"
        case .tooManyPendingReads(let l): return "more than maxPendingReads (\(l)) reads are waiting"
        case .unknownNode(let n): return "\(n) is not a member of this group"
        }
    }
}
