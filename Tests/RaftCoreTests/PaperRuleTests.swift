import Testing
@testable import RaftCore
import TestSupport

// Tests named after the rules of the Raft paper (and thesis) they check. Each asserts the specific
// behaviour the rule demands; where RaftConfig can break the rule on purpose (BrokenRule), a second
// test shows that the same assertion then fails, so the test is known to be able to fail.

private func n(_ k: UInt64) -> NodeID { NodeID(k) }
private func e(_ term: UInt64, _ index: UInt64, _ data: String = "x") -> Entry {
    Entry(term: Term(term), index: LogIndex(index), data: Array(data.utf8))
}

/// One node of a three-node group (n1, n2, n3) over a log holding `entries`, at `term`.
private func node(_ id: UInt64 = 1, entries: [Entry] = [], term: UInt64 = 0, vote: UInt64? = nil,
                  configure: (inout RaftConfig) -> Void = { _ in }) -> (RaftNode<MemoryLog>, MemoryLog) {
    var config = RaftConfig(id: n(id), voters: [n(1), n(2), n(3)])
    configure(&config)
    let log = MemoryLog(entries: entries)
    let hs = HardState(term: Term(term), vote: vote.map(n), commit: .zero)
    return (RaftNode(config: config, log: log, hardState: hs), log)
}

/// Takes the node's Ready and does it as a driver would; returns it.
@discardableResult
private func handle(_ node: RaftNode<MemoryLog>, _ log: MemoryLog) -> Ready {
    let r = node.ready()
    log.write(truncateAfter: r.truncateAfter, entries: r.entries)
    node.advance(r)
    return r
}

private func voteRequest(from: UInt64, term: UInt64, lastIndex: UInt64, lastTerm: UInt64, transfer: Bool = false) -> Message {
    Message(from: n(from), to: n(1), term: Term(term),
            body: .vote(lastIndex: LogIndex(lastIndex), lastTerm: Term(lastTerm), leadershipTransfer: transfer))
}

/// The vote answer in a Ready, wherever it is.
private func voteAnswer(_ r: Ready) -> Bool? {
    for m in r.messages + r.messagesAfterPersist {
        if case .voteResponse(let granted) = m.body { return granted }
    }
    return nil
}

/// Runs transcript commands on `c` (the language of Transcripts/*.txt).
private func run(_ c: TranscriptCluster, _ commands: [String]) throws {
    for command in commands { _ = try c.run(command) }
}

/// An elected leader n1 of a three-node group, every log holding its empty entry 1/1.
private func electedGroup(configure: (inout RaftConfig) -> Void = { _ in }) -> TranscriptCluster {
    let c = TranscriptCluster()
    c.addNodes(3, configure: configure)
    c[n(1)].campaign(.election)
    c.stabilize()
    precondition(c[n(1)].role == .leader && c[n(1)].commitIndex == LogIndex(1))
    return c
}

@Suite(.ownThreads) struct PaperRuleTests {
    // MARK: §5.2 Election Safety

    /// "At most one leader can be elected in a given term" (Figure 3), over seeded runs with
    /// partitions, loss, reordering and crashes.
    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func electionSafetyAtMostOneLeaderPerTerm(seed: UInt64) {
        let seen = randomClusterRun(seed: seed)
        for (term, leaders) in seen.leadersByTerm {
            #expect(leaders.count <= 1, "seed \(seed): term \(term) had leaders \(leaders.sorted())")
        }
        // Not vacuous: the run went through several elections and committed entries.
        #expect(seen.leadersByTerm.count >= 3, "seed \(seed): only \(seen.leadersByTerm.count) terms had a leader")
        #expect(seen.highestCommit >= LogIndex(10), "seed \(seed): only committed up to \(seen.highestCommit)")
    }

