import Testing
@testable import RaftCore
import TestSupport

/// `leaderConnectionLost`: a follower that sees its leader's connection close campaigns in its turn,
/// a few ticks later instead of an election timeout, without weakening leader stickiness when wrong.
@Suite(.ownThreads) struct ConnectionLossTests {
    private let n1 = NodeID(1), n2 = NodeID(2), n3 = NodeID(3)

    /// A follower of n2 in term 2 that just heard n2's heartbeat (its lease is fresh).
    private func follower(_ id: NodeID) -> RaftNode<MemoryLog> {
        let log = MemoryLog(entries: [Entry(term: Term(2), index: LogIndex(1), data: [1])])
        var config = RaftConfig(id: id, voters: [n1, n2, n3])
        config.electionTimeoutTicks = 30
        config.heartbeatTicks = 10
        let node = RaftNode(config: config, log: log, hardState: HardState(term: Term(2)))
        node.step(Message(from: n2, to: id, term: Term(2), body: .heartbeat(commit: .zero, context: nil)))
        drain(node)
        return node
    }

    @discardableResult
    private func drain(_ node: RaftNode<MemoryLog>) -> [Message] {
        var out: [Message] = []
        while node.hasReady {
            let r = node.ready()
            out += r.messages + r.messagesAfterPersist
            node.advance(r)
        }
        return out
    }

    @Test func theSurvivorsCampaignInTurnByTheirIds() {
        for (id, expectedTicks) in [(n1, 1), (n3, 1 + RaftConfig(id: n3, voters: [n1, n2, n3]).connectionLossCampaignSpacingTicks)] {
            let node = follower(id)
            node.leaderConnectionLost(n2)
            #expect(node.leader == nil, "the dead leader is forgotten")
            var ticks = 0
            while node.role == .follower && ticks < 100 {
                node.tick()
                ticks += 1
            }
            #expect(node.role == .preCandidate)
            #expect(ticks == expectedTicks, "\(id) campaigned after \(ticks) ticks")
            let preVotes = drain(node).filter { if case .preVote = $0.body { return true } else { return false } }
            #expect(Set(preVotes.map(\.to)) == Set([n1, n2, n3]).subtracting([id]))
        }
    }

