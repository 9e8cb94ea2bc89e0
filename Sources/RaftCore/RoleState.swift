/// Per-role state (STYLE 8): what only a candidate or only a leader has lives in its case.
enum RoleState {
    case follower
    /// Votes received in the pre-vote round (true = granted). Term unchanged.
    case preCandidate(votes: [NodeID: Bool])
    case candidate(votes: [NodeID: Bool])
    case leader(LeaderState)

    var role: Role {
        switch self {
        case .follower: return .follower
        case .preCandidate: return .preCandidate
        case .candidate: return .candidate
        case .leader: return .leader
        }
    }
}

struct LeaderState {
    /// One per voter, this node included (its `match` is what is durable here).
    var progress: [NodeID: Progress]
    /// A leadership transfer in progress: proposals are refused until it ends.
    var transferee: NodeID?
    /// Proposals appended but not committed yet, for the uncommitted limits.
    var uncommitted = UncommittedProposals()
    /// ReadIndex requests waiting for a quorum to confirm leadership.
    var pendingReads: [PendingRead] = []
    /// ReadIndex requests that came before this leader committed an entry of its term (thesis §6.4:
    /// until then it does not know the commit index).
    var readsWaitingForCommit: [(context: [UInt8], from: NodeID)] = []
    /// Ticks left before the preferred-leader check may try again after a failed transfer.
    var preferredLeaderBackoffTicks = 0
    /// A commit advanced that some follower has not been sent: the next tick sends it a bare update
    /// (`RaftNode.announceCommit`).
    var commitUpdateOwed = false
}

struct PendingRead {
    var index: LogIndex
    var context: [UInt8]
    var from: NodeID
    var acks: Set<NodeID>
}

/// The leader's proposals that are not yet committed, oldest first.
struct UncommittedProposals {
    private var items: [(index: LogIndex, bytes: Int)] = []
    private var head = 0
    private(set) var bytes = 0
    var count: Int { items.count - head }

    mutating func add(index: LogIndex, bytes b: Int) {
        items.append((index, b))
        bytes += b
    }

    mutating func release(through index: LogIndex) {
        while head < items.count, items[head].index <= index {
            bytes -= items[head].bytes
            head += 1
        }
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 1024 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
    }
}

extension RaftNode {
    /// Runs `body` on the leader state in place. `body` must not change the role.
    @discardableResult
    func withLeader<R, E: Error>(_ body: (inout LeaderState) throws(E) -> R) throws(E) -> R {
        guard case .leader(var l) = roleState else { preconditionFailure("withLeader on a \(role)") }
        roleState = .follower  // drop the enum's reference so `l` is mutated without a copy
        defer {
            precondition(role == .follower, "the role changed inside withLeader")
            roleState = .leader(l)
        }
        return try body(&l)
    }
}
