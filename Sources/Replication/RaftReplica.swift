import Glibc
import LogFormat
import LogStore
import Logging
import NIOCore
import NIOPosix
import RaftCore
import Remoting
import Synchronization

/// How a replica runs.
public struct RaftReplicaOptions: Sendable {
    public var raft: RaftConfig
    /// "host:port" of every member's peer listener, this node's included (DLedger's dLegerPeers).
    public var peerAddresses: [NodeID: String]
    /// One RaftCore tick of real time. RaftConfig's tick counts are in these.
    public var tickIntervalMs: Int = 10
    /// SYNC_FLUSH: an entry counts toward the quorum only once it is fdatasync'ed here. ASYNC_FLUSH
    /// (false): once it is in the page cache; a power cut of a majority at once can then lose
    /// acknowledged entries written within the last flush interval (docs/replication.md).
    public var syncBeforeAcknowledging = true
    /// With `syncBeforeAcknowledging`: a leader writes its own entries and goes on without waiting
    /// for their sync (`Ready.syncMayBeDeferred`); once its Readies run out it syncs them inline if
    /// its mailbox is empty, else the store's flusher thread does while it steps on. It counts itself
    /// toward their quorum once they are durable, so its fdatasync no longer stands between it and
    /// the followers' acknowledgements. False: every Ready waits for its sync on the driver.
    public var deferLeaderSync = true
    /// The store index of the first entry of an empty log (DLedger numbers from 0).
    public var storeIndexOfEmptyLog: UInt64 = 0
    /// How far the subscriber already applied (Raft index); committed entries after it are delivered.
    public var appliedIndex: RaftCore.LogIndex = .zero
    /// Inputs (peer messages, the alarm's wake-ups, proposals) waiting for the driver; more are refused.
    public var mailboxLimit = 65_536
    /// Inputs the driver steps before it handles a Ready (one write and one sync for all of them).
    public var maxInputsPerReady = 4_096
    /// Messages waiting to be sent to one peer.
    public var peerOutboxLimit = 16_384
    /// Deletes old segments by RocketMQ's rules (fileReservedTime, deleteWhen, disk ratios), every
    /// `retentionIntervalMs`, never entries the subscriber has not applied. The driver runs it, so no
    /// read of the node races a deletion. A follower that then lacks what the leader deleted is reset
    /// to the leader's first entry (docs/replication.md). Nil: nothing is deleted.
    public var retention: RetentionPolicy? = nil
    public var retentionIntervalMs = 10_000
    /// Rewrites an entry's body once its index and position are fixed, on every member alike (so the
    /// logs stay identical byte for byte): the broker writes each message's physical offset there,
    /// as DLedger's append hook does. It must depend on nothing but its arguments.
    public var bodyPatch: (@Sendable (LogFormat.LogIndex, LogPosition, UnsafeMutableRawBufferPointer) -> Void)? = nil
    /// The first store index retention must keep besides the unapplied ones (the broker's latest
    /// metadata snapshot, so that a member reset to this log's base still finds one); nil: none.
    public var retentionFloor: (@Sendable () -> LogFormat.LogIndex?)? = nil
    /// Called on the driver each time the node's role or known leader changes, once `status` shows
    /// the change (the broker registers with its nameservers at once, instead of polling `status`).
    /// Must be short and must not block.
    public var onRoleChange: (@Sendable () -> Void)? = nil

    public init(raft: RaftConfig, peerAddresses: [NodeID: String]) {
        precondition(Set(raft.voters) == Set(peerAddresses.keys), "RaftReplicaOptions: every voter needs a peer address")
        self.raft = raft
        self.peerAddresses = peerAddresses
    }
}

/// Who learns an offered proposal's outcome without a waiting task (`RaftReplica.offer(_:guard:timeout:receipt:)`):
/// subclassed by the caller, which keeps in it whatever it needs to act on the outcome. One object
/// per proposal where a callback closure would cost its own context besides the caller's state (a
/// send's answer on the leader, docs/performance.md, fourteenth round).
open class ProposalReceipt: @unchecked Sendable {
    public init() {}

    /// The outcome: runs on the node's driver after the entry's commit and its `apply`, or at its
    /// failure, exactly once. Must be short and must not block.
    open func finish(_ result: Result<RaftReplica.Committed, any Error>) {}
}

/// Who learns a proposal's outcome: a suspended caller, a callback run on the driver, or a receipt.
enum ProposalReply: Sendable {
    case continuation(CheckedContinuation<RaftReplica.Committed, any Error>)
    case callback(@Sendable (Result<RaftReplica.Committed, any Error>) -> Void)
    case receipt(ProposalReceipt)

    func resume(returning committed: RaftReplica.Committed) {
        switch self {
        case .continuation(let c): c.resume(returning: committed)
        case .callback(let f): f(.success(committed))
        case .receipt(let r): r.finish(.success(committed))
        }
    }

    func resume(throwing error: any Error) {
        switch self {
        case .continuation(let c): c.resume(throwing: error)
        case .callback(let f): f(.failure(error))
        case .receipt(let r): r.finish(.failure(error))
        }
    }
}

