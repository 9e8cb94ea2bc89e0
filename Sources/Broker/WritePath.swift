import RaftCore
import Replication
import Synchronization

/// Why the write path did not append.
public enum WriteError: Error, Sendable, CustomStringConvertible {
    /// This member does not lead; `leader` is who does, when known.
    case notLeader(leader: NodeID?)
    /// A new leader that has not yet dispatched its whole log within the caller's time.
    case notReady
    /// The replica's mailbox is full (SYSTEM_BUSY).
    case busy
    /// The entry is empty or larger than the Raft node takes (MESSAGE_ILLEGAL).
    case tooLarge(bytes: Int, limit: Int)
    /// Proposed, but not committed in time: the outcome is unknown (the entry may still commit).
    case timedOut
    /// The replica refused or lost the entry (a new leader replaced it, a storage failure, a stop).
    case failed(ReplicaError)
    /// A classic SLAVE: sends go to its master.
    case slave(brokerName: String)
    /// A classic master's store refused the write (full disk, I/O error).
    case storage(String)

    public var description: String {
        switch self {
        case .notLeader(let l): return "not the leader" + (l.map { "; the leader is n\($0.rawValue)" } ?? "; no leader is known")
        case .notReady: return "the new leader is still dispatching its log"
        case .busy: return "the Raft mailbox is full"
        case .tooLarge(let b, let l): return "an entry of \(b < 0 ? "more" : "\(b)") bytes is over the limit of \(l) (maxMessageSize)"
        case .timedOut: return "not committed in time; it may still commit"
        case .failed(let e): return "\(e)"
        case .slave(let name): return "this broker is a SLAVE of \(name) and takes no writes; send to its master"
        case .storage(let e): return "the store refused the write: \(e)"
        }
    }
}

/// The leader's single door to the log. It numbers what it proposes (the index of every entry, the
/// queue offsets of every message) before the entry reaches the Raft node, and each proposal is
/// guarded (`ProposalGuard`): the node appends it only at that index in that term. So queue offsets
/// in the log are dense and in log order, whatever fails: a refused proposal breaks the chain, every
/// later one is refused too, and the numbering starts again from the log itself.
///
/// A term's numbering starts once this member leads and has dispatched its whole log (its own
/// no-op of the term committed): then the consume queues' ends are the next queue offsets, and the
/// log's end is the next index ("a new leader accepts writes only after its dispatch caught up").
public final class WritePath: BrokerWriter {
    struct State {
        var term: RaftCore.Term?
        var nextIndex = RaftCore.LogIndex.zero
        /// Next queue offset of every queue written in this numbering.
        var offsets: [QueueKey: Int64] = [:]
        /// Offered and not yet answered.
        var inFlight = 0
        var broken = false
        /// Which numbering this is: an answer of an older one must not count against this one.
        var generation: UInt64 = 0
        /// Metadata entries offered and not yet answered (a snapshot waits for none).
        var metadataInFlight = 0
        /// The index of the last metadata entry numbered: a snapshot waits until it is dispatched (a
        /// timed-out one is answered but may still commit, and the snapshot must include it).
        var lastMetadataIndex: RaftCore.LogIndex?
    }

    private let replica: RaftReplica
    private let store: MessageStore
    private let state = Mutex(State())

    /// The largest entry the Raft node takes (RaftConfig.maxEntryBytes).
    public let maxEntryBytes: Int

    public init(replica: RaftReplica, store: MessageStore, maxOffered: Int = 1_024) {
        self.replica = replica
        self.store = store
        self.maxOffered = maxOffered
        maxEntryBytes = replica.options.raft.maxEntryBytes
    }