    /// Election Safety rests on this: a node grants one vote per term, and remembers it.
    @Test func aNodeGrantsAtMostOneVotePerTerm() {
        let (a, log) = node(configure: { $0.checkQuorum = false })
        a.step(voteRequest(from: 2, term: 1, lastIndex: 0, lastTerm: 0))
        #expect(voteAnswer(handle(a, log)) == true)
        a.step(voteRequest(from: 3, term: 1, lastIndex: 0, lastTerm: 0))
        #expect(voteAnswer(handle(a, log)) == false, "a second candidate of the same term got a vote")
        // The same candidate asking again (a duplicated request) gets the same answer.
        a.step(voteRequest(from: 2, term: 1, lastIndex: 0, lastTerm: 0))
        #expect(voteAnswer(handle(a, log)) == true)
        #expect(a.vote == n(2))
    }

    // MARK: §5.4.1 Election restriction

    /// "If the logs have last entries with different terms, then the log with the later term is
    /// more up-to-date. If the logs end with the same term, then whichever log is longer is more
    /// up-to-date." A voter holding [1/1, 2/2] refuses candidates whose log is behind its own.
    @Test func section5_4_1_aVoterRefusesACandidateWhoseLogIsLessUpToDate() {
        let cases: [(lastIndex: UInt64, lastTerm: UInt64, granted: Bool)] = [
            (5, 1, false),  // longer, but an older last term
            (1, 2, false),  // same last term, shorter
            (2, 2, true),   // the same
            (3, 2, true),   // same last term, longer
            (1, 3, true),   // shorter, but a later last term
        ]
        for (k, c) in cases.enumerated() {
            let (a, log) = node(entries: [e(1, 1), e(2, 2)], term: 2, configure: { $0.checkQuorum = false })
            a.step(voteRequest(from: 2, term: 3 + UInt64(k), lastIndex: c.lastIndex, lastTerm: c.lastTerm))
            #expect(voteAnswer(handle(a, log)) == c.granted, "candidate last=\(c.lastTerm)/\(c.lastIndex)")
            #expect((a.vote == n(2)) == c.granted)
        }
    }

    /// The same through a group: n3 missed an entry, so n2 refuses it, and n3 cannot win.
    @Test func section5_4_1_aCandidateMissingAnEntryCannotWinWithoutAVoterThatLacksItToo() throws {
        let c = electedGroup { $0.checkQuorum = false; $0.preVote = false }
        try run(c, ["isolate n3", "propose n1 a", "stabilize", "partition n2,n3 n1", "campaign n3 kind=election", "stabilize"])
        #expect(c[n(3)].role != .leader)
        #expect(c[n(2)].vote != n(3))
        #expect(c[n(2)].term == c[n(3)].term, "n2 did learn the new term")
    }

    /// With the rule broken (`.voteForStaleLog`), the same voter grants: the check above can fail.
    @Test func section5_4_1_withTheRuleBrokenAStaleCandidateGetsTheVote() {
        let (a, log) = node(entries: [e(1, 1), e(2, 2)], term: 2, configure: {
            $0.checkQuorum = false
            $0.brokenRules = [.voteForStaleLog]
        })
        a.step(voteRequest(from: 2, term: 3, lastIndex: 5, lastTerm: 1))
        #expect(voteAnswer(handle(a, log)) == true)
    }

    // MARK: §5.4.2 Committing entries from previous terms