/// What the apply step receives: committed entries in order and, when this node wrote all of them
/// lately (the driver keeps its last few MiB of writes), where each one's header sits in the store,
/// so a subscriber that needs positions does not read the entries back. The bodies are as proposed,
/// before `RaftReplicaOptions.bodyPatch`: whatever the patch writes must be taken from the store, or
/// computed from the position as the patch does.
public struct CommittedEntries: Sendable {
    public var entries: [RaftCore.Entry]
    /// The store position of each of `entries`; nil when the node no longer holds them (after a
    /// restart, or when they were written long ago).
    public var positions: [LogPosition]?
    public init(entries: [RaftCore.Entry], positions: [LogPosition]?) {
        precondition(positions == nil || positions!.count == entries.count, "a position for each entry")
        self.entries = entries
        self.positions = positions
    }
}

/// What `/raft/state` shows: the node's status, when each peer was last heard from, and how Raft
/// indexes map to the store's (DLedger's) numbers.
public struct ReplicaStatus: Sendable {
    public var raft: RaftStatus
    public var lastHeard: [NodeID: ContinuousClock.Instant]
    public var storeIndexOfEmptyLog: UInt64
    /// The Raft index of the log's first entry (above 1 once retention deleted a prefix or a reset
    /// moved the log to the leader's base).
    public var firstIndex: RaftCore.LogIndex

    /// A Raft index in the store's numbering (DLedger's: the first entry is 0); -1 for "none".
    public func storeNumber(_ i: RaftCore.LogIndex) -> Int64 { Int64(i.rawValue) - 1 + Int64(storeIndexOfEmptyLog) }
}

/// Why a proposal was not committed.
public enum ReplicaError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Refused by the Raft node (not the leader, a limit, a transfer in progress).
    case refused(RaftError)
    /// The mailbox is full: the caller should answer SYSTEM_BUSY.
    case busy
    /// A new leader replaced the entry before it committed.
    case overwritten(index: RaftCore.LogIndex)
    /// Not committed within the caller's time limit. The entry is in the log and may still commit
    /// (DLedger's WAIT_QUORUM_ACK_TIMEOUT): the outcome is unknown.
    case timedOut(index: RaftCore.LogIndex)
    /// A guarded proposal (`ProposalGuard`) found the node in another term or its log at another
    /// index than the proposer expected: nothing was appended.
    case unexpectedPosition(expected: ProposalGuard, term: RaftCore.Term, nextIndex: RaftCore.LogIndex)
    case stopped
    case storage(String)

    public var description: String {
        switch self {
        case .refused(let e): return "\(e)"
        case .busy: return "the replica's mailbox is full"
        case .overwritten(let i): return "entry \(i) was replaced by a new leader before it committed"
        case .timedOut(let i): return "entry \(i) did not commit in time; it may still commit"
        case .unexpectedPosition(let g, let t, let n):
            return "the proposal expected index \(g.index) in term \(g.term); the node is in term \(t) with next index \(n)"
        case .stopped: return "the replica stopped"
        case .storage(let s): return "storage failure: \(s)"
        }
    }
}

/// Where a proposer expects its entry: the broker's write path numbers its messages (queue offsets)
/// before they reach the log, so an entry must land exactly at the index it was numbered for, in the
/// term it was numbered in, or not at all.
public struct ProposalGuard: Sendable, Equatable {
    public var term: RaftCore.Term
    public var index: RaftCore.LogIndex
    public init(term: RaftCore.Term, index: RaftCore.LogIndex) {
        self.term = term
        self.index = index
    }
}

/// The one task that owns a RaftCore node and drives its Ready loop over LogStore, the peer port and
/// a real clock (ARCHITECTURE.md, "The driver loop"):
/// take a batch of inputs and step them; send `messages`; write the entries (truncating first when the
/// Ready says so); wait until they are durable (SYNC_FLUSH) and persist term and vote; send
/// `messagesAfterPersist`; hand committed entries to the subscriber in order and complete the
/// proposals; advance.
public final class RaftReplica: Sendable {
    enum Input: Sendable {
        case message(Message)
        case tick
        case propose([UInt8], ProposalGuard?, deadline: ContinuousClock.Instant, ProposalReply)
        case transfer(NodeID, CheckedContinuation<Void, any Error>)
        case connectionLost(NodeID)
        case read(deadline: ContinuousClock.Instant, CheckedContinuation<RaftCore.LogIndex, any Error>)
        /// A deferred sync returned (only a wake-up: the driver reads the store's durable point).
        case synced
    }

    public let options: RaftReplicaOptions
    private let store: LogStore
    private let hardStateFile: HardStateFile
    private let logger: Logger
    private let apply: @Sendable (CommittedEntries) async throws -> Void
    private let logReset: @Sendable (RaftCore.LogIndex) async -> Void
    private let mailbox: Mailbox<Input>
    private let published = Mutex<ReplicaStatus?>(nil)
    /// How often the driver's alarm went off (docs/replication.md, "Ticks"; for tests).
    let alarmsFired = Atomic<Int>(0)

