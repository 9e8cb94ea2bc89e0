import Testing
@testable import RaftCore
import TestSupport

/// A follower that steps several appends before its next Ready answers the leader once, with the
/// last acceptance (`RaftNode.supersedeAcceptance`), but only where that says all the earlier
/// answers did.
@Suite(.ownThreads) struct AcceptanceTests {
    let n1 = NodeID(1), n2 = NodeID(2)

    func follower(brokenRules: Set<BrokenRule> = []) -> RaftNode<MemoryLog> {
        var config = RaftConfig(id: n2, voters: [n1, n2, NodeID(3)])
        config.brokenRules = brokenRules
        return RaftNode(config: config, log: MemoryLog(), hardState: HardState(term: Term(1)))
    }

    func append(prev: UInt64, _ indexes: ClosedRange<UInt64>?, term: UInt64 = 1) -> Message {
        let entries = indexes.map { r in r.map { Entry(term: Term(1), index: LogIndex($0), data: [UInt8($0)]) } } ?? []
        return Message(from: n1, to: n2, term: Term(term), body: .append(prevIndex: LogIndex(prev), prevTerm: prev == 0 ? .zero : Term(1),
                                                                        entries: entries, commit: .zero))
    }

    /// The answers the follower's next Ready sends after persisting, in order.
    func answers(_ node: RaftNode<MemoryLog>, persisted: Bool = true) -> [String] {
        let r = node.ready()
        return (persisted ? r.messagesAfterPersist : r.messages).map(\.description)
    }

    @Test func laterAcceptancesReplaceEarlierOnes() {
        let node = follower()
        node.step(append(prev: 0, 1...2))
        node.step(append(prev: 2, 3...3))
        node.step(append(prev: 3, 4...5))
        #expect(answers(node) == ["n2->n1 t1 AppResp match=5"])
    }

    @Test func aLowerAcceptanceAfterAHigherOneIsKept() {
        // A stale duplicate of the first append, answered after the second: its lower match goes out
        // after the higher one, as the leader would have seen it without the rule.
        let node = follower()
        node.step(append(prev: 0, 1...3))
        node.step(append(prev: 0, 1...2))
        #expect(answers(node) == ["n2->n1 t1 AppResp match=3", "n2->n1 t1 AppResp match=2"])
    }

    @Test func aRejectionBetweenKeepsBothSides() {
        let node = follower()
        node.step(append(prev: 0, 1...2))
        node.step(append(prev: 7, 8...8))   // a gap: rejected
        node.step(append(prev: 2, 3...3))
        #expect(answers(node) == ["n2->n1 t1 AppResp match=2", "n2->n1 t1 AppResp rejected=7 hint=1/2", "n2->n1 t1 AppResp match=3"])
    }

    @Test func anAcceptanceOfAnotherTermIsKept() {
        let node = follower()
        node.step(append(prev: 0, 1...2))
        node.step(append(prev: 2, nil, term: 2))   // the same leader, re-elected in term 2
        #expect(answers(node) == ["n2->n1 t1 AppResp match=2", "n2->n1 t2 AppResp match=2"])
    }

    @Test func acknowledgingBeforePersistingReplacesInTheSameBox() {
        // The broken rule sends acceptances with `messages`, before the write: the rule applies there.
        let node = follower(brokenRules: [.ackBeforePersist])
        node.step(append(prev: 0, 1...2))
        node.step(append(prev: 2, 3...4))
        #expect(answers(node, persisted: false) == ["n2->n1 t1 AppResp match=4"])
    }
}