    /// Whether this member leads with a numbering for its current term: its dispatch caught up with
    /// its whole log, so its consume queues and offsets are the group's. Only then does it correct a
    /// consumer's offset or answer offset queries as the authority.
    public var isCaughtUpLeader: Bool {
        guard let status = replica.status, status.raft.role == .leader else { return false }
        let r = status.raft
        if state.withLock({ $0.term == r.term && !$0.broken }) { return true }
        // No numbering yet (nothing written this term): caught up when everything is dispatched.
        return r.commit == r.lastIndex && store.dispatchedIndex == status.storeNumber(r.lastIndex)
    }

    /// Sends offered on the fast path and not yet answered (tests).
    var offeredInFlight: Int { state.withLock { $0.inFlight } }

    /// The leader, if this member knows one (itself included).
    public var leader: NodeID? { replica.status?.raft.leader }
    public var isLeader: Bool { replica.status?.raft.role == .leader }
    public var refusal: WriteError { .notLeader(leader: leader) }
    public var keepsLocalOffsets: Bool { false }

    public func confirmLeadership(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        guard isLeader, let index = try? await replica.readIndex(timeout: timeout) else { return false }
        while let status = replica.status, store.dispatchedIndex < status.storeNumber(index) {
            guard ContinuousClock.now < deadline else { return false }
            try? await Task.sleep(for: .milliseconds(1))
        }
        return replica.status != nil
    }

    /// Waits until this member leads with a numbering for its term, or throws.
    func ensureReady(deadline: ContinuousClock.Instant) async throws(WriteError) {
        while true {
            guard let status = replica.status else {
                if ContinuousClock.now >= deadline { throw .notLeader(leader: nil) }
                try? await Task.sleep(for: .milliseconds(2))
                continue
            }
            let r = status.raft
            guard r.role == .leader else { throw .notLeader(leader: r.leader) }
            let dispatched = store.dispatchedIndex
            let ready = state.withLock { s -> Bool in
                if s.term == r.term && !s.broken { return true }
                // Within one term, a new numbering waits for the old one's proposals to be answered,
                // so none of them can land at an index the new numbering hands out again.
                if s.term == r.term && s.inFlight > 0 { return false }
                guard r.commit == r.lastIndex, dispatched == status.storeNumber(r.lastIndex) else { return false }
                s = State(term: r.term, nextIndex: r.lastIndex.next, generation: s.generation + 1)
                return true
            }
            if ready { return }
            if ContinuousClock.now >= deadline { throw .notReady }
            try? await Task.sleep(for: .milliseconds(1))
        }
    }

    /// Appends one entry holding `count` messages of queue `key` (nil for an entry without messages);
    /// `body(firstQueueOffset)` builds it. Returns the first message's queue offset once the entry
    /// is committed and dispatched.
    public func append(queue key: QueueKey?, count: Int, timeout: Duration, kind: EntryKind,
                       body: (_ firstQueueOffset: Int64, _ numbered: [QueueKey: Int64]) -> [UInt8]) async throws(WriteError) -> Appended {
        Appended(queueOffset: try await appendCommitted(queue: key, count: count, timeout: timeout, kind: kind, body: body).queueOffset)
    }

    /// `append`, answering with the replica's commit.
    public func appendCommitted(queue key: QueueKey?, count: Int, timeout: Duration, kind: EntryKind,
                                body: (_ firstQueueOffset: Int64, _ numbered: [QueueKey: Int64]) -> [UInt8]) async throws(WriteError) -> (queueOffset: Int64, committed: RaftReplica.Committed) {
        let deadline = ContinuousClock.now + timeout
        while true {
            try await ensureReady(deadline: deadline)
            var firstOffset: Int64 = 0
            var offered: UInt64?
            let outcome: Result<RaftReplica.Committed, any Error>
            do {
                outcome = .success(try await withCheckedThrowingContinuation { (c: CheckedContinuation<RaftReplica.Committed, any Error>) in
                    let numbered = numberAndOffer(queue: key, count: count, kind: kind, deadline: deadline, body: body) { data, proposalGuard, remaining, _ in
                        replica.offer(data, guard: proposalGuard, timeout: remaining, continuation: c)
                    }
                    switch numbered {
                    case .success(let n): (firstOffset, offered) = (n.firstOffset, n.generation)
                    case .failure(let e): c.resume(throwing: NotOffered(reason: e))
                    }
                })
            } catch {
                outcome = .failure(error)
            }
            if let generation = offered { answered(generation: generation, kind: kind) }
            switch outcome {
            case .success(let committed):
                return (firstOffset, committed)
            case .failure(let error):
                guard let error = error as? ReplicaError else {
                    // Not offered: the numbering is being redone, or the mailbox is full.
                    if let n = error as? NotOffered, case .tooLarge = n.reason { throw n.reason }
                    if ContinuousClock.now >= deadline { throw (error as? NotOffered)?.reason ?? .busy }
                    try? await Task.sleep(for: .milliseconds(1))
                    continue
                }
                if let answer = failed(error, generation: offered, deadline: deadline) { throw answer }
            }
        }
    }

