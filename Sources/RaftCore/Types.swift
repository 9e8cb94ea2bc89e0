/// A Raft term. Terms only grow on a node (Raft §5.1); term 0 is "before any election".
public struct Term: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { self.rawValue = value }
    public static let zero = Term(0)
    public static func < (a: Term, b: Term) -> Bool { a.rawValue < b.rawValue }
    public var next: Term { Term(rawValue + 1) }
    public var description: String { String(rawValue) }
}

/// A position in the Raft log. The first entry has index 1; index 0 is the empty prefix (term 0).
public struct LogIndex: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { self.rawValue = value }
    public static let zero = LogIndex(0)
    public static func < (a: LogIndex, b: LogIndex) -> Bool { a.rawValue < b.rawValue }
    public var next: LogIndex { LogIndex(rawValue + 1) }
    /// The index before this one; index 0 has none.
    public var previous: LogIndex {
        precondition(rawValue > 0, "index 0 has no predecessor")
        return LogIndex(rawValue - 1)
    }
    public static func + (a: LogIndex, b: Int) -> LogIndex { LogIndex(a.rawValue + UInt64(b)) }
    /// The number of indexes from `b` up to `a` (a >= b).
    public static func - (a: LogIndex, b: LogIndex) -> Int {
        precondition(a >= b, "index distance would be negative")
        return Int(a.rawValue - b.rawValue)
    }
    public var description: String { String(rawValue) }
}

/// A member of a Raft group (DLedger's `n0`, `n1`, ... are node ids 0, 1, ...).
public struct NodeID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ value: UInt64) { self.rawValue = value }
    public static func < (a: NodeID, b: NodeID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "n\(rawValue)" }
}

/// One entry of the replicated log. An entry with empty `data` is the no-op a new leader appends at
/// once (Raft §8); proposals must carry at least one byte, so the two never mix.
public struct Entry: Hashable, Sendable, CustomStringConvertible {
    public var term: Term
    public var index: LogIndex
    public var data: [UInt8]
    public init(term: Term, index: LogIndex, data: [UInt8]) {
        self.term = term
        self.index = index
        self.data = data
    }
    /// True for a leader's no-op entry.
    public var isEmpty: Bool { data.isEmpty }
    /// `2/7 empty` for a no-op, `2/7 "abc"` for short printable data, `2/7 5000B` otherwise.
    public var description: String {
        if data.isEmpty { return "\(term)/\(index) empty" }
        let printable = data.count <= 32 && data.allSatisfy { $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") }
        return "\(term)/\(index) " + (printable ? "\"\(String(decoding: data, as: UTF8.self))\"" : "\(data.count)B")
    }
}

/// What must be durable before a node speaks again (Raft Figure 2 "persistent state").
public struct HardState: Hashable, Sendable, CustomStringConvertible {
    public var term: Term
    public var vote: NodeID?
    /// Persisting the commit index is optional for safety; it lets a restarted node apply at once.
    public var commit: LogIndex
    public init(term: Term = .zero, vote: NodeID? = nil, commit: LogIndex = .zero) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
    public var description: String { "term=\(term) vote=\(vote.map { "\($0)" } ?? "none") commit=\(commit)" }
}

/// A node's role. The per-role state lives inside `RaftNode`; this is what observers see.
public enum Role: String, Sendable, Hashable {
    case follower, preCandidate, candidate, leader
}

/// Why a node last changed role: what the broker logs with each role change and exports as metrics.
public enum RoleChangeReason: String, Sendable, Hashable {
    case started = "started"
    /// No word from a leader within the election timeout.
    case electionTimeout = "election timeout"
    /// The transport reported the leader's connection closed (an early campaign in this node's turn).
    case leaderConnectionLost = "the leader's connection closed"
    /// A campaign started at once on start (`RaftConfig.campaignOnStart`).
    case campaignOnStart = "campaign on start"
    case preVoteWon = "pre-vote won"
    /// The leader's TimeoutNow: a leadership transfer to this node.
    case leadershipTransfer = "leadership transfer"
    case electionWon = "election won"
    case electionLost = "election lost (votes refused)"
    /// A leader of this term (or a newer one) sent entries or a heartbeat.
    case heardLeader = "heard the term's leader"
    /// A message of a newer term without its leader (a vote request, a response).
    case newerTerm = "a newer term"
    /// A leader that heard from no quorum within an election timeout (check quorum).
    case quorumLost = "no quorum heard within the election timeout"
}

/// Counts of a node's campaigns since it started (metrics: elections started and won).
public struct ElectionCounters: Sendable, Hashable {
    public var preVotesStarted = 0
    public var electionsStarted = 0
    public var electionsWon = 0
    /// Leaders that stepped down (a newer term, a lost quorum).
    public var stepDowns = 0
    public init() {}
}

/// What observers (the broker, `/raft/state`) see: the role and the leader this node follows.
public struct SoftState: Hashable, Sendable, CustomStringConvertible {
    public var role: Role
    public var leader: NodeID?
    public init(role: Role, leader: NodeID?) {
        self.role = role
        self.leader = leader
    }
    public var description: String { "role=\(role) leader=\(leader.map { "\($0)" } ?? "none")" }
}

/// A linearizable read point: once the node has applied `index`, it may answer the read whose
/// request carried `context`.
public struct ReadState: Hashable, Sendable, CustomStringConvertible {
    public var index: LogIndex
    public var context: [UInt8]
    public init(index: LogIndex, context: [UInt8]) {
        self.index = index
        self.context = context
    }
    public var description: String { "index=\(index) ctx=" + String(decoding: context, as: UTF8.self) }
}