    /// Figure 8 up to (c): n1 leads term 3 and knows n1, n3 and n4 (a majority of five) store "a"
    /// of term 1 at index 2 (figure8.txt tells the story step by step).
    private func figure8(_ broken: Bool) throws -> TranscriptCluster {
        let c = TranscriptCluster()
        try run(c, [
            "add-nodes 5 preVote=false checkQuorum=false maxEntriesPerAppend=1" + (broken ? " broken=old-term-commit" : ""),
            "campaign n1", "stabilize",
            // (a) "a" at 1/2 reaches n2 only.
            "propose n1 a", "process-ready n1", "deliver-msgs to=n2 drop=n3,n4,n5", "stabilize n1,n2",
            // (b) n5 wins term 2 with n3 and n4, writes 2/2 alone, crashes.
            "partition n1,n2 n3,n4,n5", "campaign n5", "process-ready n5", "deliver-msgs",
            "process-ready n3,n4", "deliver-msgs", "isolate n5", "process-ready n5", "restart n5", "drop-msgs",
            // (c) n1 restarts, loses term 2, wins term 3 with n3 and n4, and replicates "a" to them.
            "restart n1", "partition n1,n3,n4 n2 n5", "campaign n1", "stabilize n1,n3,n4",
            "campaign n1", "process-ready n1", "deliver-msgs", "process-ready n3,n4", "deliver-msgs",
            "process-ready n1", "deliver-msgs", "process-ready n3,n4", "deliver-msgs",
            "process-ready n1", "deliver-msgs", "process-ready n3,n4", "deliver-msgs",
        ])
        let leader = c[n(1)]
        precondition(leader.role == .leader && leader.term == Term(3) && leader.lastIndex == LogIndex(3))
        let peers = Dictionary(uniqueKeysWithValues: leader.status.peers.map { ($0.id, $0.match) })
        precondition(peers[n(3)] == LogIndex(2) && peers[n(4)] == LogIndex(2), "the scenario did not set up figure 8 (c)")
        return c
    }

    /// "Raft never commits log entries from previous terms by counting replicas. Only log entries
    /// from the leader's current term are committed by counting replicas; once an entry from the
    /// current term has been committed in this way, then all prior entries are committed
    /// indirectly."
    @Test func section5_4_2_aLeaderCommitsAnOldTermEntryOnlyThroughAnEntryOfItsOwnTerm() throws {
        let c = try figure8(false)
        if c.hasReady(n(1)) { c.processReady(n(1)) }
        #expect(c[n(1)].commitIndex == LogIndex(1), "the term-1 entry at index 2 was committed by counting replicas")
        // n3 and n4 receive 3/3 (of term 3): now index 3 commits, and index 2 with it.
        try run(c, ["deliver-msgs", "process-ready n3,n4", "deliver-msgs", "process-ready n1"])
        #expect(c[n(1)].commitIndex == LogIndex(3))
        #expect(c.member(n(1)).applied.map(\.index) == [1, 2, 3].map { LogIndex($0) })
    }