    /// Sends in flight on the fast path (offered, not yet answered) beyond which it takes no more:
    /// further sends wait in the send processor's queue, whose workers and queue are bounded, as
    /// every send did before the fast path (a group without a quorum must not gather sends without
    /// limit until their timeouts). `canOffer` checks it when a send is taken; a batch taken in one
    /// turn is offered whole at the turn's end, so the count may pass the bound by at most one batch
    /// per event loop (`BrokerService.Options.sendBatchMessages`). Entries are fewer than sends, so
    /// with the send processor's 8,192 workers the Raft node's pending proposals stay under its
    /// maxPendingProposals (10,000), which would otherwise refuse one and break the numbering.
    public let maxOffered: Int
    /// Set while a metadata snapshot is built under the numbering lock (milliseconds for many
    /// topics): the fast path, which runs on event loops, takes the waiting path meanwhile.
    private let snapshotting = Atomic<Bool>(false)

    /// What the fast path's `onCommit` learns.
    public enum Offered: Sendable {
        /// Committed and dispatched: the first message's queue offset.
        case committed(queueOffset: Int64)
        /// Not stored, or its outcome is unknown: answer with this.
        case failed(WriteError)
        /// Not stored, and the numbering is being redone: take the waiting path (`append`).
        case again
    }

    /// Whether `offer` would take an entry now (checked before a send builds its records on the
    /// event loop, so a send that takes the waiting path is not encoded twice).
    public var canOffer: Bool {
        guard !snapshotting.load(ordering: .acquiring), let status = replica.status, status.raft.role == .leader else { return false }
        return state.withLock { $0.term == status.raft.term && !$0.broken && $0.inFlight < maxOffered }
    }

    /// The send fast path: numbers one entry of `count` messages of `key` and hands it to the
    /// replica without a waiting task, when this member leads with a numbering for its term.
    /// `onCommit` runs on the Raft driver once the entry is committed and dispatched, or failed
    /// (keep it short). Returns false when nothing was offered (not leading or not numbering yet,
    /// a full mailbox, an entry too large): the caller takes the waiting path, which waits for the
    /// numbering and answers every case.
    public func offer(queue key: QueueKey, count: Int, timeout: Duration,
                      body: (_ firstQueueOffset: Int64, _ numbered: [QueueKey: Int64]) -> [UInt8],
                      receipt: OfferReceipt) -> Bool {
        guard canOffer else { return false }
        let deadline = ContinuousClock.now + timeout
        let numbered = numberAndOffer(queue: key, count: count, kind: .messages, deadline: deadline, body: body) { data, proposalGuard, remaining, numbering in
            // Before the replica can see it: the mailbox's lock orders these writes before the driver's reads.
            receipt.path = self
            receipt.firstOffset = numbering.firstOffset
            receipt.generation = numbering.generation
            receipt.deadline = deadline
            return replica.offer(data, guard: proposalGuard, timeout: remaining, receipt: receipt)
        }
        guard case .success = numbered else { return false }
        return true
    }

