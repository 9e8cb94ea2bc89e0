import RaftCore

/// One simulated broker process: a RaftNode over a SimDisk, driven exactly as ARCHITECTURE.md's
/// driver loop says (take inputs, Ready, send `messages`, write, sync, send `messagesAfterPersist`,
/// apply, advance). While its disk syncs or it is paused, inputs wait in a bounded mailbox.
final class SimNode {
    enum Input {
        case message(Message)
        case tick
        case propose(client: Int, data: [UInt8])
        case read(context: [UInt8])
        case transfer(to: NodeID)
        case connectionLost(NodeID)
        /// A deferred sync returned (`RaftNode.entriesSynced`).
        case synced(index: LogIndex, term: Term)
    }

    struct PendingProposal {
        var client: Int
        var term: Term
        var data: [UInt8]
        var deadline: SimTime
    }

    let slot: Int
    let id: NodeID
    let disk = SimDisk()
    private(set) lazy var reader = SimLogReader(disk: disk)
    /// Nil while the process is down.
    var raft: RaftNode<SimLogReader>?
    /// Bumped at every crash, so events of the previous life are ignored.
    var incarnation = 0
    var paused = false
    /// A Ready whose write is syncing.
    var inFlight: Ready?
    /// The sync of `inFlight` finished while the process was paused.
    var syncFinishedWhilePaused = false
    var slowDisk = false
    // A leader's deferred syncs, made as the driver makes them (docs/replication.md): once the Readies
    // run out, inline when the mailbox is empty and the loop is the replica's own, else one request
    // at a time to the flusher (always, in mqbroker, whose replica shares a loop with its clients).
    /// The last deferred write no sync was asked for yet.
    var deferredLast: (index: LogIndex, term: Term)?
    /// A request is out with the flusher; its generation (a full sync forgets it, as the driver does).
    var syncRequestOut = false
    var syncRequestGeneration = 0
    /// The node syncs its deferred writes on its own thread: it steps nothing until that returns.
    var inlineSyncInFlight: (index: LogIndex, term: Term)?
    /// Each node's clock runs at its own rate: one tick every `tickIntervalUs`.
    let tickIntervalUs: UInt64

    private var mailbox: [Input] = []
    private var mailboxHead = 0
    var mailboxCount: Int { mailbox.count - mailboxHead }

    /// Proposals this life of the node took, by index, until it applies that index.
    var proposals: [LogIndex: PendingProposal] = [:]
    /// ReadIndex requests this life of the node took: context -> highest acknowledged index when the
    /// read was issued.
    var reads: [[UInt8]: LogIndex] = [:]

    // What the checkers saw last in this life.
    var lastSoftState = SoftState(role: .follower, leader: nil)
    var lastTerm = Term.zero
    var lastCommit = LogIndex.zero
    var appliedIndex = LogIndex.zero
    /// The term in which leader completeness was checked for this node.
    var completenessCheckedTerm: Term?
    /// The term this node led when its last Ready was written, if it led.
    var ledInTermAtLastWrite: Term?

    init(slot: Int, tickIntervalUs: UInt64) {
        self.slot = slot
        self.id = NodeID(UInt64(slot))
        self.tickIntervalUs = tickIntervalUs
    }

    var isUp: Bool { raft != nil }

    /// Queues an input. Returns false when the mailbox is full (the input is lost).
    func enqueue(_ input: Input, limit: Int) -> Bool {
        if mailboxCount >= limit { return false }
        if case .tick = input, mailbox.count > mailboxHead, case .tick = mailbox[mailbox.count - 1] {
            // Ticks that pile up while the node is busy are one late timer, not a burst.
            return true
        }
        mailbox.append(input)
        return true
    }

    func dequeue() -> Input? {
        guard mailboxHead < mailbox.count else { return nil }
        let input = mailbox[mailboxHead]
        mailboxHead += 1
        if mailboxHead == mailbox.count {
            mailbox.removeAll(keepingCapacity: true)
            mailboxHead = 0
        } else if mailboxHead > 256 && mailboxHead * 2 > mailbox.count {
            mailbox.removeFirst(mailboxHead)
            mailboxHead = 0
        }
        return input
    }

    /// The clients of proposals still waiting in the mailbox.
    var queuedProposalClients: [Int] {
        mailbox[mailboxHead...].compactMap { if case .propose(let c, _) = $0 { return c } else { return nil } }
    }

    /// Power cut: the process and everything volatile are gone.
    func crash() {
        raft = nil
        incarnation += 1
        paused = false
        inFlight = nil
        syncFinishedWhilePaused = false
        deferredLast = nil
        syncRequestOut = false
        inlineSyncInFlight = nil
        mailbox.removeAll()
        mailboxHead = 0
        proposals.removeAll()
        reads.removeAll()
        lastSoftState = SoftState(role: .follower, leader: nil)
        lastCommit = .zero
        appliedIndex = .zero
        completenessCheckedTerm = nil
        ledInTermAtLastWrite = nil
    }
}