    /// `apply` receives committed entries in order, once each per run (from `appliedIndex` on), with
    /// their store positions when the node wrote them lately (see `CommittedEntries`); the
    /// driver waits for it, so a slow subscriber slows the node instead of queueing without bound. When
    /// it throws, the node stops (what is committed cannot be skipped).
    /// `logReset(base)` says that the log was reset to the leader's base (this node had fallen behind
    /// the leader's retention start): the entries up to `base` were never applied here and never will
    /// be; `apply` continues after it.
    public init(options: RaftReplicaOptions, store: LogStore, hardStateFile: HardStateFile,
                logger: Logger, apply: @escaping @Sendable (CommittedEntries) async throws -> Void,
                logReset: @escaping @Sendable (RaftCore.LogIndex) async -> Void = { _ in }) {
        self.options = options
        self.store = store
        self.hardStateFile = hardStateFile
        self.logger = logger
        self.apply = apply
        self.logReset = logReset
        self.mailbox = Mailbox(limit: options.mailboxLimit)
    }

    /// A Raft index in the store's numbering (DLedger's: the first entry is 0).
    public func storeNumber(_ i: RaftCore.LogIndex) -> Int64 { Int64(i.rawValue) - 1 + Int64(options.storeIndexOfEmptyLog) }

    /// The node's state after its last Ready (nil before the first).
    public var status: ReplicaStatus? { published.withLock { $0 } }

    /// Proposes `data`; returns its Raft index once it is committed, or throws `.timedOut` when it
    /// is not committed within `timeout` (then it may still commit later).
    public func propose(_ data: [UInt8], timeout: Duration = .seconds(3_600)) async throws -> RaftCore.LogIndex {
        try await append(data, timeout: timeout).index
    }

    /// A committed proposal: its index and the term of its entry.
    public struct Committed: Sendable, Equatable {
        public var index: RaftCore.LogIndex
        public var term: RaftCore.Term
    }

    /// `propose`, returning the entry's term as well.
    public func append(_ data: [UInt8], timeout: Duration = .seconds(3_600)) async throws -> Committed {
        let deadline = ContinuousClock.now + timeout
        return try await withCheckedThrowingContinuation { c in
            if !mailbox.offer(.propose(data, nil, deadline: deadline, .continuation(c))) { c.resume(throwing: ReplicaError.busy) }
        }
    }

    /// Hands a proposal to the node without waiting: `continuation` is resumed when it commits or
    /// fails. Returns false, and leaves `continuation` to the caller, when the mailbox is full. With
    /// a `guard`, the node appends it only as the entry at `guard.index` in `guard.term` while
    /// leading, and refuses it with `.unexpectedPosition` otherwise. Proposals offered one after
    /// another keep their order.
    public func offer(_ data: [UInt8], guard proposalGuard: ProposalGuard?, timeout: Duration,
                      continuation: CheckedContinuation<Committed, any Error>) -> Bool {
        mailbox.offer(.propose(data, proposalGuard, deadline: .now + timeout, .continuation(continuation)))
    }

    /// `offer`, with `onCommit` told the outcome instead of a suspended caller: no task waits. It
    /// runs on the node's driver, after the entry's commit and its `apply` (or at its failure), so it
    /// must be short and must not block. Returns false, and never calls `onCommit`, when the mailbox
    /// is full.
    public func offer(_ data: [UInt8], guard proposalGuard: ProposalGuard?, timeout: Duration,
                      onCommit: @escaping @Sendable (Result<Committed, any Error>) -> Void) -> Bool {
        mailbox.offer(.propose(data, proposalGuard, deadline: .now + timeout, .callback(onCommit)))
    }

    /// `offer`, with `receipt.finish` told the outcome (as `onCommit` above, without a closure).
    public func offer(_ data: [UInt8], guard proposalGuard: ProposalGuard?, timeout: Duration, receipt: ProposalReceipt) -> Bool {
        mailbox.offer(.propose(data, proposalGuard, deadline: .now + timeout, .receipt(receipt)))
    }

    /// What `committedEntries` found.
    public enum CommittedRead: Sendable {
        case entries([LogEntry])
        /// The index is older than the log's first entry (deleted by retention).
        case beforeFirst(firstIndex: UInt64)
        /// The index is not committed (yet) on this node.
        case notCommitted(commitIndex: Int64)
    }

    /// Committed entries from `storeIndex` on (store numbering), at most `maxCount` and about
    /// `maxBytes` (at least one entry). Reads the store directly: committed entries never change.
    public func committedEntries(from storeIndex: UInt64, maxCount: Int, maxBytes: Int) throws -> CommittedRead {
        guard let status else { return .notCommitted(commitIndex: -1) }
        let commit = status.storeNumber(status.raft.commit)
        let first = store.firstIndex.rawValue
        if storeIndex < first { return .beforeFirst(firstIndex: first) }
        if Int64(storeIndex) > commit { return .notCommitted(commitIndex: commit) }
        var out: [LogEntry] = []
        var next = storeIndex
        while out.count < maxCount && Int64(next) <= commit {
            let batch: [LogEntry]
            do {
                batch = try store.read(from: LogFormat.LogIndex(next), maxBytes: max(1, maxBytes))
            } catch {
                // Retention or a reset removed it while we read: it is before the first entry now.
                guard case .outOfRange(_, let first, _) = error, next < first else { throw error }
                if out.isEmpty { return .beforeFirst(firstIndex: first) }
                break
            }
            if batch.isEmpty { break }
            for e in batch where out.count < maxCount && Int64(e.index.rawValue) <= commit { out.append(e) }
            next = batch.last!.index.rawValue + 1
            if out.reduce(0, { $0 + $1.body.count }) >= maxBytes { break }
        }
        return .entries(out)
    }

