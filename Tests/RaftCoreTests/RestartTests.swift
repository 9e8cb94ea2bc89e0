import Testing
@testable import RaftCore
import TestSupport

@Suite(.ownThreads) struct RestartTests {
    @Test func aLogAheadOfTheHardStateGivesItsTermWithNoVote() {
        // A crash after the entries of a new term were synced but before the hard state was.
        let log = MemoryLog(entries: [Entry(term: Term(1), index: LogIndex(1), data: [1]),
                                      Entry(term: Term(3), index: LogIndex(2), data: [2])])
        let node = RaftNode(config: RaftConfig(id: NodeID(1), voters: [NodeID(1), NodeID(2), NodeID(3)]), log: log,
                            hardState: HardState(term: Term(2), vote: NodeID(2), commit: LogIndex(1)))
        #expect(node.term == Term(3))
        #expect(node.vote == nil, "no vote was promised in term 3")
        #expect(node.commitIndex == LogIndex(1))
        #expect(node.hasReady)
        let r = node.ready()
        #expect(r.hardState == HardState(term: Term(3), vote: nil, commit: LogIndex(1)), "the first Ready persists the adopted term")
        #expect(r.mustSync)
    }

    @Test func aHardStateAtOrAheadOfTheLogIsKept() {
        let log = MemoryLog(entries: [Entry(term: Term(2), index: LogIndex(1), data: [1])])
        let node = RaftNode(config: RaftConfig(id: NodeID(1), voters: [NodeID(1), NodeID(2), NodeID(3)]), log: log,
                            hardState: HardState(term: Term(4), vote: NodeID(3), commit: LogIndex(1)))
        #expect(node.term == Term(4))
        #expect(node.vote == NodeID(3), "a persisted vote survives a restart")
    }

    @Test func entriesTheStateMachineHeldBeforeTheStartAreNotHandedOutAgain() {
        // The persisted commit index (saved with term and vote) says 2; the state machine had applied
        // 40 of the 50 entries before the crash. Once the commit index passes them, only 41-51 (the
        // leader's empty entry last) come out, and the applied index jumps over the rest.
        let log = MemoryLog(entries: (1...50).map { Entry(term: Term(1), index: LogIndex(UInt64($0)), data: [UInt8($0)]) })
        let node = RaftNode(config: RaftConfig(id: NodeID(1), voters: [NodeID(1)]), log: log,
                            hardState: HardState(term: Term(1), vote: NodeID(1), commit: LogIndex(2)), appliedIndex: LogIndex(40))
        #expect(node.appliedIndex == LogIndex(2), "applied never runs ahead of what this node knows committed")
        for _ in 0..<20 { node.tick() }
        #expect(node.role == .leader)
        let handed = drain(node, log).flatMap(\.committedEntries)
        #expect(node.commitIndex == LogIndex(51))
        #expect(handed.map(\.index.rawValue) == Array(41...51), "\(handed.map(\.index))")
        #expect(node.appliedIndex == LogIndex(51))
    }
}

