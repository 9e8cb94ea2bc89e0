import Testing
@testable import RaftCore
import TestSupport

// What the broker logs with each role change and exports as metrics: the reason of the last change
// and the campaign counters.

private func n(_ k: UInt64) -> NodeID { NodeID(k) }

@Suite(.ownThreads) struct RoleReasonTests {
    @Test func electionsCarryTheirReasonAndAreCounted() throws {
        let c = TranscriptCluster()
        c.addNodes(3)
        #expect(c[n(1)].roleReason == .started)
        // n1's election timeout passes first: a pre-vote round, then the election it wins.
        var ticks = 0
        while c[n(1)].role == .follower && ticks < 1_000 {
            c[n(1)].tick()
            ticks += 1
        }
        #expect(c[n(1)].role == .preCandidate)
        #expect(c[n(1)].roleReason == .electionTimeout)
        _ = c.stabilize()
        #expect(c[n(1)].role == .leader)
        #expect(c[n(1)].roleReason == .electionWon)
        var won = ElectionCounters()
        won.preVotesStarted = 1
        won.electionsStarted = 1
        won.electionsWon = 1
        #expect(c[n(1)].elections == won)
        #expect(c[n(1)].status.elections == won && c[n(1)].status.roleReason == .electionWon)
        // The others followed the new leader: they heard it.
        for k in [2, 3] as [UInt64] {
            #expect(c[n(k)].leader == n(1))
            #expect(c[n(k)].roleReason == .heardLeader)
            #expect(c[n(k)].elections == ElectionCounters())
        }

        // A transfer: n2 campaigns on TimeoutNow and wins; n1 steps down on hearing the new term.
        try c[n(1)].transferLeadership(to: n(2))
        _ = c.stabilize()
        #expect(c[n(2)].role == .leader && c[n(2)].roleReason == .electionWon)
        #expect(c[n(2)].elections.electionsStarted == 1 && c[n(2)].elections.preVotesStarted == 0)
        #expect(c[n(1)].role == .follower)
        #expect(c[n(1)].elections.stepDowns == 1)
        #expect(c[n(1)].roleReason == .newerTerm || c[n(1)].roleReason == .heardLeader)
    }

    @Test func aLeaderThatHearsNoQuorumStepsDownForThatReason() {
        let c = TranscriptCluster()
        c.addNodes(3)
        c[n(1)].campaign(.election)
        _ = c.stabilize()
        #expect(c[n(1)].role == .leader)
        // Nothing reaches n1 any more: after an election timeout without a quorum it steps down.
        for _ in 0..<(3 * c[n(1)].config.electionTimeoutTicks) where c[n(1)].role == .leader {
            c[n(1)].tick()
            let r = c[n(1)].ready()  // its messages go nowhere
            c[n(1)].advance(r)
        }
        #expect(c[n(1)].role == .follower)
        #expect(c[n(1)].roleReason == .quorumLost)
        #expect(c[n(1)].elections.stepDowns == 1)
    }
}