    /// Asks this node, if it leads, to hand leadership to `target`. Returns once the transfer has
    /// started (the leader stops taking proposals and brings the target up to date; the target then
    /// campaigns); throws `.refused(.notLeader)` and the like when it cannot start. Watch `status`
    /// to see it finish.
    public func transferLeadership(to target: NodeID) async throws {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
            if !mailbox.offer(.transfer(target, c)) { c.resume(throwing: ReplicaError.busy) }
        }
    }

    /// A linearizable read point (Raft's ReadIndex): the commit index at a moment, after the call,
    /// when a majority confirmed this node's leadership in its term by a heartbeat round. State
    /// applied up to it is at least as new as anything any leader acknowledged before the call.
    /// Throws `.refused(.notLeader)` on a non-leader, `.timedOut` when no majority answered in time.
    public func readIndex(timeout: Duration) async throws -> RaftCore.LogIndex {
        let deadline = ContinuousClock.now + timeout
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<RaftCore.LogIndex, any Error>) in
            if !mailbox.offer(.read(deadline: deadline, c)) { c.resume(throwing: ReplicaError.busy) }
        }
    }

    /// Serves the peer port, ticks, sends and drives the node until cancelled.
    ///
    /// All of it runs on one event loop thread (the replica's own, or `loop`): the peer port's connections,
    /// the connections to the peers, the per-peer senders and the driver (a `LoopExecutor` as the
    /// tasks' executor preference). A follower's cycle (read an append, write it, fdatasync it,
    /// answer) then takes no thread hand-off at all; on the task pool it took four.
    ///
    /// `loop`: an event loop the caller also serves its clients on (the broker's first), so that a
    /// send read there reaches the driver's mailbox on the same thread; nil: a loop of its own.
    public func run(on loop: (any EventLoop)? = nil) async throws {
        let owned = loop == nil ? MultiThreadedEventLoopGroup(numberOfThreads: 1) : nil
        let theLoop = loop ?? owned!.next()
        let executor = LoopExecutor(theLoop)
        let result: Result<Void, any Error>
        do {
            try await withTaskExecutorPreference(executor) {
                // The loop as its own group: every connection of the replica lands on it.
                try await self.serve(on: theLoop, sharedWithClients: loop != nil)
            }
            result = .success(())
        } catch {
            result = .failure(error)
        }
        // Everything that ran on the loop has ended (the task group waited for it).
        executor.retire()
        try? await owned?.shutdownGracefully()
        try result.get()
    }

    private func serve(on group: any EventLoopGroup, sharedWithClients: Bool = false) async throws {
        // A peer that restarts must hear from the others at once: retry connects every 50-250 ms.
        var clientOptions = RemotingClient.Options()
        clientOptions.reconnectBackoffMaxMilliseconds = 250
        let client = RemotingClient(group: group, options: clientOptions, logger: logger)
        let mailbox = self.mailbox
        let transport = PeerTransport(selfID: options.raft.id, addresses: options.peerAddresses, client: client,
                                      outboxLimit: options.peerOutboxLimit, logger: logger) { peer in
            mailbox.offer(.connectionLost(peer))
        }
        let selfAddress = options.peerAddresses[options.raft.id]!
        guard let (host, port) = RemotingClient.split(selfAddress) else {
            throw ReplicaError.storage("the peer address \(selfAddress) is not host:port")
        }
        let logger = self.logger
        @Sendable func deliver(_ request: RemotingCommand) {
            guard let body = request.body else { return }
            do {
                mailbox.offer(.message(try RaftWire.decode(body)))
            } catch {
                logger.warning("dropping a malformed Raft message", metadata: ["error": "\(error)"])
            }
        }
        // Peer messages go to the mailbox straight from the connection's event loop: decoding one
        // is a few hundred nanoseconds per entry, less than a task hop.
        let inbound = RemotingProcessor(name: "raft", codes: [RequestCode.raftMessage], maxQueuedRequests: options.mailboxLimit,
                                        inline: { request, _ in deliver(request); return true }) { request, _ in
            deliver(request)
            return nil
        }
        let server = RemotingServer(options: RemotingServerOptions(host: host, port: port), processors: [inbound], group: group, logger: logger)
        let alarm = WakeTimer(loop: group.next()) { [self] in
            alarmsFired.add(1, ordering: .relaxed)
            mailbox.offer(.tick)
        }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await server.run() }
            tasks.addTask {
                await transport.run()
                // A group of one has no peers to send to: its transport is done at once, the replica is not.
                while !Task.isCancelled { try? await Task.sleep(for: .seconds(3_600)) }
            }
            tasks.addTask { try await self.drive(transport, alarm: alarm, inlineDeferredSyncs: !sharedWithClients) }
            defer {
                alarm.stop()
                mailbox.close()
                transport.close()
            }
            // The first to end (the driver on a storage error, or cancellation) ends them all.
            do {
                try await tasks.next()
            } catch {
                tasks.cancelAll()
                throw error
            }
            tasks.cancelAll()
        }
        await client.close()
    }

    private func runRetention(_ policy: RetentionPolicy, log: StoreLog, applied: RaftCore.LogIndex) throws {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        do {
            let result = try store.applyRetention(policy, nowSeconds: Int64(now), hourOfDay: Int(parts.tm_hour),
                                                  keepFrom: min(log.storeIndex(applied.next), options.retentionFloor?() ?? log.storeIndex(applied.next)))
            guard result.segmentsDeleted > 0 else { return }
            log.prefixDeleted()
            logger.info("retention deleted old commitlog segments", metadata: [
                "segments": "\(result.segmentsDeleted)", "reason": "\(result.reason.map(\.rawValue) ?? "-")", "firstIndex": "\(result.firstIndex)"])
        } catch {
            logger.error("storage failure during retention: the Raft node stops", metadata: ["error": "\(error)"])
            throw ReplicaError.storage("\(error)")
        }
    }

    private func loadHardState(_ log: StoreLog) throws -> RaftCore.HardState {
        var state = try loadSavedHardState(log)
        // A log written by a classic master (a group migrated to Raft) carries its epochs as terms,
        // above any term this node saved. Raft's currentTerm is never below the last entry's term:
        // start there, with no vote (none was cast in a term this node never reached).
        let logTerm = RaftCore.Term(store.lastTerm.rawValue)
        if state.term < logTerm {
            logger.info("the log's last term is above the saved term (a log written by a classic master); the Raft term starts there", metadata: [
                "savedTerm": "\(state.term)", "logTerm": "\(logTerm)"])
            state = RaftCore.HardState(term: logTerm, vote: nil, commit: state.commit)
        }
        return state
    }

    private func loadSavedHardState(_ log: StoreLog) throws -> RaftCore.HardState {
        guard let saved = try hardStateFile.load() else { return RaftCore.HardState() }
        var vote: NodeID?
        if let v = saved.votedFor {
            guard v.hasPrefix("n"), let raw = UInt64(v.dropFirst()) else { throw ReplicaError.storage("hard state vote \"\(v)\" is not a node id") }
            vote = NodeID(raw)
        }
        var commit = RaftCore.LogIndex.zero
        if let c = saved.commitIndex { commit = RaftCore.LogIndex(log.raftIndex(c)) }
        if commit > log.lastIndex {
            // Only possible when entries were acknowledged from the page cache (ASYNC_FLUSH) and lost
            // in a crash. The commit index is a hint; the node learns it again from the leader.
            logger.warning("persisted commit index is past the log; starting from the log's end", metadata: ["commit": "\(commit)", "lastIndex": "\(log.lastIndex)"])
            commit = log.lastIndex
        }
        return RaftCore.HardState(term: RaftCore.Term(saved.term.rawValue), vote: vote, commit: commit)
    }

    /// `inlineDeferredSyncs`: sync the leader's deferred writes on the driver's thread when its
    /// mailbox is empty (a loop of its own); off when the loop also serves clients (`nextReady`).
    /// `alarm`: offers `.tick` to the mailbox when the driver asked to be woken.
    private func drive(_ transport: PeerTransport, alarm: WakeTimer, inlineDeferredSyncs: Bool) async throws {
        var waiters: [RaftCore.LogIndex: (term: RaftCore.Term, continuation: ProposalReply)] = [:]
        // Every waiter's deadline, soonest first (callers may pass different timeouts).
        var deadlines = DeadlineHeap()
        // ReadIndex requests by the sequence number that is their context.
        var reads: [UInt64: (deadline: ContinuousClock.Instant, continuation: CheckedContinuation<RaftCore.LogIndex, any Error>)] = [:]
        var nextRead: UInt64 = 0
        // Registered before anything can throw: every caller is answered, whatever stops the node.
        defer {
            for (_, w) in waiters { w.continuation.resume(throwing: ReplicaError.stopped) }
            for (_, r) in reads { r.continuation.resume(throwing: ReplicaError.stopped) }
            for input in mailbox.closeAndDrain() {
                switch input {
                case .propose(_, _, _, let c): c.resume(throwing: ReplicaError.stopped)
                case .transfer(_, let c): c.resume(throwing: ReplicaError.stopped)
                case .read(_, let c): c.resume(throwing: ReplicaError.stopped)
                case .message, .tick, .connectionLost, .synced: break
                }
            }
        }
        // The node and its log belong to this task alone (STYLE 6).
        let log = try StoreLog(store: store, storeIndexOfEmptyLog: options.storeIndexOfEmptyLog, patch: options.bodyPatch)
        let node = RaftNode(config: options.raft, log: log, hardState: try loadHardState(log), appliedIndex: options.appliedIndex)
        logger.info("raft replica started", metadata: ["node": "\(options.raft.id)", "term": "\(node.term)", "lastIndex": "\(node.lastIndex)", "peer": "\(options.peerAddresses[options.raft.id]!)"])
        var saved = (term: node.term, vote: node.vote)
        // Leader writes not known durable yet (`deferLeaderSync`), oldest first: where each ends in
        // the store, and its last entry. A sync (inline, the flusher's, or a periodic one) may cover
        // a prefix of them.
        var deferred = CircularBuffer<(end: LogPosition, index: RaftCore.LogIndex, term: RaftCore.Term)>()
        let deferSyncs = options.syncBeforeAcknowledging && options.deferLeaderSync
        let store = self.store
        let mailbox = self.mailbox
        // The end of the deferred writes the flusher thread is syncing now (one request at a time).
        var requestedSync: LogPosition?
        // Tells the node which deferred writes are durable now (between Readies only).
        func noteDeferredSyncs() throws {
            guard !deferred.isEmpty || requestedSync != nil else { return }
            if let failure = store.failureDescription {
                // STYLE 11: the flusher's sync failed; nothing more may count as durable.
                logger.error("storage failure: the Raft node stops", metadata: ["error": "\(failure)"])
                throw ReplicaError.storage(failure)
            }
            let durable = store.durablePosition
            if let r = requestedSync, r <= durable { requestedSync = nil }
            var last: (index: RaftCore.LogIndex, term: RaftCore.Term)?
            while let d = deferred.first, d.end <= durable {
                last = (d.index, d.term)
                deferred.removeFirst()
            }
            if let last { node.entriesSynced(through: last.index, term: last.term) }
        }
        // Whether to handle another Ready now. Once none is left, the leader's deferred writes are
        // made durable: inline when the mailbox is empty and the loop is the replica's own (it would
        // only sleep: no thread to wake, and nothing waits behind the sync), else on the flusher
        // thread while the driver goes on stepping what came in, one request at a time (so under
        // load one fdatasync covers every Ready written while the last one ran). On a loop shared
        // with the clients, sends and acknowledgements are read only between the driver's jobs,
        // so the mailbox is nearly always empty here and an inline sync would hold all of them:
        // measured, the flusher gained 8-17 % msgs/s at level CPU (BENCHMARKS.md, 2026-12-07).
        func nextReady(since start: ContinuousClock.Instant) throws -> Bool {
            let inTime = ContinuousClock.now - start < .milliseconds(50)
            if node.hasReady && inTime { return true }
            guard requestedSync == nil, let target = deferred.last?.end else { return false }
            // Nothing else to do: sync here. Otherwise (inputs waiting, or out of time with Readies
            // left) the flusher syncs while the driver goes back to its mailbox.
            if inlineDeferredSyncs && mailbox.isEmpty && !node.hasReady {
                do {
                    try store.syncThrough(target)
                } catch {
                    logger.error("storage failure: the Raft node stops", metadata: ["error": "\(error)"])
                    throw ReplicaError.storage("\(error)")
                }
                try noteDeferredSyncs()
                return node.hasReady && inTime
            }
            requestedSync = target
            // The wake-up is only a hint: a full mailbox means the driver is busy and reads the
            // store's durable point after its next batch anyway.
            store.requestSync(through: target) { _ in mailbox.offer(.synced) }
            return false
        }
        var lastHeard: [NodeID: ContinuousClock.Instant] = [:]
        var lastRetention = ContinuousClock.now
        // Proposals of one batch of inputs go to the node together: one append message per
        // follower for all of them instead of one each.
        var proposals: [(data: [UInt8], guard: ProposalGuard?, deadline: ContinuousClock.Instant, continuation: ProposalReply)] = []
        // Whether the proposal would land where its guard expects, `offset` entries after the log's end.
        func guardHolds(_ g: ProposalGuard?, offset: UInt64) -> Bool {
            guard let g else { return true }
            return node.role == .leader && node.term == g.term && g.index.rawValue == node.lastIndex.rawValue + 1 + offset
        }
        func wait(_ index: RaftCore.LogIndex, _ term: RaftCore.Term, _ deadline: ContinuousClock.Instant, _ c: ProposalReply) {
            // An older waiter at this index lost its entry to a new leader's.
            waiters[index]?.continuation.resume(throwing: ReplicaError.overwritten(index: index))
            waiters[index] = (term, c)
            deadlines.push(deadline, index, term)
        }
        func proposeBatch() {
            guard !proposals.isEmpty else { return }
            defer { proposals.removeAll(keepingCapacity: true) }
            if proposals.enumerated().allSatisfy({ guardHolds($1.guard, offset: UInt64($0)) }),
               let range = try? node.propose(batch: proposals.map(\.data)) {
                for (k, p) in proposals.enumerated() {
                    wait(RaftCore.LogIndex(range.lowerBound.rawValue + UInt64(k)), node.term, p.deadline, p.continuation)
                }
                return
            }
            // Something in the batch was refused: one by one, so each caller gets its own answer.
            for p in proposals {
                guard guardHolds(p.guard, offset: 0) else {
                    p.continuation.resume(throwing: ReplicaError.unexpectedPosition(expected: p.guard!, term: node.term, nextIndex: node.lastIndex.next))
                    continue
                }
                do {
                    let (index, term) = try node.propose(p.data)
                    wait(index, term, p.deadline, p.continuation)
                } catch {
                    p.continuation.resume(throwing: ReplicaError.refused(error))
                }
            }
        }
        // Logical time (docs/replication.md, "Ticks"): ticks are counted from the clock, not
        // delivered one by one. Before each batch of inputs the node gets the ticks that have
        // passed since `tickedThrough` and only count, or send the commit updates a leader owes
        // (an input may reset its timers, so ticks owed from before it must not count after it);
        // the first one that acts
        // (`ticksUntilTimeout`) comes after the batch's inputs, so that what arrived during a stall
        // is heard before a timeout fires, and ticks owed beyond it are dropped (one timeout per
        // batch, never a run of them). After the batch the alarm is set for the next acting tick or
        // the first waiter's deadline, whichever comes first, or for the next tick when the leader
        // owes a follower the commit index (`commitUpdateDue`: any tick sends it, counting or not).
        // An idle group wakes for heartbeats and their answers, not 100 times a second.
        let tickInterval = Duration.milliseconds(options.tickIntervalMs)
        var tickedThrough = ContinuousClock.now
        // The tick boundary at or after `instant`, at least one tick ahead.
        func tickBoundary(atOrAfter instant: ContinuousClock.Instant) -> ContinuousClock.Instant {
            let ticks = ((instant - tickedThrough) / tickInterval).rounded(.up)
            return tickedThrough + tickInterval * max(1, Int(min(ticks, 1e9)))
        }
        func setAlarm() {
            // Out of time with Readies left (`nextReady`): back at once, after the loop's I/O.
            if node.hasReady { return alarm.wake(at: .now) }
            var at = tickedThrough + tickInterval * node.ticksUntilTimeout
            // A commit no message carried to a follower yet goes out with the next tick, counting or not.
            if node.commitUpdateDue { at = min(at, tickedThrough + tickInterval) }
            // Answered proposals' deadlines would wake the driver for nothing.
            deadlines.dropLeading { waiters[$0.index]?.term != $0.term }
            if let d = deadlines.earliest { at = min(at, tickBoundary(atOrAfter: d)) }
            for r in reads.values { at = min(at, tickBoundary(atOrAfter: r.deadline)) }
            if options.retention != nil {
                at = min(at, tickBoundary(atOrAfter: lastRetention + .milliseconds(options.retentionIntervalMs)))
            }
            alarm.wake(at: at)
        }
        setAlarm()
        while !Task.isCancelled {
            let inputs = await mailbox.take(max: options.maxInputsPerReady)
            if inputs.isEmpty { return }
            var retentionDue = false
            let now = ContinuousClock.now
            let owed = Int(((now - tickedThrough) / tickInterval).rounded(.down))
            var actingTickOwed = false
            if owed > 0 {
                tickedThrough += tickInterval * owed
                let counting = min(owed, node.ticksUntilTimeout - 1)
                for _ in 0..<counting { node.tick() }
                actingTickOwed = owed > counting
                if options.retention != nil, now - lastRetention >= .milliseconds(options.retentionIntervalMs) {
                    lastRetention = now
                    retentionDue = true
                }
                for (seq, r) in reads where r.deadline <= now {
                    reads[seq] = nil
                    r.continuation.resume(throwing: ReplicaError.timedOut(index: .zero))
                }
                while let (index, term) = deadlines.popExpired(now) {
                    if waiters[index]?.term == term {
                        waiters.removeValue(forKey: index)!.continuation.resume(throwing: ReplicaError.timedOut(index: index))
                    }
                }
                // Deadlines of answered waiters are dropped lazily; rebuild before they pile up.
                if deadlines.count > 2 * waiters.count + 1_024 { deadlines.keep { waiters[$0.index]?.term == $0.term } }
            }
            for input in inputs {
                if case .propose(let data, let g, let deadline, let c) = input {
                    proposals.append((data, g, deadline, c))
                    continue
                }
                proposeBatch()
                switch input {
                case .message(let m):
                    lastHeard[m.from] = .now
                    node.step(m)
                case .tick:
                    break  // the alarm: the ticks it woke the driver for were counted above
                case .propose:
                    break  // gathered above
                case .transfer(let target, let c):
                    do {
                        try node.transferLeadership(to: target)
                        c.resume()
                    } catch {
                        c.resume(throwing: ReplicaError.refused(error))
                    }
                case .read(let deadline, let c):
                    nextRead &+= 1
                    do {
                        try node.readIndex(context: withUnsafeBytes(of: nextRead.bigEndian) { Array($0) })
                        reads[nextRead] = (deadline, c)
                    } catch {
                        c.resume(throwing: ReplicaError.refused(error))
                    }
                case .synced:
                    break  // read below, after the batch
                case .connectionLost(let peer):
                    if node.status.leader == peer && node.status.role == .follower {
                        logger.info("the leader's connection closed: campaigning early", metadata: ["leader": "\(peer)", "term": "\(node.term)"])
                    }
                    node.leaderConnectionLost(peer)
                }
            }
            proposeBatch()
            if actingTickOwed { node.tick() }
            try noteDeferredSyncs()
            // After the batch, so that a storage failure here leaves no input unanswered.
            if retentionDue, let policy = options.retention { try runRetention(policy, log: log, applied: node.status.applied) }
            // Readies until none is left, but back to the mailbox after a while: a long catch-up
            // (many committed entries to apply) must not starve ticks and peer messages.
            let readyStarted = ContinuousClock.now
            while try nextReady(since: readyStarted) {
                let r = node.ready()
                let deferSync = deferSyncs && r.mustSync && r.syncMayBeDeferred
                // A log the node could not read makes its output meaningless: stop before any of it
                // leaves (STYLE 11), as on a storage error in writing.
                if let failure = log.failure {
                    logger.error("the commitlog cannot be read: the Raft node stops", metadata: ["error": "\(failure)"])
                    throw ReplicaError.storage("\(failure)")
                }
                transport.send(r.messages)
                do {
                    if let reset = r.resetLog {
                        let before = (first: log.firstIndex, last: log.lastIndex)
                        let base = try log.reset(reset)
                        logger.warning("this node's log ended before the leader's first entry (the leader's retention deleted what it lacked): emptied, it now continues the leader's log from its base",
                                       metadata: ["firstIndexWas": "\(storeNumber(before.first))", "lastIndexWas": "\(storeNumber(before.last))",
                                                  "firstIndex": "\(base.nextIndex)", "position": "\(base.position)", "leader": "\(node.status.leader.map { "\($0)" } ?? "none")"])
                        // Proposals at or before the base will never come out committed here: their
                        // outcome is unknown (the leader may well have committed them).
                        for (index, w) in waiters where index <= reset.baseIndex {
                            waiters[index] = nil
                            w.continuation.resume(throwing: ReplicaError.timedOut(index: index))
                        }
                        await logReset(reset.baseIndex)
                    }
                    let end = try log.write(truncateAfter: r.truncateAfter, entries: r.entries)
                    if deferSync {
                        // Made durable once the Readies run out (`nextReady`).
                        let last = r.entries.last!
                        deferred.append((end, last.index, last.term))
                    } else if r.mustSync {
                        if options.syncBeforeAcknowledging {
                            // On the driver's own thread (its event loop): the appends above are
                            // already in the peers' sockets (PeerTransport writes them at once here).
                            // Everything written so far: deferred leader writes included, since this
                            // Ready's acknowledgements may speak for them. At once when it all is.
                            try store.syncThrough(store.writePosition)
                            // Covered; a request still out may never be answered past a truncation
                            // (its end may be beyond the new log's), so it is forgotten too.
                            deferred.removeAll()
                            requestedSync = nil
                        }
                        if let hs = r.hardState, hs.term != saved.term || hs.vote != saved.vote || r.resetLog != nil {
                            try hardStateFile.save(StoredHardState(
                                term: LogFormat.Term(hs.term.rawValue), votedFor: hs.vote.map { "n\($0.rawValue)" },
                                commitIndex: hs.commit > .zero ? log.storeIndex(hs.commit) : nil))
                            saved = (hs.term, hs.vote)
                        }
                    }
                } catch {
                    // STYLE 11: a storage error stops the node; it is not retried here.
                    logger.error("storage failure: the Raft node stops", metadata: ["error": "\(error)"])
                    throw ReplicaError.storage("\(error)")
                }
                transport.send(r.messagesAfterPersist)
                for rs in r.readStates where rs.context.count == 8 {
                    let seq = rs.context.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                    reads.removeValue(forKey: seq)?.continuation.resume(returning: rs.index)
                }
                if let ss = r.softState {
                    // One line per role change, with the term and why (elections included: precandidate
                    // and candidate are roles).
                    logger.notice("raft role changed", metadata: [
                        "node": "n\(options.raft.id.rawValue)", "role": "\(ss.role)", "leader": "\(ss.leader.map { "n\($0.rawValue)" } ?? "none")",
                        "term": "\(node.term)", "reason": "\(node.roleReason.rawValue)",
                    ])
                }
                if !r.committedEntries.isEmpty {
                    do {
                        try await apply(CommittedEntries(entries: r.committedEntries, positions: log.positions(of: r.committedEntries)))
                    } catch {
                        // What is committed but not applied cannot be skipped, and the subscriber
                        // cannot take it: stop, as on a storage error (STYLE 11).
                        logger.error("applying committed entries failed: the Raft node stops", metadata: ["error": "\(error)"])
                        throw ReplicaError.storage("apply: \(error)")
                    }
                    for e in r.committedEntries {
                        guard let w = waiters.removeValue(forKey: e.index) else { continue }
                        if w.term == e.term { w.continuation.resume(returning: Committed(index: e.index, term: e.term)) }
                        else { w.continuation.resume(throwing: ReplicaError.overwritten(index: e.index)) }
                    }
                }
                node.advance(r, syncDeferred: deferSync)
                let status = ReplicaStatus(raft: node.status, lastHeard: lastHeard, storeIndexOfEmptyLog: options.storeIndexOfEmptyLog,
                                           firstIndex: log.firstIndex)
                published.withLock { $0 = status }
                // After publishing: whoever it wakes reads the new role from `status`.
                if r.softState != nil { options.onRoleChange?() }
            }
            setAlarm()
        }
    }
}