    /// What `offer(batch:)` did.
    public enum BatchOffer: Sendable, Equatable {
        /// Offered: every receipt is finished with the entry's outcome.
        case offered
        /// Not offered, the replica's mailbox is full: answer SYSTEM_BUSY.
        case busy
        /// Not offered (not leading or not numbering now, a snapshot being built, an entry that
        /// could not be built): each send takes the waiting path, which answers every case.
        case again
    }

    /// The fast path for several sends at once: numbers one entry holding all of them, in order
    /// (`queues[k]`: the queue and message count of the k-th send; `body(firstOffsets)` builds the
    /// entry from each send's first queue offset, or returns empty when it cannot), and hands it to
    /// the replica with one receipt that finishes every send's receipt with the entry's outcome.
    /// The sends were taken while `canOffer` held (the in-flight bound is not checked again: a
    /// turn's sends are offered whole). Unless `.offered`, no receipt has been touched.
    public func offer(batch queues: [(key: QueueKey, count: Int)], receipts: [OfferReceipt], timeout: Duration,
                      body: (_ firstOffsets: [Int64]) -> [UInt8]) -> BatchOffer {
        precondition(!receipts.isEmpty && queues.count == receipts.count, "a batch offer needs one queue and count per receipt")
        guard !snapshotting.load(ordering: .acquiring), let status = replica.status, status.raft.role == .leader else { return .again }
        let deadline = ContinuousClock.now + timeout
        return state.withLock { s in
            guard let term = s.term, term == status.raft.term, !s.broken else { return .again }
            // Each queue's next offset within the batch (a batch touches a few queues: a linear search).
            var next: [(key: QueueKey, offset: Int64)] = []
            var firstOffsets: [Int64] = []
            firstOffsets.reserveCapacity(queues.count)
            for q in queues {
                if let i = next.firstIndex(where: { $0.key == q.key }) {
                    firstOffsets.append(next[i].offset)
                    next[i].offset += Int64(q.count)
                } else {
                    let first = s.offsets[q.key] ?? store.maxOffset(q.key)
                    firstOffsets.append(first)
                    next.append((q.key, first + Int64(q.count)))
                }
            }
            let data = body(firstOffsets)
            guard !data.isEmpty, data.count <= maxEntryBytes else { return .again }
            // Before the replica can see them: the mailbox's lock orders these writes before the driver's reads.
            for (r, first) in zip(receipts, firstOffsets) {
                r.path = self
                r.firstOffset = first
                r.generation = s.generation
                r.deadline = deadline
            }
            let remaining = deadline - .now
            guard replica.offer(data, guard: ProposalGuard(term: term, index: s.nextIndex), timeout: remaining > .zero ? remaining : .milliseconds(1),
                                receipt: BatchReceipt(receipts)) else {
                for r in receipts { r.path = nil }
                return .busy
            }
            for n in next { s.offsets[n.key] = n.offset }
            s.nextIndex = s.nextIndex.next
            // Counted per send: the batch's finish answers each (`finished(batch:)`).
            s.inFlight += receipts.count
            return .offered
        }
    }

    /// A batch entry's outcome (`BatchReceipt.finish`), on the Raft driver: one count and one
    /// reading of the error for all of its sends, then each send's answer.
    fileprivate func finished(batch receipts: [OfferReceipt], _ result: Result<RaftReplica.Committed, any Error>) {
        guard let first = receipts.first else { return }
        for r in receipts {
            // Only `offer(batch:)` hands these receipts to the replica, which finishes the batch once.
            guard r.path != nil else { return assertionFailure("a batched offer receipt finished twice, or never offered") }
            r.path = nil
        }
        answered(generation: first.generation, kind: .messages, count: receipts.count)
        switch result {
        case .success:
            for r in receipts { r.answer(.committed(queueOffset: r.firstOffset)) }
        case .failure(let error):
            // One numbering and one deadline for the whole batch (set together in `offer(batch:)`).
            let answer = refusal(error, of: first)
            for r in receipts { r.answer(answer) }
        }
    }

