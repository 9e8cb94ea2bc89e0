import RaftCore

/// A broken invariant: the rule, and what was seen.
public struct Violation: Error, Sendable, CustomStringConvertible {
    public var rule: String
    public var detail: String
    public var description: String { "\(rule): \(detail)" }
}

/// The invariants of Raft, checked from outside the nodes after every step (Raft Figure 3 and
/// §5.4), plus what a client is promised: an acknowledged proposal is never lost and reads are
/// linearizable.
struct Checker {
    let quorum: Int
    /// Election safety: the one leader seen in each term.
    private(set) var leaderOfTerm: [Term: NodeID] = [:]
    /// The globally committed prefix: the term of each committed index (position k = index k + 1)...
    private(set) var committedTerms: [Term] = []
    /// ...the prefix hash through it...
    private var committedPrefixHashes: [UInt64] = []
    /// ...the highest index first seen committed in each term (a node sees a commit in the term
    /// that made it or later)...
    private var lastCommittedIndexSeenInTerm: [Term: LogIndex] = [:]
    /// ...and the hash of its data, once some node applied it.
    private var committedDataHashes: [UInt64?] = []
    /// The committed entries themselves (a node reset to a leader's base gets its prefix from here).
    private(set) var committedEntries: [Entry] = []
    /// Log matching: the prefix hash every log holding (index, term) must have.
    private var prefixHashOf: [IndexTerm: UInt64] = [:]
    /// The highest index acknowledged to a client.
    private(set) var maxAckedIndex = LogIndex.zero
    private(set) var acked = 0
    /// The highest term each node ever made durable (terms never go back, across crashes too).
    private var durableTermSeen: [Term]

    struct IndexTerm: Hashable {
        var index: LogIndex
        var term: Term
    }

    init(nodes: Int) {
        quorum = nodes / 2 + 1
        durableTermSeen = Array(repeating: .zero, count: nodes)
    }

    var committedIndex: LogIndex { LogIndex(UInt64(committedTerms.count)) }

    func committedTerm(at index: LogIndex) -> Term? {
        guard index.rawValue >= 1, index.rawValue <= UInt64(committedTerms.count) else { return nil }
        return committedTerms[Int(index.rawValue - 1)]
    }

    /// After a node took inputs: terms never go back, and at most one leader per term.
    mutating func observe(_ n: SimNode) throws(Violation) {
        guard let raft = n.raft else { return }
        if raft.term < n.lastTerm {
            throw Violation(rule: "terms never go back", detail: "\(n.id) went from term \(n.lastTerm) to \(raft.term)")
        }
        n.lastTerm = raft.term
        if raft.role == .leader {
            if let other = leaderOfTerm[raft.term], other != n.id {
                throw Violation(rule: "election safety (at most one leader per term)", detail: "\(other) and \(n.id) both lead term \(raft.term)")
            }
            leaderOfTerm[raft.term] = n.id
        }
    }

    /// After a node's Ready is written (its disk then holds its whole log): the commit index only
    /// grows and covers exactly the globally committed prefix, and a new leader holds what it must.
    mutating func afterWrite(_ n: SimNode) throws(Violation) {
        guard let raft = n.raft else { return }
        let commit = raft.commitIndex
        if commit < n.lastCommit {
            throw Violation(rule: "commit indexes never go back", detail: "\(n.id) went from \(n.lastCommit) to \(commit)")
        }
        if commit > n.disk.lastIndex {
            throw Violation(rule: "a node commits only what it holds", detail: "\(n.id) commit=\(commit) but its log ends at \(n.disk.lastIndex)")
        }
        if commit > n.lastCommit, raft.role == .leader, n.ledInTermAtLastWrite == raft.term,
           let t = n.disk.entry(at: commit)?.term, t != raft.term {
            throw Violation(rule: "the commit rule (§5.4.2): a leader commits only by counting replicas of an entry of its own term",
                            detail: "\(n.id), leader of term \(raft.term), moved its commit index from \(n.lastCommit) to \(commit), an entry of term \(t)")
        }
        n.ledInTermAtLastWrite = raft.role == .leader ? raft.term : nil
        if commit > n.lastCommit {
            // One hash comparison covers the whole prefix (log matching makes it exact).
            let known = min(commit, committedIndex)
            if known > .zero && n.disk.prefixHash(at: known) != committedPrefixHashes[Int(known.rawValue - 1)] {
                throw Violation(rule: "state machine safety (a committed entry never changes)",
                                detail: "\(n.id) commits \(commit), but " + firstDifference(n, through: known))
            }
            var i = committedIndex.next
            while i <= commit {
                let e = n.disk.entry(at: i)!
                committedEntries.append(e)
                committedTerms.append(e.term)
                committedPrefixHashes.append(n.disk.prefixHash(at: i))
                committedDataHashes.append(nil)
                lastCommittedIndexSeenInTerm[raft.term] = i
                i = i.next
            }
            n.lastCommit = commit
        }
        if raft.role == .leader && n.completenessCheckedTerm != raft.term {
            n.completenessCheckedTerm = raft.term
            try checkLeaderCompleteness(n, raft)
        }
    }