    /// `campaignOnStart`: a node that starts campaigns in its turn by id, not after an election
    /// timeout; without the option (or without pre-vote) it waits the timeout; and its early pre-vote
    /// does not move a follower that holds a live leader's lease.
    @Test func aStartingNodeCampaignsInItsTurn() {
        func started(_ id: NodeID, early: Bool, preVote: Bool = true) -> RaftNode<MemoryLog> {
            var config = RaftConfig(id: id, voters: [n1, n2, n3])
            config.electionTimeoutTicks = 30
            config.campaignOnStart = early
            config.preVote = preVote
            return RaftNode(config: config, log: MemoryLog(entries: [Entry(term: Term(2), index: LogIndex(1), data: [1])]), hardState: HardState(term: Term(2)))
        }
        func ticksToCampaign(_ node: RaftNode<MemoryLog>) -> Int {
            var ticks = 0
            while node.role == .follower && ticks < 100 {
                node.tick()
                ticks += 1
            }
            return ticks
        }
        let spacing = RaftConfig(id: n1, voters: [n1, n2, n3]).connectionLossCampaignSpacingTicks
        for (id, turn) in [(n1, 0), (n2, 1), (n3, 2)] {
            let node = started(id, early: true)
            #expect(ticksToCampaign(node) == 1 + turn * spacing, "\(id)")
            #expect(node.role == .preCandidate)
        }
        #expect(ticksToCampaign(started(n1, early: false)) >= 30, "without the option: a full election timeout")
        #expect(ticksToCampaign(started(n1, early: true, preVote: false)) >= 30, "without pre-vote: a full election timeout")
        // A node restarting beside a live leader: its pre-vote is refused by a follower holding the lease.
        let restarted = started(n1, early: true)
        _ = ticksToCampaign(restarted)
        let preVote = drain(restarted).first { if case .preVote = $0.body { return $0.to == n3 } else { return false } }
        let sticky = follower(n3)
        sticky.step(try! #require(preVote))
        #expect(drain(sticky).isEmpty, "the pre-vote is ignored while the leader's lease holds")
        #expect(sticky.leader == n2 && sticky.term == Term(2))
    }

    @Test func aFollowerThatAlsoLostTheLeaderGrantsThePreVoteAndOneThatDidNotRefuses() {
        let preVote = Message(from: n1, to: n3, term: Term(3), body: .preVote(lastIndex: LogIndex(1), lastTerm: Term(2)))

        let stillSticky = follower(n3)
        stillSticky.step(preVote)
        #expect(drain(stillSticky).isEmpty, "a follower holding the leader's lease ignores the pre-vote")

        let alsoLost = follower(n3)
        alsoLost.leaderConnectionLost(n2)
        alsoLost.step(preVote)
        let answers = drain(alsoLost)
        #expect(answers.count == 1)
        #expect(answers.first?.body == .preVoteResponse(granted: true))
        #expect(alsoLost.term == Term(2), "a pre-vote changes no term")
    }

    @Test func aFalseAlarmEndsWithTheLeadersNextHeartbeat() {
        let node = follower(n1)
        node.leaderConnectionLost(n2)
        node.step(Message(from: n2, to: n1, term: Term(2), body: .heartbeat(commit: .zero, context: nil)))
        drain(node)
        #expect(node.leader == n2)
        for _ in 0..<(node.config.electionTimeoutTicks - 1) { node.tick() }
        #expect(node.role == .follower, "a full election timeout again once the leader was heard")
        #expect(drain(node).isEmpty)
    }

    @Test func aFalseAlarmDoesNotDeposeALiveLeader() {
        // n1 campaigns after a spurious loss; n3 still follows n2 and refuses; n2's heartbeat ends it.
        let node = follower(n1)
        node.leaderConnectionLost(n2)
        while node.role == .follower { node.tick() }
        drain(node)
        #expect(node.role == .preCandidate)
        #expect(node.term == Term(2), "a pre-vote round bumps no term, so the leader is not deposed")
        node.step(Message(from: n2, to: n1, term: Term(2), body: .heartbeat(commit: .zero, context: nil)))
        #expect(node.role == .follower)
        #expect(node.leader == n2)
    }

    @Test func afterItsEarlyTurnAFailedRoundWaitsAFullTimeout() {
        let node = follower(n1)
        node.leaderConnectionLost(n2)
        while node.role == .follower { node.tick() }
        drain(node)
        // Nobody answers the pre-vote: the next round comes after an election timeout, not a tick.
        for _ in 0..<(node.config.electionTimeoutTicks - 1) { node.tick() }
        #expect(drain(node).isEmpty, "no pre-vote every tick")
    }

    @Test func withoutPreVoteTheHintIsIgnored() {
        let log = MemoryLog(entries: [Entry(term: Term(2), index: LogIndex(1), data: [1])])
        var config = RaftConfig(id: n1, voters: [n1, n2, n3])
        config.preVote = false
        config.electionTimeoutTicks = 30
        let node = RaftNode(config: config, log: log, hardState: HardState(term: Term(2)))
        node.step(Message(from: n2, to: n1, term: Term(2), body: .heartbeat(commit: .zero, context: nil)))
        drain(node)
        node.leaderConnectionLost(n2)
        #expect(node.leader == n2, "a false alarm would bump the term and depose a live leader")
        for _ in 0..<29 { node.tick() }
        #expect(node.role == .follower)
    }

    @Test func losingAnotherPeerOrNotBeingAFollowerChangesNothing() {
        let node = follower(n1)
        node.leaderConnectionLost(n3)
        #expect(node.leader == n2)
        for _ in 0..<(node.config.electionTimeoutTicks - 1) { node.tick() }
        #expect(node.role == .follower)
    }
}
