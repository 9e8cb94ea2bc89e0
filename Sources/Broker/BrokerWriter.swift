import RaftCore

/// How a stored entry was replicated, for the send's answer (RocketMQ's PutMessageStatus).
public enum ReplicationOutcome: Sendable, Equatable {
    /// As the group promises: a Raft quorum has it, or a classic master stored it (and under
    /// SYNC_MASTER a slave acknowledged it).
    case stored
    /// SYNC_MASTER: stored on the master, but no slave is connected or close enough (11).
    case slaveNotAvailable
    /// SYNC_MASTER: stored on the master, but no slave acknowledged it in syncFlushTimeout (12).
    case flushSlaveTimeout
}

/// An entry written through a `BrokerWriter`.
public struct Appended: Sendable {
    /// The first message's queue offset (0 for an entry without messages).
    public var queueOffset: Int64
    public var outcome: ReplicationOutcome
    public init(queueOffset: Int64, outcome: ReplicationOutcome = .stored) {
        self.queueOffset = queueOffset
        self.outcome = outcome
    }
}

/// The broker's single door to its group's log, whoever owns it: the Raft leader's `WritePath`,
/// or a classic master's `ClassicWritePath` (a classic slave takes no writes). The writer numbers
/// entries and queue offsets, and answers once the entry is dispatched to the consume queues.
public protocol BrokerWriter: Sendable {
    /// Whether this broker takes writes now (the Raft leader; a classic master).
    var isLeader: Bool { get }
    /// The Raft leader to forward a write to (nil when unknown, and always in a classic group).
    var leader: NodeID? { get }
    /// Whether this broker's consume queues and offsets are the group's authority (a Raft leader
    /// that dispatched its whole log; a classic master).
    var isCaughtUpLeader: Bool { get }
    /// Whether this broker still leads once the call began, and has applied everything committed
    /// until then (a Raft leader confirms it with ReadIndex, a heartbeat round with a majority; a
    /// classic master always leads). False when it cannot within `timeout`.
    func confirmLeadership(timeout: Duration) async -> Bool
    /// Why a write is refused here when `isLeader` is false.
    var refusal: WriteError { get }
    /// A classic slave keeps the offsets consumers commit to it while its master is away.
    var keepsLocalOffsets: Bool { get }
    /// The largest entry the log takes.
    var maxEntryBytes: Int { get }

    /// Appends one entry holding `count` messages of queue `key` (nil for an entry without
    /// messages); `body(firstQueueOffset, numbered)` builds it under the numbering lock.
    func append(queue key: QueueKey?, count: Int, timeout: Duration, kind: WritePath.EntryKind,
                body: (_ firstQueueOffset: Int64, _ numbered: [QueueKey: Int64]) -> [UInt8]) async throws(WriteError) -> Appended

    /// A metadata snapshot as of the entry before it.
    func appendSnapshot(timeout: Duration) async throws(WriteError)

    /// Whether the send fast path (`offer`) would take an entry now.
    var canOffer: Bool { get }
    /// The send fast path (`WritePath.offer`): offers one entry without a waiting task, or returns
    /// false and the caller takes `append`.
    func offer(queue key: QueueKey, count: Int, timeout: Duration,
               body: (_ firstQueueOffset: Int64, _ numbered: [QueueKey: Int64]) -> [UInt8],
               receipt: OfferReceipt) -> Bool
    /// The fast path for several sends in one entry (`WritePath.offer(batch:receipts:timeout:body:)`).
    func offer(batch queues: [(key: QueueKey, count: Int)], receipts: [OfferReceipt], timeout: Duration,
               body: (_ firstOffsets: [Int64]) -> [UInt8]) -> WritePath.BatchOffer
}

extension BrokerWriter {
    /// Writers without a fast path (a classic master) never offer: every send takes `append`.
    public var canOffer: Bool { false }

    public func offer(queue key: QueueKey, count: Int, timeout: Duration,
                      body: (_ firstQueueOffset: Int64, _ numbered: [QueueKey: Int64]) -> [UInt8],
                      receipt: OfferReceipt) -> Bool { false }

    public func offer(batch queues: [(key: QueueKey, count: Int)], receipts: [OfferReceipt], timeout: Duration,
                      body: (_ firstOffsets: [Int64]) -> [UInt8]) -> WritePath.BatchOffer { .again }

    /// `offer` with the outcome told to a closure (one allocation more than a receipt of one's own).
    public func offer(queue key: QueueKey, count: Int, timeout: Duration,
                      body: (_ firstQueueOffset: Int64, _ numbered: [QueueKey: Int64]) -> [UInt8],
                      onCommit: @escaping @Sendable (WritePath.Offered) -> Void) -> Bool {
        offer(queue: key, count: count, timeout: timeout, body: body, receipt: ClosureOfferReceipt(onCommit))
    }

    public func append(queue key: QueueKey?, count: Int, timeout: Duration,
                       body: (_ firstQueueOffset: Int64, _ numbered: [QueueKey: Int64]) -> [UInt8]) async throws(WriteError) -> Appended {
        try await append(queue: key, count: count, timeout: timeout, kind: .messages, body: body)
    }

    /// A metadata change (topics, offsets, groups), answered once applied.
    public func append(_ change: MetadataChange, timeout: Duration) async throws(WriteError) {
        let bytes = change.encoded()
        _ = try await append(queue: nil, count: 0, timeout: timeout, kind: .metadata) { _, _ in bytes }
    }
}
