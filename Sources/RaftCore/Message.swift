/// A message between two nodes of one group. Every message carries the sender's term, except a
/// pre-vote and a granted pre-vote response, which carry the term the sender would campaign in.
public struct Message: Hashable, Sendable, CustomStringConvertible {
    public var from: NodeID
    public var to: NodeID
    public var term: Term
    public var body: Body

    public init(from: NodeID, to: NodeID, term: Term, body: Body) {
        self.from = from
        self.to = to
        self.term = term
        self.body = body
    }

    public enum Body: Hashable, Sendable {
        /// "Would you vote for me in `term`?" The receiver changes nothing (Raft thesis §9.6).
        case preVote(lastIndex: LogIndex, lastTerm: Term)
        case preVoteResponse(granted: Bool)
        /// `leadershipTransfer` lets the vote through a follower's leader lease (thesis §3.10).
        case vote(lastIndex: LogIndex, lastTerm: Term, leadershipTransfer: Bool)
        case voteResponse(granted: Bool)
        /// AppendEntries: `entries` follow (`prevIndex`, `prevTerm`); `commit` is the leader's.
        case append(prevIndex: LogIndex, prevTerm: Term, entries: [Entry], commit: LogIndex)
        case appendResponse(AppendResult)
        /// Keeps followers quiet; carries a commit index the follower is known to hold, and the
        /// context of a pending ReadIndex round, if any.
        case heartbeat(commit: LogIndex, context: [UInt8]?)
        case heartbeatResponse(context: [UInt8]?)
        /// "Campaign now, skipping pre-vote": the last step of a leadership transfer.
        case timeoutNow
        /// A follower asking the leader for a read index on behalf of its client.
        case readIndex(context: [UInt8])
        case readIndexResponse(index: LogIndex, context: [UInt8])
        /// "Your log ends before my first entry: drop it and continue mine from `baseIndex`", whose
        /// term is `baseTerm` (the entries up to it are committed and deleted here by retention).
        /// `context` is the log reader's description of the base (LogStore's position and chain
        /// CRC), passed to the follower's driver unread. Message logs need no snapshot: the entries
        /// before the base are simply gone, as on the leader.
        case resetLog(baseIndex: LogIndex, baseTerm: Term, context: [UInt8], commit: LogIndex)
    }

    /// The outcome of an append on the follower.
    public enum AppendResult: Hashable, Sendable {
        /// The follower's log matches the leader's up to `matchIndex` (durably: the response leaves
        /// only after the entries are persisted).
        case accepted(matchIndex: LogIndex)
        /// The entry at `rejectedIndex` (the append's `prevIndex`) did not match. `hintIndex` and
        /// `hintTerm` are the follower's last index whose term is at most the leader's `prevTerm`,
        /// so the leader can skip a whole conflicting term per round trip (Raft §5.3, the
        /// optimisation etcd and the thesis describe).
        case rejected(rejectedIndex: LogIndex, hintIndex: LogIndex, hintTerm: Term)
    }

    public var description: String {
        "\(from)->\(to) t\(term) \(body)"
    }
}

extension Message.Body: CustomStringConvertible {
    public var description: String {
        func ctx(_ c: [UInt8]?) -> String {
            guard let c else { return "" }
            return " ctx=" + String(decoding: c, as: UTF8.self)
        }
        switch self {
        case .preVote(let i, let t): return "PreVote last=\(t)/\(i)"
        case .preVoteResponse(let g): return "PreVoteResp \(g ? "granted" : "rejected")"
        case .vote(let i, let t, let transfer): return "Vote last=\(t)/\(i)" + (transfer ? " transfer" : "")
        case .voteResponse(let g): return "VoteResp \(g ? "granted" : "rejected")"
        case .append(let pi, let pt, let entries, let commit):
            return "App prev=\(pt)/\(pi) commit=\(commit) entries=[\(entries.map(\.description).joined(separator: ", "))]"
        case .appendResponse(.accepted(let m)): return "AppResp match=\(m)"
        case .appendResponse(.rejected(let r, let hi, let ht)): return "AppResp rejected=\(r) hint=\(ht)/\(hi)"
        case .heartbeat(let c, let context): return "Heartbeat commit=\(c)" + ctx(context)
        case .heartbeatResponse(let context): return "HeartbeatResp" + ctx(context)
        case .timeoutNow: return "TimeoutNow"
        case .readIndex(let context): return "ReadIndex" + ctx(context)
        case .readIndexResponse(let i, let context): return "ReadIndexResp index=\(i)" + ctx(context)
        case .resetLog(let i, let t, _, let commit): return "ResetLog base=\(t)/\(i) commit=\(commit)"
        }
    }
}