    /// What an offered send whose entry failed is told (`receipt`: its numbering and deadline).
    private func refusal(_ error: any Error, of receipt: OfferReceipt) -> Offered {
        guard let error = error as? ReplicaError else { return .failed(.busy) }
        return failed(error, generation: receipt.generation, deadline: receipt.deadline ?? .now).map { .failed($0) } ?? .again
    }

    /// An offered entry's outcome (`OfferReceipt.finish`), on the Raft driver.
    fileprivate func finished(_ receipt: OfferReceipt, _ result: Result<RaftReplica.Committed, any Error>) {
        answered(generation: receipt.generation, kind: .messages)
        switch result {
        case .success: receipt.answer(.committed(queueOffset: receipt.firstOffset))
        case .failure(let error): receipt.answer(refusal(error, of: receipt))
        }
    }

    /// Numbers one entry and offers it (`offer` hands it to the replica) under the numbering lock,
    /// so entries reach the replica in numbering order. Returns the first queue offset and the
    /// numbering's generation, or why nothing was offered.
    private func numberAndOffer(queue key: QueueKey?, count: Int, kind: EntryKind, deadline: ContinuousClock.Instant,
                                body: (_ firstQueueOffset: Int64, _ numbered: [QueueKey: Int64]) -> [UInt8],
                                offer: ([UInt8], ProposalGuard, Duration, (firstOffset: Int64, generation: UInt64)) -> Bool) -> Result<(firstOffset: Int64, generation: UInt64), WriteError> {
        state.withLock { s in
            guard let term = s.term, !s.broken else { return .failure(.notReady) }
            // A snapshot is the metadata as applied: none may be on its way.
            if kind == .snapshot {
                let applied = s.lastMetadataIndex.map { store.dispatchedIndex >= replica.storeNumber($0) } ?? true
                if s.metadataInFlight > 0 || !applied { return .failure(.busy) }
            }
            var firstOffset: Int64 = 0
            if let key { firstOffset = s.offsets[key] ?? store.maxOffset(key) }
            let data = body(firstOffset, s.offsets)
            // The node would refuse it and break the numbering of everyone else.
            guard !data.isEmpty, data.count <= maxEntryBytes else { return .failure(.tooLarge(bytes: data.count, limit: maxEntryBytes)) }
            let remaining = deadline - .now
            guard offer(data, ProposalGuard(term: term, index: s.nextIndex), remaining > .zero ? remaining : .milliseconds(1), (firstOffset, s.generation)) else { return .failure(.busy) }
            if let key { s.offsets[key] = firstOffset + Int64(count) }
            if kind == .metadata { s.lastMetadataIndex = s.nextIndex }
            s.nextIndex = s.nextIndex.next
            s.inFlight += 1
            if kind == .metadata { s.metadataInFlight += 1 }
            return .success((firstOffset, s.generation))
        }
    }

    /// An offered entry was answered (committed or not): `count` of its sends, for a batch.
    private func answered(generation: UInt64, kind: EntryKind, count: Int = 1) {
        state.withLock { s in
            guard s.generation == generation else { return }
            s.inFlight -= count
            if kind == .metadata { s.metadataInFlight -= 1 }
        }
    }

    /// What the replica's refusal of an offered entry means: the error to answer with, or nil to
    /// number again and retry (time remains). Every refusal but a timeout breaks the numbering the
    /// entry was offered in (`generation`), not a newer one.
    private func failed(_ error: ReplicaError, generation: UInt64?, deadline: ContinuousClock.Instant) -> WriteError? {
        func breakNumbering() {
            state.withLock { s in if generation == nil || s.generation == generation { s.broken = true } }
        }
        switch error {
        case .timedOut: return .timedOut
        case .refused(.proposalTooLarge), .refused(.emptyProposal):
            breakNumbering()
            return .tooLarge(bytes: -1, limit: maxEntryBytes)
        case .unexpectedPosition, .refused, .busy:
            // The chain is broken; number again (after the in-flight ones are answered).
            breakNumbering()
            if case .refused(.notLeader(let l)) = error { return .notLeader(leader: l) }
            return ContinuousClock.now >= deadline ? .failed(error) : nil
        case .overwritten, .stopped, .storage:
            breakNumbering()
            return .failed(error)
        }
    }