    private func firstDifference(_ n: SimNode, through last: LogIndex) -> String {
        var i = LogIndex(1)
        while i <= last {
            let t = committedTerms[Int(i.rawValue - 1)]
            let mine = n.disk.entry(at: i)
            if mine?.term != t || n.disk.prefixHash(at: i) != committedPrefixHashes[Int(i.rawValue - 1)] {
                return "it holds \(mine.map { "\($0.term)/\(i)" } ?? "nothing") at \(i), where \(t)/\(i) is committed"
            }
            i = i.next
        }
        return "its log differs from the committed log before \(last)"
    }

    /// Raft §5.4 leader completeness: an entry committed in a term is in the log of every leader of
    /// a later term. (A leader seen late, say after a pause, need not hold what later terms
    /// committed.) Every index below one committed in an earlier term was committed by then too,
    /// so one prefix comparison suffices.
    private func checkLeaderCompleteness(_ n: SimNode, _ raft: RaftNode<SimLogReader>) throws(Violation) {
        var must = LogIndex.zero
        for (t, i) in lastCommittedIndexSeenInTerm where t < raft.term && i > must { must = i }
        guard must > .zero else { return }
        if must > n.disk.lastIndex || n.disk.prefixHash(at: must) != committedPrefixHashes[Int(must.rawValue - 1)] {
            throw Violation(rule: "leader completeness (§5.4)",
                            detail: "\(n.id) leads term \(raft.term), but " + firstDifference(n, through: min(must, n.disk.lastIndex)))
        }
    }

    /// Log matching (§5.3): two logs holding an entry of the same index and term are identical up
    /// to it. Checked on every entry written to a disk, through a hash of the whole prefix.
    mutating func written(_ n: SimNode, from first: LogIndex) throws(Violation) {
        var i = first
        while i <= n.disk.lastIndex {
            let e = n.disk.entry(at: i)!
            let key = IndexTerm(index: i, term: e.term)
            let h = n.disk.prefixHash(at: i)
            if let known = prefixHashOf[key] {
                if known != h {
                    throw Violation(rule: "log matching (§5.3)", detail: "\(n.id) holds \(e.term)/\(i) with a prefix no other log with that entry has")
                }
            } else {
                prefixHashOf[key] = h
            }
            i = i.next
        }
    }

    /// State machine safety: every node applies the same entry at an index.
    mutating func applied(_ n: SimNode, _ e: Entry) throws(Violation) {
        guard let t = committedTerm(at: e.index) else {
            throw Violation(rule: "only committed entries are applied", detail: "\(n.id) applies \(e) beyond the committed \(committedIndex)")
        }
        if t != e.term {
            throw Violation(rule: "state machine safety", detail: "\(n.id) applies \(e) where \(t)/\(e.index) is committed")
        }
        let h = SimDisk.mix(0, e)
        let k = Int(e.index.rawValue - 1)
        if let known = committedDataHashes[k] {
            if known != h { throw Violation(rule: "state machine safety", detail: "\(n.id) applies different data at \(e.index)") }
        } else {
            committedDataHashes[k] = h
        }
    }

    mutating func acknowledged(index: LogIndex) {
        acked += 1
        if index > maxAckedIndex { maxAckedIndex = index }
    }

    /// Linearizable reads (thesis §6.4): a read index covers every write acknowledged before the
    /// read was issued.
    func readServed(_ n: SimNode, index: LogIndex, ackedBeforeIssue: LogIndex) throws(Violation) {
        if index < ackedBeforeIssue {
            throw Violation(rule: "linearizable reads (ReadIndex)", detail: "\(n.id) served a read at index \(index), but \(ackedBeforeIssue) was acknowledged before the read was issued")
        }
    }

    /// After a node's durable hard state changed or it restarted.
    mutating func durableHardState(_ n: SimNode) throws(Violation) {
        let t = n.disk.durableHardState.term
        if t < durableTermSeen[n.slot] {
            throw Violation(rule: "a durable term never goes back", detail: "\(n.id) restarted in term \(t) after making \(durableTermSeen[n.slot]) durable")
        }
        durableTermSeen[n.slot] = t
    }

    /// No acknowledged (committed) entry is lost across crashes: after a power cut, every committed
    /// entry the crashed node no longer holds durably is still durable on a quorum.
    func afterCrash(of crashed: SimNode, lostAfter k: LogIndex, nodes: [SimNode]) throws(Violation) {
        var i = k.next
        while i <= committedIndex {
            let t = committedTerm(at: i)!
            var holders = 0
            for n in nodes {
                let d = n.disk.durableEntries
                if i.rawValue <= UInt64(d.count) && d[Int(i.rawValue - 1)].term == t { holders += 1 }
            }
            if holders < quorum {
                throw Violation(rule: "no committed entry is lost",
                                detail: "after \(crashed.id) crashed, committed \(t)/\(i) is durable on \(holders) of \(nodes.count) nodes, fewer than a quorum (\(quorum))")
            }
            i = i.next
        }
    }
}
