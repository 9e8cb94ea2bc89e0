import Testing
@testable import RaftCore
import TestSupport

/// Drives one node through its Ready loop over a MemoryLog, as a driver would.
func drain<L>(_ node: RaftNode<L>, _ log: MemoryLog) -> [Ready] {
    var out: [Ready] = []
    while node.hasReady {
        let r = node.ready()
        log.write(truncateAfter: r.truncateAfter, entries: r.entries)
        node.advance(r)
        out.append(r)
    }
    return out
}

@Suite(.ownThreads) struct SingleNodeTests {
    @Test func aSingleNodeElectsItselfAndCommitsItsOwnProposals() throws {
        let log = MemoryLog()
        let node = RaftNode(config: RaftConfig(id: NodeID(1), voters: [NodeID(1)]), log: log)
        for _ in 0..<20 { node.tick() }
        #expect(node.role == .leader)
        #expect(node.term == Term(1))
        _ = drain(node, log)
        #expect(node.commitIndex == LogIndex(1), "the leader's empty entry commits once it is durable")
        let (index, term) = try node.propose(Array("hello".utf8))
        #expect(index == LogIndex(2) && term == Term(1))
        let readies = drain(node, log)
        let applied = readies.flatMap(\.committedEntries)
        #expect(applied.map(\.data) == [Array("hello".utf8)])
        #expect(log.lastIndex == LogIndex(2))
    }

    @Test func proposalsBeyondTheLimitsAreRefusedWithTypedErrors() throws {
        let log = MemoryLog()
        var config = RaftConfig(id: NodeID(1), voters: [NodeID(1), NodeID(2), NodeID(3)])
        config.maxPendingProposals = 2
        config.maxEntryBytes = 8
        let node = RaftNode(config: config, log: log)
        #expect(throws: RaftError.notLeader(leader: nil)) { try node.propose([1]) }
        _ = node
    }
}