    /// What an entry carries, for the numbering's bookkeeping.
    public enum EntryKind: Sendable { case messages, metadata, snapshot, opaque }

    /// A metadata snapshot: the applied metadata and every queue's next offset as numbered, taken
    /// under the numbering lock when no metadata entry is in flight, so it is exactly the state as
    /// of the entry before it.
    public func appendSnapshot(timeout: Duration) async throws(WriteError) {
        let store = self.store
        _ = try await appendCommitted(queue: nil, count: 0, timeout: timeout, kind: .snapshot) { _, numbered in
            self.snapshotting.store(true, ordering: .releasing)
            defer { self.snapshotting.store(false, ordering: .releasing) }
            return MetadataChange.snapshot(store.snapshot(numbered: numbered)).encoded()
        }
    }

    /// An opaque entry (the raw-log API's APPEND).
    public func appendOpaque(_ data: [UInt8], timeout: Duration) async throws(WriteError) -> RaftReplica.Committed {
        try await appendCommitted(queue: nil, count: 0, timeout: timeout, kind: .opaque) { _, _ in data }.committed
    }
}

struct NotOffered: Error {
    var reason: WriteError
}

/// What learns the outcome of an entry offered on the send fast path (`BrokerWriter.offer`): the
/// caller subclasses it, keeps in it what it needs to answer, and overrides `answer(_:)`. The write
/// path keeps its own part (the numbering the entry was offered in, the deadline) here too, so one
/// object per send carries everything: a closure for the caller's part and another for the write
/// path's cost an allocation each (docs/performance.md, fourteenth round).
public class OfferReceipt: ProposalReceipt, @unchecked Sendable {
    // Set by `WritePath.offer` under its numbering lock, before the replica's mailbox takes the entry.
    fileprivate var path: WritePath?
    fileprivate var firstOffset: Int64 = 0
    fileprivate var generation: UInt64 = 0
    fileprivate var deadline: ContinuousClock.Instant?

    public override init() { super.init() }

    public final override func finish(_ result: Result<RaftReplica.Committed, any Error>) {
        // Only `WritePath.offer` hands receipts to the replica, which finishes each once.
        guard let path else { return assertionFailure("an offer receipt finished twice, or never offered") }
        self.path = nil
        path.finished(self, result)
    }

    /// The outcome, on the Raft driver, once: committed and dispatched, failed, or to be taken
    /// again on the waiting path. Must be short and must not block.
    public func answer(_ offered: WritePath.Offered) {}
}

/// The receipt of an entry that holds several sends (`WritePath.offer(batch:)`): the entry's
/// outcome is each send's.
final class BatchReceipt: ProposalReceipt, @unchecked Sendable {
    let receipts: [OfferReceipt]
    init(_ receipts: [OfferReceipt]) { self.receipts = receipts }
    override func finish(_ result: Result<RaftReplica.Committed, any Error>) {
        // Set by `offer(batch:)` under its numbering lock before the replica saw the entry.
        guard let path = receipts.first?.path else { return assertionFailure("a batch receipt finished twice, or never offered") }
        path.finished(batch: receipts, result)
    }
}

/// `BrokerWriter.offer` with a closure (tests, and callers for whom an allocation more is nothing).
final class ClosureOfferReceipt: OfferReceipt, @unchecked Sendable {
    let onCommit: @Sendable (WritePath.Offered) -> Void
    init(_ onCommit: @escaping @Sendable (WritePath.Offered) -> Void) { self.onCommit = onCommit }
    override func answer(_ offered: WritePath.Offered) { onCommit(offered) }
}
