import Testing
@testable import RaftCore
import TestSupport

/// Raft Figure 2, Rules for Servers, Followers: "If election timeout elapses without receiving
/// AppendEntries RPC from current leader or granting vote to candidate: convert to candidate."
@Suite(.ownThreads) struct ElectionTimerTests {
    private func follower(preVote: Bool) -> (RaftNode<MemoryLog>, MemoryLog) {
        let log = MemoryLog(entries: [Entry(term: Term(2), index: LogIndex(1), data: [1]), Entry(term: Term(2), index: LogIndex(2), data: [2])])
        var config = RaftConfig(id: NodeID(1), voters: [NodeID(1), NodeID(2), NodeID(3)])
        config.preVote = preVote
        config.checkQuorum = false
        return (RaftNode(config: config, log: log, hardState: HardState(term: Term(2))), log)
    }

    @Test func refusingAStaleCandidatesVoteDoesNotRestartTheElectionTimer() {
        let (node, _) = follower(preVote: false)
        for _ in 0..<5 { node.tick() }
        #expect(node.electionElapsed == 5)
        // A candidate whose log lacks our entries, in a newer term.
        node.step(Message(from: NodeID(3), to: NodeID(1), term: Term(9), body: .vote(lastIndex: LogIndex(1), lastTerm: Term(2), leadershipTransfer: false)))
        #expect(node.term == Term(9), "a newer term is adopted")
        #expect(node.vote == nil, "the stale candidate gets no vote")
        #expect(node.electionElapsed == 5, "and the timer keeps running, so this node campaigns in time")
        var ticks = 0
        while node.role == .follower && ticks < 40 {
            node.tick()
            ticks += 1
        }
        #expect(node.role == .candidate, "it campaigns within its own timeout, however often the stale node asks")
    }

    @Test func grantingAVoteRestartsTheElectionTimer() {
        let (node, _) = follower(preVote: false)
        for _ in 0..<5 { node.tick() }
        node.step(Message(from: NodeID(3), to: NodeID(1), term: Term(9), body: .vote(lastIndex: LogIndex(2), lastTerm: Term(2), leadershipTransfer: false)))
        #expect(node.vote == NodeID(3))
        #expect(node.electionElapsed == 0)
    }
}
