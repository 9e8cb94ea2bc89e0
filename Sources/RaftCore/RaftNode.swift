/// One member of a Raft group as a pure state machine (etcd raft's design): `step`, `tick`,
/// `propose`, `transferLeadership` and `readIndex` go in; a `Ready` comes out; the driver persists,
/// sends and applies it, then calls `advance`. No clocks, files, sockets, threads or system
/// randomness: time is `tick()`, randomness comes from `RaftConfig.randomSeed`.
///
/// Not thread-safe: one task owns a node.
public final class RaftNode<Log: RaftLogReader> {
    public let config: RaftConfig
    public var id: NodeID { config.id }

    /// Raft Figure 2 persistent state.
    public internal(set) var term: Term
    public internal(set) var vote: NodeID?
    /// The leader this node follows in `term` (itself when leading).
    public internal(set) var leader: NodeID?

    var log: RaftLog<Log>
    var roleState: RoleState = .follower
    let quorum: Int

    /// Ticks since the last election timeout reset (followers, candidates) or since the last
    /// check-quorum round (leaders).
    var electionElapsed = 0
    var heartbeatElapsed = 0
    var randomizedElectionTimeout = 0
    var random: RaftRandom

    var outbox: [Message] = []
    var outboxAfterPersist: [Message] = []
    var readStates: [ReadState] = []

    private var previousHardState: HardState
    private var previousSoftState: SoftState
    var readyOutstanding = false
    /// `leaderConnectionLost` shortened the election timeout to this node's turn; the next campaign,
    /// or hearing from the leader, restores a randomized full timeout.
    var earlyCampaign = false
    /// What shortened it: the start (`campaignOnStart`) or the leader's lost connection.
    var earlyCampaignReason = RoleChangeReason.leaderConnectionLost
    /// Why the role last changed, and the campaigns so far (observers only; never decide anything).
    public internal(set) var roleReason: RoleChangeReason = .started
    public internal(set) var elections = ElectionCounters()

    /// Starts (or restarts) a node over `log`, from the hard state persisted last time.
    /// `appliedIndex` is how far the driver's state machine has applied; committed entries after it
    /// come out in the first Ready.
    public init(config: RaftConfig, log: Log, hardState persisted: HardState = HardState(), appliedIndex: LogIndex = .zero) {
        config.validate()
        self.config = config
        self.quorum = config.voters.count / 2 + 1
        self.random = RaftRandom(seed: config.randomSeed ^ (config.id.rawValue &* 0x9E37_79B9_7F4A_7C15))
        // A driver makes a Ready's entries durable before the hard state that goes with them (so a
        // persisted commit index never points past the durable log). A crash between the two can
        // leave entries of a term the hard state has not reached: take that term, with no vote. No
        // vote was promised in it: vote responses leave only once the hard state is durable.
        var hardState = persisted
        if let lastTerm = log.term(at: log.lastIndex), lastTerm > hardState.term {
            hardState = HardState(term: lastTerm, vote: nil, commit: hardState.commit)
        }
        self.term = hardState.term
        self.vote = hardState.vote
        if let v = hardState.vote {
            precondition(config.voters.contains(v), "the persisted vote for \(v) names no member of \(config.voters)")
        }
        self.log = RaftLog(stable: log, committed: hardState.commit, applied: min(appliedIndex, hardState.commit), appliedBeforeStart: appliedIndex)
        // The adopted term is new hard state: the first Ready persists it.
        self.previousHardState = persisted
        self.previousSoftState = SoftState(role: .follower, leader: nil)
        becomeFollower(term: hardState.term, leader: nil, reason: .started)
        if config.campaignOnStart && config.preVote {
            earlyCampaign = true
            earlyCampaignReason = .campaignOnStart
            let turn = config.voters.sorted { $0.rawValue < $1.rawValue }.firstIndex(of: id) ?? 0
            randomizedElectionTimeout = 1 + turn * config.connectionLossCampaignSpacingTicks
        }
    }

    // MARK: Observers