    /// With the rule broken (`.commitOldTermByCounting`, what DLedger 0.2.2 does), the leader does
    /// commit index 2 in figure 8 (c), and then (d) n5 overwrites it on a majority: committed data
    /// is lost. This is why the test above can fail.
    @Test func section5_4_2_withTheRuleBrokenFigure8LosesACommittedEntry() throws {
        let c = try figure8(true)
        try run(c, ["process-ready n1"])
        #expect(c[n(1)].commitIndex == LogIndex(2), "the broken rule should commit the old-term entry")
        #expect(c.member(n(1)).applied.last == e(1, 2, "a"))
        try run(c, ["isolate n1", "restart n1", "drop-msgs", "restart n5", "partition n1 n2,n3,n4,n5",
                    "campaign n5", "stabilize n2,n3,n4,n5", "campaign n5", "stabilize n2,n3,n4,n5"])
        #expect(c[n(5)].role == .leader && c[n(5)].term == Term(4))
        #expect(c.member(n(3)).entries[1] == Entry(term: Term(2), index: LogIndex(2), data: []),
                "n5's 2/2 replaced the committed \"a\"")
        #expect(c.member(n(3)).applied[1] != c.member(n(1)).applied[1], "two nodes applied different entries at index 2")
    }

    // MARK: §5.3 Log replication

    /// Log Matching: "if two entries in different logs have the same index and term, then the logs
    /// are identical in all preceding entries". Checked on every durable log pair after every step
    /// of seeded runs, and so is State Machine Safety (no two nodes apply different entries at one
    /// index).
    @Test(arguments: [11, 12, 13] as [UInt64])
    func logMatchingEntriesWithTheSameIndexAndTermHaveIdenticalPrefixes(seed: UInt64) {
        let seen = randomClusterRun(seed: seed)
        #expect(seen.logMatchingViolations.isEmpty, "seed \(seed): \(seen.logMatchingViolations.prefix(3))")
        #expect(seen.stateMachineViolations.isEmpty, "seed \(seed): \(seen.stateMachineViolations.prefix(3))")
        #expect(seen.highestCommit >= LogIndex(10), "seed \(seed): only committed up to \(seen.highestCommit)")
    }

    /// The checks of the seeded runs can fail: with the election restriction broken
    /// (`.voteForStaleLog`), some run sees two nodes apply different entries at one index.
    @Test func theSeededRunsCatchAStaleVoteRule() {
        let caught = (1...6 as ClosedRange<UInt64>).contains { seed in
            !randomClusterRun(seed: seed) { $0.brokenRules = [.voteForStaleLog] }.stateMachineViolations.isEmpty
        }
        #expect(caught, "no seeded run with a broken election restriction applied conflicting entries")
    }

    /// The consistency check that gives Log Matching: "If the follower does not find an entry in its
    /// log with the same index and term, then it refuses the new entries."
    @Test func logMatchingAFollowerRefusesAnAppendWhosePreviousEntryDiffers() {
        let (a, log) = node(entries: [e(1, 1), e(1, 2)], term: 2)
        a.step(Message(from: n(2), to: n(1), term: Term(2),
                       body: .append(prevIndex: LogIndex(2), prevTerm: Term(2), entries: [e(2, 3)], commit: .zero)))
        let r = handle(a, log)
        #expect(r.entries.isEmpty)
        #expect(r.messagesAfterPersist.map(\.body) == [.appendResponse(.rejected(rejectedIndex: LogIndex(2), hintIndex: LogIndex(2), hintTerm: Term(1)))])
        #expect(log.stored == [e(1, 1), e(1, 2)])
    }

    /// "If an existing entry conflicts with a new one (same index but different terms), delete the
    /// existing entry and all that follow it" -- and only then: a delayed append holding entries
    /// the follower already has must not cut the entries after them.
    @Test func section5_3_aFollowerTruncatesConflictingEntries() {
        let (a, log) = node(entries: [e(1, 1), e(1, 2, "x"), e(1, 3, "y")], term: 1)
        a.step(Message(from: n(2), to: n(1), term: Term(2),
                       body: .append(prevIndex: LogIndex(1), prevTerm: Term(1), entries: [e(2, 2, "b")], commit: .zero)))
        let r = handle(a, log)
        #expect(r.truncateAfter == LogIndex(1))
        #expect(r.entries == [e(2, 2, "b")])
        #expect(log.stored == [e(1, 1), e(2, 2, "b")])
        #expect(r.messagesAfterPersist.map(\.body) == [.appendResponse(.accepted(matchIndex: LogIndex(2)))])

        // The leader's next append, then a stale duplicate of the first one.
        a.step(Message(from: n(2), to: n(1), term: Term(2),
                       body: .append(prevIndex: LogIndex(2), prevTerm: Term(2), entries: [e(2, 3, "c")], commit: .zero)))
        handle(a, log)
        a.step(Message(from: n(2), to: n(1), term: Term(2),
                       body: .append(prevIndex: LogIndex(1), prevTerm: Term(1), entries: [e(2, 2, "b")], commit: .zero)))
        let stale = handle(a, log)
        #expect(stale.truncateAfter == nil && stale.entries.isEmpty)
        #expect(log.stored == [e(1, 1), e(2, 2, "b"), e(2, 3, "c")], "a stale append cut entries it does not conflict with")
    }

    // MARK: Persistent state (Figure 2): persist before you speak

    /// Votes and append acknowledgements promise durable state, so they are in
    /// `messagesAfterPersist`; a candidate's own vote is durable before it asks for others'.
    @Test func votesAndAppendAcksLeaveOnlyAfterPersist() {
        let (a, log) = node(configure: { $0.checkQuorum = false })
        a.step(voteRequest(from: 2, term: 1, lastIndex: 0, lastTerm: 0))
        let vote = handle(a, log)
        #expect(vote.mustSync && vote.hardState?.vote == n(2))
        #expect(vote.messages.isEmpty)
        #expect(vote.messagesAfterPersist.map(\.body) == [.voteResponse(granted: true)])

        a.step(Message(from: n(2), to: n(1), term: Term(1),
                       body: .append(prevIndex: .zero, prevTerm: .zero, entries: [e(1, 1)], commit: .zero)))
        let append = handle(a, log)
        #expect(append.mustSync && append.entries == [e(1, 1)])
        #expect(append.messages.isEmpty)
        #expect(append.messagesAfterPersist.map(\.body) == [.appendResponse(.accepted(matchIndex: LogIndex(1)))])

        let (b, blog) = node(3, configure: { $0.preVote = false })
        b.campaign(.election)
        let campaign = handle(b, blog)
        #expect(campaign.messages.isEmpty)
        #expect(campaign.messagesAfterPersist.count == 2 && campaign.hardState?.vote == n(3))
    }

    /// With `.ackBeforePersist` the acknowledgements go out with `messages`, before the write.
    @Test func votesAndAppendAcksLeaveBeforePersistWhenTheRuleIsBroken() {
        let (a, log) = node(configure: { $0.checkQuorum = false; $0.brokenRules = [.ackBeforePersist] })
        a.step(voteRequest(from: 2, term: 1, lastIndex: 0, lastTerm: 0))
        let vote = handle(a, log)
        #expect(vote.messages.map(\.body) == [.voteResponse(granted: true)])
        #expect(vote.messagesAfterPersist.isEmpty)
    }

    /// The leader counts itself toward a commit only for what is durable on its own disk.
    @Test func aLeaderCountsItsOwnCopyOnlyOnceItIsDurable() throws {
        let c = electedGroup()
        try c[n(1)].propose(Array("a".utf8))
        // n2 acknowledges before n1 wrote its own copy: one durable copy of two needed.
        let r = c.processReady(n(1), hold: true)
        #expect(r.entries.map(\.index) == [LogIndex(2)])
        try run(c, ["deliver-msgs to=n2", "process-ready n2", "deliver-msgs to=n1"])
        // The leader heard n2 (durable) and n1's copy is not durable: quorum 2 of 3 is n1 + n2, and
        // n1's own write is outstanding, so index 2 must not be committed yet.
        #expect(c[n(1)].commitIndex == LogIndex(1), "committed before the leader's own write")
        c.persist(n(1))
        #expect(c[n(1)].commitIndex == LogIndex(2))
    }

    /// The same with the leader's sync deferred (`Ready.syncMayBeDeferred`, as mqbroker runs under
    /// SYNC_FLUSH): written is not durable; the leader counts itself once `entriesSynced` says so.
    @Test func aLeaderWhoseSyncIsDeferredCountsItselfOnlyWhenTheSyncReturns() throws {
        let c = electedGroup()
        try c[n(1)].propose(Array("a".utf8))
        let r = c.processReadyDeferringSync(n(1))
        #expect(r.entries.map(\.index) == [LogIndex(2)] && r.mustSync && r.syncMayBeDeferred)
        try run(c, ["deliver-msgs to=n2", "process-ready n2", "deliver-msgs to=n1"])
        #expect(c[n(1)].commitIndex == LogIndex(1), "committed on one durable copy and an unsynced own write")
        #expect(c[n(1)].status.persistedIndex == LogIndex(1) && c[n(1)].lastIndex == LogIndex(2))
        // A stale report (another term at that index) changes nothing.
        c[n(1)].entriesSynced(through: LogIndex(2), term: Term(7))
        #expect(c[n(1)].commitIndex == LogIndex(1))
        c[n(1)].entriesSynced(through: LogIndex(2), term: Term(1))
        #expect(c[n(1)].commitIndex == LogIndex(2))
        #expect(c[n(1)].status.persistedIndex == LogIndex(2))
    }

    /// Two followers' durable copies are a quorum of three without the leader's own sync.
    @Test func twoFollowersCommitWhileTheLeadersSyncRuns() throws {
        let c = electedGroup()
        try c[n(1)].propose(Array("a".utf8))
        c.processReadyDeferringSync(n(1))
        try run(c, ["deliver-msgs to=n2", "deliver-msgs to=n3", "process-ready n2", "process-ready n3", "deliver-msgs to=n1"])
        #expect(c[n(1)].commitIndex == LogIndex(2))
        #expect(c[n(1)].status.persistedIndex == LogIndex(1))
    }

    /// With `.countOwnBeforeSync` the leader counts its written copy: the same step commits on one
    /// durable copy, which the simulator's "no committed entry is lost" catches after a power cut.
    @Test func countingAnUnsyncedOwnCopyCommitsEarlyWhenTheRuleIsBroken() throws {
        let c = electedGroup(configure: { $0.brokenRules = [.countOwnBeforeSync] })
        try c[n(1)].propose(Array("a".utf8))
        c.processReadyDeferringSync(n(1))
        try run(c, ["deliver-msgs to=n2", "process-ready n2", "deliver-msgs to=n1"])
        #expect(c[n(1)].commitIndex == LogIndex(2))
    }

    /// While a deferred sync is out, any answer that goes after persisting makes its Ready sync, term
    /// change or not (here a leader refusing a vote in its own term).
    @Test func whileItsSyncIsOutALeadersAnswersAfterPersistMakeTheReadySync() throws {
        let c = electedGroup()
        try c[n(1)].propose(Array("a".utf8))
        c.processReadyDeferringSync(n(1))
        c[n(1)].step(Message(from: n(3), to: n(1), term: Term(1), body: .vote(lastIndex: LogIndex(1), lastTerm: Term(1), leadershipTransfer: false)))
        let r = c[n(1)].ready()
        #expect(r.hardState == nil && r.entries.isEmpty)
        #expect(r.messagesAfterPersist.map(\.body) == [.voteResponse(granted: false)])
        #expect(r.mustSync && !r.syncMayBeDeferred, "an answer after persisting left while a deferred sync was out")
        c[n(1)].advance(r)
        #expect(c[n(1)].status.persistedIndex == LogIndex(2))
        #expect(c[n(1)].commitIndex == LogIndex(1), "synced, but no follower has the entry yet")
    }

    /// A leader that stepped down with its sync still out must not acknowledge, as a follower, the
    /// entries that sync covers before they are durable: such a Ready must sync even without entries.
    @Test func aFormerLeadersAcknowledgementWaitsForItsDeferredSync() throws {
        let c = electedGroup()
        try c[n(1)].propose(Array("a".utf8))
        c.processReadyDeferringSync(n(1))
        // n2 takes over in term 2 having received n1's entry 2 (n3 votes for it).
        try run(c, ["deliver-msgs to=n2", "process-ready n2"])
        c[n(1)].step(Message(from: n(2), to: n(1), term: Term(2),
                             body: .append(prevIndex: LogIndex(2), prevTerm: Term(1), entries: [], commit: LogIndex(1))))
        let r = c[n(1)].ready()
        #expect(r.entries.isEmpty && r.truncateAfter == nil)
        #expect(r.messagesAfterPersist.map(\.body) == [.appendResponse(.accepted(matchIndex: LogIndex(2)))])
        #expect(r.mustSync && !r.syncMayBeDeferred, "an acknowledgement of unsynced entries left without a sync")
        c[n(1)].advance(r)
        #expect(c[n(1)].status.persistedIndex == LogIndex(2))
    }

    // MARK: §8 / thesis §6.4: a new leader's empty entry

    /// "Raft handles this by having each leader commit a blank no-op entry into the log at the start
    /// of its term."
    @Test func aNewLeaderAppendsAnEmptyEntryOfItsTerm() {
        let (a, log) = node(entries: [e(1, 1), e(2, 2)], term: 4, configure: { $0.preVote = false })
        a.campaign(.election)
        handle(a, log)
        a.step(Message(from: n(2), to: n(1), term: Term(5), body: .voteResponse(granted: true)))
        #expect(a.role == .leader)
        let r = handle(a, log)
        #expect(r.entries == [Entry(term: Term(5), index: LogIndex(3), data: [])])
        let appends = r.messages.filter { if case .append = $0.body { return true } else { return false } }
        #expect(appends.count == 2)
        for m in appends {
            #expect(m.body == .append(prevIndex: LogIndex(2), prevTerm: Term(2), entries: r.entries, commit: .zero))
        }
    }

    // MARK: Thesis §4.2.3 leader stickiness, §6.2 check-quorum, §9.6 pre-vote

    /// "If a server receives a RequestVote request within the minimum election timeout of hearing
    /// from a current leader, it does not update its term or grant its vote." A transfer's vote
    /// passes; after an election timeout without the leader, ordinary votes pass too.
    @Test func leaderStickinessIgnoresVotesWhileTheLeaderIsLive() {
        let c = electedGroup()
        let follower = c[n(2)]
        follower.step(Message(from: n(3), to: n(2), term: Term(7),
                              body: .vote(lastIndex: LogIndex(1), lastTerm: Term(1), leadershipTransfer: false)))
        #expect(follower.term == Term(1) && follower.vote == n(1) && !follower.hasReady, "a live leader's follower answered a vote")
        c[n(1)].step(Message(from: n(3), to: n(1), term: Term(7),
                             body: .vote(lastIndex: LogIndex(1), lastTerm: Term(1), leadershipTransfer: false)))
        #expect(c[n(1)].role == .leader && c[n(1)].term == Term(1), "the leader was deposed by a vote request")

        follower.step(Message(from: n(3), to: n(2), term: Term(7),
                              body: .vote(lastIndex: LogIndex(1), lastTerm: Term(1), leadershipTransfer: true)))
        #expect(follower.term == Term(7) && follower.vote == n(3), "a transfer's vote did not pass the lease")

        let other = c[n(3)]
        for _ in 0..<other.config.electionTimeoutTicks - 1 { other.tick() }
        // n3 has not heard from its leader for electionTimeoutTicks - 1 ticks: still inside the lease.
        other.step(Message(from: n(2), to: n(3), term: Term(8),
                           body: .vote(lastIndex: LogIndex(1), lastTerm: Term(1), leadershipTransfer: false)))
        #expect(other.term == Term(1))
    }

    /// "A leader steps down if an election timeout elapses without a successful round of heartbeats
    /// to a majority of its cluster." Without check-quorum the same leader stays.
    @Test(arguments: [true, false])
    func checkQuorumLeaderStepsDown(checkQuorum: Bool) {
        let c = electedGroup { $0.checkQuorum = checkQuorum }
        c.isolate(n(1))
        let leader = c[n(1)]
        // The first period still counts answers from before the cut; the second has none.
        for _ in 0..<(2 * leader.config.electionTimeoutTicks) {
            leader.tick()
            c.stabilize()
        }
        if checkQuorum {
            #expect(leader.role == .follower && leader.leader == nil && leader.term == Term(1))
            #expect(throws: RaftError.notLeader(leader: nil)) { try leader.propose([1]) }
        } else {
            #expect(leader.role == .leader, "without check-quorum nothing makes a cut-off leader step down")
        }
    }

    /// "The Pre-Vote algorithm ... a candidate only increments its term if it first learns from a
    /// majority of the cluster that they would be willing to grant the candidate their votes." A
    /// cut-off node's term stays put however long it waits; without pre-vote it climbs.
    @Test(arguments: [true, false])
    func preVoteDoesNotBumpTerms(preVote: Bool) {
        let c = electedGroup { $0.preVote = preVote }
        c.isolate(n(3))
        for _ in 0..<100 {
            c[n(3)].tick()
            c.stabilize()
        }
        if preVote {
            #expect(c[n(3)].term == Term(1))
            #expect(c[n(3)].role == .preCandidate)
        } else {
            #expect(c[n(3)].term > Term(3), "without pre-vote each timeout starts a new term")
        }
        // Rejoining: with pre-vote the leader keeps leading in term 1.
        c.heal()
        for _ in 0..<3 {
            for id in c.ids { c[id].tick() }
            c.stabilize()
        }
        if preVote {
            #expect(c[n(1)].role == .leader && c[n(1)].term == Term(1))
        } else {
            #expect(c[n(1)].term > Term(1), "without pre-vote the returning node's term deposes the leader")
        }
    }
}