    public var role: Role { roleState.role }
    public var softState: SoftState { SoftState(role: role, leader: leader) }
    public var hardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }
    public var commitIndex: LogIndex { log.committed }
    public var appliedIndex: LogIndex { log.applied }
    public var lastIndex: LogIndex { log.lastIndex }
    public var lastTerm: Term { log.lastTerm }
    public func term(at index: LogIndex) -> Term? { log.term(at: index) }

    /// A snapshot of everything `/raft/state` shows.
    public var status: RaftStatus {
        var peers: [RaftStatus.Peer] = []
        var transferee: NodeID?
        if case .leader(let l) = roleState {
            transferee = l.transferee
            for v in config.voters where v != id {
                let p = l.progress[v]!
                peers.append(.init(id: v, match: p.match, next: p.next, state: p.state.rawValue,
                                   inflightAppends: p.inflights.count, recentActive: p.recentActive))
            }
        }
        return RaftStatus(id: id, role: role, term: term, vote: vote, leader: leader, commit: log.committed,
                          applied: log.applied, lastIndex: log.lastIndex, lastTerm: log.lastTerm,
                          persistedIndex: log.syncedLastIndex, leadershipTransferee: transferee, peers: peers,
                          roleReason: roleReason, elections: elections)
    }

    /// This leader owes a follower the commit index (`announceCommit`): the next tick, counting or
    /// not, sends it. A driver that sleeps through counting ticks wakes for the next one.
    public var commitUpdateDue: Bool {
        guard case .leader(let l) = roleState, l.commitUpdateOwed else { return false }
        return followerOwedCommit(l) != nil
    }

    // MARK: Inputs

    /// How many more `tick()` calls it takes until one does more than count: the leader's next
    /// heartbeat or check-quorum round, or a follower's or candidate's election timeout. Ticks
    /// before that only advance counters (a leader's also send the commit updates
    /// `commitUpdateDue` announces), so a driver may sleep through them and deliver them later,
    /// provided it delivers every elapsed tick before the next input: an input may reset the
    /// timers, and ticks owed from before it would then count after it. At least 1.
    public var ticksUntilTimeout: Int {
        switch roleState {
        case .leader:
            return max(1, min(config.heartbeatTicks - heartbeatElapsed, config.electionTimeoutTicks - electionElapsed))
        case .follower, .preCandidate, .candidate:
            return max(1, randomizedElectionTimeout - electionElapsed)
        }
    }

    /// One unit of logical time.
    public func tick() {
        switch roleState {
        case .leader: tickLeader()
        case .follower, .preCandidate, .candidate: tickElection()
        }
    }

    /// Appends `data` to the log if this node leads. Returns the entry's index: the proposal is
    /// committed when an entry of this index and of the returned term comes out committed.
    @discardableResult
    public func propose(_ data: [UInt8]) throws(RaftError) -> (index: LogIndex, term: Term) {
        let range = try propose(batch: [data])
        return (range.lowerBound, term)
    }

    /// Appends several proposals at once (they travel in the same append messages).
    @discardableResult
    public func propose(batch: [[UInt8]]) throws(RaftError) -> ClosedRange<LogIndex> {
        guard case .leader = roleState else { throw .notLeader(leader: leader) }
        precondition(!batch.isEmpty, "propose: an empty batch")
        var bytes = 0
        for data in batch {
            if data.isEmpty { throw .emptyProposal }
            if data.count > config.maxEntryBytes { throw .proposalTooLarge(bytes: data.count, limit: config.maxEntryBytes) }
            bytes += data.count
        }
        let first = log.lastIndex.next
        try withLeader { (l) throws(RaftError) in
            if let t = l.transferee { throw .leadershipTransferInProgress(to: t) }
            if l.uncommitted.count + batch.count > config.maxPendingProposals {
                throw .tooManyPendingProposals(limit: config.maxPendingProposals)
            }
            if l.uncommitted.bytes + bytes > config.maxUncommittedBytes {
                throw .tooManyUncommittedBytes(limit: config.maxUncommittedBytes)
            }
        }
        appendAsLeader(batch)
        broadcastAppend()
        return first...log.lastIndex
    }

    /// Asks for a linearizable read point. The answer comes later as a `ReadState` carrying
    /// `context` (on a follower, once the leader answers).
    public func readIndex(context: [UInt8]) throws(RaftError) {
        switch roleState {
        case .leader:
            try leaderRead(context: context, from: id)
        case .follower:
            guard let leader else { throw .notLeader(leader: nil) }
            send(Message(from: id, to: leader, term: term, body: .readIndex(context: context)))
        case .preCandidate, .candidate:
            throw .notLeader(leader: nil)
        }
    }

    /// The transport saw its connection to `peer` close: the process most likely died (a crashed
    /// process's sockets are closed by its kernel at once). If `peer` is this follower's leader, the
    /// follower forgets it, so its lease no longer turns away the others' votes, and campaigns in its
    /// turn (`connectionLossCampaignSpacingTicks`) instead of after an election timeout. Only a hint: a pre-vote
    /// round still decides, and a leader that is in fact alive keeps its followers (the others still
    /// hold its lease and refuse the pre-vote; its next heartbeat brings this node back).
    public func leaderConnectionLost(_ peer: NodeID) {
        // Without pre-vote a false alarm would bump the term and depose a live leader.
        guard config.preVote, case .follower = roleState, leader == peer else { return }
        earlyCampaign = true
        earlyCampaignReason = .leaderConnectionLost
        leader = nil
        electionElapsed = 0
        let turn = config.voters.filter { $0 != peer }.sorted { $0.rawValue < $1.rawValue }.firstIndex(of: id) ?? 0
        randomizedElectionTimeout = 1 + turn * config.connectionLossCampaignSpacingTicks
    }

    /// Moves leadership to `target`: the leader stops taking proposals, brings the target up to
    /// date, then tells it to campaign at once (TimeoutNow, thesis §3.10). Aborted if it does not
    /// finish within an election timeout.
    public func transferLeadership(to target: NodeID) throws(RaftError) {
        guard case .leader = roleState else { throw .notLeader(leader: leader) }
        guard config.voters.contains(target) else { throw .unknownNode(target) }
        startTransfer(to: target)
    }

    // MARK: Output

    /// True when `ready()` has something to do.
    public var hasReady: Bool {
        precondition(!readyOutstanding, "hasReady while a Ready is not advanced")
        return softState != previousSoftState || hardState != previousHardState
            || !log.unstableEntries.isEmpty || log.hasNextCommittedEntries || log.resetToHandOut != nil
            || !outbox.isEmpty || !outboxAfterPersist.isEmpty || !readStates.isEmpty
    }

    /// What the driver must do now. Call `advance` with it before the next `ready()`.
    public func ready() -> Ready {
        precondition(!readyOutstanding, "ready() called twice without advance()")
        log.skipAlreadyApplied()
        let hs = hardState
        let ss = softState
        let entries = log.unstableEntries
        let truncateAfter = log.pendingTruncation
        let reset = log.resetToHandOut
        let termOrVoteChanged = hs.term != previousHardState.term || hs.vote != previousHardState.vote
        // Messages after persisting promise durability of the whole log they speak for: when a
        // deferred sync is still out, this Ready must sync even without entries of its own.
        let unsyncedWrites = log.syncedLastIndex < log.persistedLastIndex
        let mustSync = !entries.isEmpty || truncateAfter != nil || reset != nil || termOrVoteChanged
            || (unsyncedWrites && !outboxAfterPersist.isEmpty)
        // A leader's own entries need not be durable before it goes on (thesis §10.2.1; etcd's
        // asynchronous storage writes): it counts itself toward their quorum once they are.
        let deferrable = role == .leader && !entries.isEmpty && truncateAfter == nil && reset == nil
            && !termOrVoteChanged && outboxAfterPersist.isEmpty
        let r = Ready(
            softState: ss == previousSoftState ? nil : ss,
            hardState: hs == previousHardState ? nil : hs,
            resetLog: reset,
            truncateAfter: truncateAfter,
            entries: entries,
            committedEntries: log.nextCommittedEntries(maxBytes: config.maxCommittedBytesPerReady),
            messages: outbox,
            messagesAfterPersist: outboxAfterPersist,
            readStates: readStates,
            mustSync: mustSync,
            syncMayBeDeferred: deferrable
        )
        outbox.removeAll()
        outboxAfterPersist.removeAll()
        readStates.removeAll()
        previousHardState = hs
        previousSoftState = ss
        log.markInProgress()
        readyOutstanding = true
        return r
    }

    /// The driver did everything `ready` asked: its entries and hard state are written, durable when
    /// `mustSync` said so, and its committed entries applied. With `syncDeferred` (allowed only when
    /// `ready.syncMayBeDeferred`), the entries are written but their sync is still running: the
    /// driver reports it with `entriesSynced(through:term:)` once it returns.
    public func advance(_ ready: Ready, syncDeferred: Bool = false) {
        precondition(readyOutstanding, "advance() without ready()")
        precondition(!syncDeferred || ready.syncMayBeDeferred, "advance(syncDeferred:) for a Ready that must sync")
        readyOutstanding = false
        log.advanceStable()
        // A Ready that synced made everything written before it durable too (one fdatasync covers
        // the file): deferred syncs still out are covered.
        if ready.mustSync && !syncDeferred { log.markAllSynced() }
        if let last = ready.committedEntries.last {
            log.markApplied(through: last.index)
        }
        countOwnDurableEntries()
    }

    /// A deferred sync returned: the entries written through `index` (the last of them of `term`)
    /// are durable. Stale reports (the entry was replaced since, or a later sync already covered it)
    /// are ignored. Not while a Ready is outstanding (the driver reports between Readies).
    public func entriesSynced(through index: LogIndex, term: Term) {
        precondition(!readyOutstanding, "entriesSynced() while a Ready is outstanding")
        if log.markSynced(through: index, term: term) { countOwnDurableEntries() }
    }

    /// The leader counts itself only for what is durable here (thesis §10.2.1: it may send before its
    /// own write, but its own vote for commit needs the write on disk).
    private func countOwnDurableEntries() {
        guard case .leader = roleState else { return }
        let synced = config.brokenRules.contains(.countOwnBeforeSync) ? log.persistedLastIndex : log.syncedLastIndex
        let committedNow = withLeader { l in l.progress[id]!.maybeUpdate(synced) }
        if committedNow && maybeCommit() {
            announceCommit()
        }
    }

    // MARK: Sending

    func send(_ m: Message) {
        precondition(m.from == id && m.to != id, "send: \(m) is not from this node to another")
        switch m.body {
        case .appendResponse(.accepted(let match)):
            if config.brokenRules.contains(.ackBeforePersist) {
                if !supersedeAcceptance(in: &outbox, m, match: match) { outbox.append(m) }
            } else if !supersedeAcceptance(in: &outboxAfterPersist, m, match: match) {
                outboxAfterPersist.append(m)
            }
        case .voteResponse, .appendResponse:
            if config.brokenRules.contains(.ackBeforePersist) { outbox.append(m) } else { outboxAfterPersist.append(m) }
        case .vote:
            // Our own vote for ourselves must be durable before we ask for others'.
            outboxAfterPersist.append(m)
        case .append(let prevIndex, _, let entries, let commit):
            if coalesceAppend(m, prevIndex: prevIndex, entries: entries, commit: commit) { return }
            outbox.append(m)
        default:
            outbox.append(m)
        }
    }

    /// A follower that stepped several appends in one batch of inputs accepts them all: the last
    /// acceptance says everything the earlier ones do (the leader takes `match` as a high-water
    /// mark), so it replaces an unsent acceptance to the same leader in the same term instead of
    /// following it, and the leader reads and steps one answer instead of several. Measured under
    /// load: followers answered 2.0-2.2 appends per write. Returns whether `m` was taken this way.
    private func supersedeAcceptance(in box: inout [Message], _ m: Message, match: LogIndex) -> Bool {
        guard let k = box.lastIndex(where: { $0.to == m.to }), box[k].term == m.term,
              case .appendResponse(.accepted(let earlier)) = box[k].body, earlier <= match else { return false }
        box[k] = m
        return true
    }

    /// Whether the last unsent message to `peer` is an append of this term that a bare commit update
    /// to it would join (`coalesceAppend`).
    func hasUnsentAppendEndingAtNext(_ peer: NodeID) -> Bool {
        guard let k = outbox.lastIndex(where: { $0.to == peer }), outbox[k].term == term,
              case .append(let p0, _, let e0, _) = outbox[k].body else { return false }
        return withLeader { l in (e0.last?.index ?? p0) == l.progress[peer]!.next.previous }
    }

    /// An append that continues the last unsent message to the same follower, an append of the
    /// same term ending where this one starts, joins it instead of going out on its own: a bare
    /// commit-index update raises that append's commit, and entries replace a bare update before
    /// them. What the follower does with the one message is what it would do with the two (it
    /// commits at most the last entry a message carries, so the raised commit commits nothing the
    /// second would not), and it answers once. On the leader, the commit an acknowledgement
    /// advances and the entries proposed in the same batch of inputs then travel together: without
    /// this, every commit cost each follower a message of its own, its wake-up and its answer
    /// (etcd sends both; docs/raft.md, "Commit updates"). Returns whether `m` was taken into the
    /// outbox this way.
    private func coalesceAppend(_ m: Message, prevIndex: LogIndex, entries: [Entry], commit: LogIndex) -> Bool {
        guard let k = outbox.lastIndex(where: { $0.to == m.to }), outbox[k].term == m.term,
              case .append(let p0, let t0, let e0, let c0) = outbox[k].body,
              (e0.last?.index ?? p0) == prevIndex else { return false }
        if entries.isEmpty {
            outbox[k].body = .append(prevIndex: p0, prevTerm: t0, entries: e0, commit: max(c0, commit))
            return true
        }
        // A leader's commit index only grows; the guard keeps the rule whole if that ever changed.
        if e0.isEmpty && commit >= c0 {
            outbox[k] = m
            return true
        }
        return false
    }
}

/// A small seeded generator (SplitMix64) for election timeouts; RaftCore draws no system randomness.
struct RaftRandom {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A value in 0..<bound.
    mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0)
        return Int(next() % UInt64(bound))
    }
}

/// What observers may read about a node.
public struct RaftStatus: Sendable, Hashable {
    public struct Peer: Sendable, Hashable {
        public var id: NodeID
        public var match: LogIndex
        public var next: LogIndex
        public var state: String
        public var inflightAppends: Int
        public var recentActive: Bool
    }
    public var id: NodeID
    public var role: Role
    public var term: Term
    public var vote: NodeID?
    public var leader: NodeID?
    public var commit: LogIndex
    public var applied: LogIndex
    public var lastIndex: LogIndex
    public var lastTerm: Term
    public var persistedIndex: LogIndex
    public var leadershipTransferee: NodeID?
    /// Per follower, when this node leads.
    public var peers: [Peer]
    public var roleReason: RoleChangeReason
    public var elections: ElectionCounters
}
