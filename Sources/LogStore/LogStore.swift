import Glibc
import LogFormat

/// One entry for `LogStore.append`: the store assigns its index and position.
public struct EntryToAppend: Sendable {
    public var kind: EntryKind
    public var term: Term
    public var body: [UInt8]

    public init(kind: EntryKind = .normal, term: Term, body: [UInt8]) {
        self.kind = kind
        self.term = term
        self.body = body
    }
}

/// Counters since the store was opened.
/// The point before a log's first entry: the index and position where the first entry is (or goes),
/// and the term and chain CRC of the entry before it. Raft's "last included" index and term.
public struct LogBase: Sendable, Equatable, CustomStringConvertible {
    public var nextIndex: LogIndex
    public var position: LogPosition
    public var lastTerm: Term
    public var lastChainCRC: UInt32

    public init(nextIndex: LogIndex, position: LogPosition, lastTerm: Term, lastChainCRC: UInt32) {
        self.nextIndex = nextIndex
        self.position = position
        self.lastTerm = lastTerm
        self.lastChainCRC = lastChainCRC
    }

    init(_ p: DurablePoint) {
        self.init(nextIndex: p.nextIndex, position: LogPosition(p.endPosition), lastTerm: p.lastTerm, lastChainCRC: p.lastChainCRC)
    }

    var point: DurablePoint { DurablePoint(endPosition: position.rawValue, nextIndex: nextIndex, lastTerm: lastTerm, lastChainCRC: lastChainCRC) }

    public var description: String { "index \(nextIndex) at position \(position) (previous term \(lastTerm), chain CRC \(lastChainCRC))" }
}

public struct LogStoreStatistics: Sendable, Equatable {
    public var appendCalls = 0
    public var entriesAppended = 0
    /// fdatasync calls made for group commit and interval flushes (not counting segment seals).
    public var dataSyncs = 0
    /// Bytes those syncs made durable (bytes per sync = syncedBytes / dataSyncs).
    public var syncedBytes: UInt64 = 0
    public var checkpoints = 0
    /// Index records found wrong by a read, located by scanning and rewritten.
    public var indexRecordsRepaired = 0
    /// Time spent in group-commit fdatasyncs, in waiting for a group to fill, and in resuming the
    /// appenders a sync answered (nanoseconds, summed).
    public var syncNanoseconds: UInt64 = 0
    public var groupWaitNanoseconds: UInt64 = 0
    public var resumeNanoseconds: UInt64 = 0
    /// Prepared space (`LogStoreOptions.prepareAheadBytes`): bytes of zeros written and synced ahead
    /// of the log, the fdatasyncs that took, and chunks that could not be written (no space).
    public var preparedBytes: UInt64 = 0
    public var prepareSyncs = 0
    public var prepareFailures = 0
}

/// Where an `append` put its entries.
public struct AppendResult: Sendable, Equatable {
    public var firstIndex: LogIndex
    public var lastIndex: LogIndex
    /// Header position of each entry, in order (the RocketMQ message inside is at `position + 48`).
    public var positions: [LogPosition]
    /// Position just past the last entry: the durability target of this append.
    public var endPosition: LogPosition
}

/// Called for each entry, under the append lock, once its index and position are fixed and before
/// its checksums are computed: RocketMQ's append hook, which writes the physical offset
/// (`position + 48`) into the message record. It patches the body where it lies in the store's
/// write buffer (no copy of the caller's body), and cannot change its length.
public typealias BodyPatch = (_ index: LogIndex, _ position: LogPosition, _ body: UnsafeMutableRawBufferPointer) -> Void

/// The commitlog: entries in segment files named by their 20-digit start position, a 32-byte-per-entry
/// index, a checkpoint recovery starts from, and group-committed durability.
///
/// Thread-safe. Appends, truncation and prefix deletion are serialized by one lock; reads take it
/// only to snapshot positions. `fdatasync` runs on a dedicated flusher thread, never under the lock
/// and never on Swift's cooperative pool. The store never asks who leads: it writes what it is told.
///
/// Invariants (checked by recovery):
/// - every segment but the last is sealed (ends in a blank record) and was fdatasync'ed before the
///   next one received a byte, so a torn write can only be in the last segment;
/// - entries are contiguous in index and position, terms never decrease, and each entry's chain
///   CRC covers its predecessor's;
/// - the index record of entry i sits at byte i * 32 of the index files and matches the entry.
public final class LogStore: @unchecked Sendable {
    public let options: LogStoreOptions
    let dataDirectory: String
    let indexDirectory: String
    let checkpointPath: String
    /// What recovery found and did when this store was opened.
    public let recoveryReport: RecoveryReport

    let lock = ConditionLock()
    /// Everything mutable. Guarded by `lock`.
    var state: State
    /// Serializes checkpoint writes between the flusher and `truncateSuffix`.
    let checkpointLock = ConditionLock()
    /// Held around the fdatasyncs that can run beside each other on the active segment's descriptor
    /// (the flusher's, `syncNow`'s, close's) up to the moment their outcome is recorded under
    /// `lock`. The kernel reports a writeback error to one fdatasync of a descriptor only: another
    /// that returns 0 after it must find the failure recorded before it marks anything durable
    /// (`markDurable` checks). Seals and truncations sync under `lock` and record their failure
    /// there; the preparer syncs through a descriptor of its own. Order: `syncLock`, then `lock`.
    let syncLock = ConditionLock()
    /// Guards `preparingChunk`; where the preparer sleeps and writers wait for its chunk.
    let prepareLock = ConditionLock()
    /// The chunk of zeros the preparer is writing now (guarded by `prepareLock`).
    var preparingChunk: (segment: ObjectIdentifier, range: Range<UInt64>)?
    /// Bumped by every wake of the preparer (guarded by `prepareLock`).
    var prepareWakeSequence: UInt64 = 0
    let lockFileDescriptor: Int32

    struct Waiter {
        var target: UInt64
        var continuation: Resumption
    }

    /// Who waits for durability: a `waitUntilDurable` caller, or an `append` that returns its result.
    /// Each waiter is removed from `state.waiters` under the lock before it is resumed, so it is resumed
    /// exactly once. Checked continuations cost a little more than unsafe ones but give the runtime's
    /// check, and ThreadSanitizer sees their hand-off (with unsafe ones it reported a race between the
    /// flusher's resume and the task, inside the uninstrumented concurrency runtime).
    enum Resumption {
        case wait(CheckedContinuation<Void, any Error>)
        case append(CheckedContinuation<AppendResult, any Error>, AppendResult)
        /// `requestSync`: told on the flusher thread.
        case callback(@Sendable (StorageError?) -> Void)

        func resume() {
            switch self {
            case let .wait(c): c.resume()
            case let .append(c, r): c.resume(returning: r)
            case let .callback(f): f(nil)
            }
        }

        func resume(throwing error: any Error) {
            switch self {
            case let .wait(c): c.resume(throwing: error)
            case let .append(c, _): c.resume(throwing: error)
            case let .callback(f): f(error as? StorageError ?? .failed("\(error)"))
            }
        }
    }

    struct State {
        var segments: [SegmentFile]
        var index: IndexFiles
        var firstIndex: LogIndex
        /// The point just before `firstIndex` (term and chain CRC of the entry before it), when known.
        var base: DurablePoint?
        var nextIndex: LogIndex
        var written: DurablePoint
        var durable: DurablePoint
        /// Data segments with bytes not yet fdatasync'ed (at most the active one: sealing syncs).
        var unsyncedSegment: SegmentFile?
        var unsyncedIndexFiles: [SegmentFile] = []
        var waiters: [Waiter] = []
        var syncRequested = false
        /// A `requestSync` caller waits: the next sync starts at once, without the group-commit
        /// delay (that caller writes batches of its own and has nothing more to add).
        var urgentSyncRequested = false
        /// Bumped by truncateSuffix; a flush that started before it does not move `durable`.
        var epoch: UInt64 = 0
        var failure: String?
        var closing = false
        var flusherRunning = false
        var checkpointerRunning = false
        /// The verification of the entries before the checkpoint (Verification.swift).
        var verifierRunning = false
        var verificationFinding: String?
        /// The lowest position a truncation or reset cut since the open (the verification stops there).
        var verifyLimit = UInt64.max
        var lastCheckpoint: DurablePoint?
        var diskUsedRatio: Double = 0
        var diskSampledAtMs: UInt64 = 0
        var lastFlushAtMs: UInt64 = 0
        var lastCheckpointAtMs: UInt64 = 0
        var statistics = LogStoreStatistics()
        /// The flusher sleeps until this many waiters are queued (Int.max while it is busy: it looks
        /// again when it is done). Appenders signal only when they reach it: a futex wake per append
        /// costs more than the append.
        var flusherWakeAtWaiters = Int.max
        /// SYNC_FLUSH write-behind: encoded entries not yet handed to the kernel (see commitBatch).
        var pending: [UInt8] = []
        var pendingStart: UInt64 = 0
        var pendingSegment: SegmentFile?
        var pendingIndex: [UInt8] = []
        var pendingIndexFirst = LogIndex(0)
        /// Prepared space (LogStore+Prepare.swift): the active segment holds zeros or entries up to
        /// here (or its file ends earlier: only the preparer grows it past the log's end).
        var preparedEnd: UInt64 = 0
        var preparerRunning = false
        /// The idle preparer is woken when the log's end reaches this (one chunk used up), or when
        /// a new segment starts; UInt64.max while it works or when there is no preparer.
        var preparerWakeAt = UInt64.max
    }

    /// Opens (creating if needed) the store in `options.directory`, recovering from a crash: see
    /// `RecoveryReport`. Throws `.corrupt` naming file and position when the log is damaged anywhere
    /// but its tail, `.locked` when another process has it open.
    public static func open(_ options: LogStoreOptions) throws(StorageError) -> LogStore {
        try options.validate()
        try FileIO.makeDirectories(options.directory)
        let lockPath = options.directory + "/lock"
        let lockFd = try FileIO.open(lockPath, flags: O_RDWR | O_CREAT)
        guard flock(lockFd, LOCK_EX | LOCK_NB) == 0 else {
            let e = errno
            _ = Glibc.close(lockFd)
            if e == EWOULDBLOCK { throw .locked(path: options.directory) }
            throw .io(operation: "flock", path: lockPath, errno: e)
        }
        do {
            let recovered = try Recovery(options: options).run()
            return LogStore(options: options, recovered: recovered, lockFileDescriptor: lockFd)
        } catch {
            _ = Glibc.close(lockFd)
            throw error
        }
    }

    init(options: LogStoreOptions, recovered: Recovery.Result, lockFileDescriptor: Int32) {
        StoreFaults.startIfConfigured()
        self.options = options
        self.dataDirectory = options.directory + "/data"
        self.indexDirectory = options.directory + "/index"
        self.checkpointPath = options.directory + "/checkpoint"
        self.recoveryReport = recovered.report
        self.lockFileDescriptor = lockFileDescriptor
        self.state = State(
            segments: recovered.segments, index: recovered.index, firstIndex: recovered.firstIndex, base: recovered.base,
            nextIndex: recovered.end.nextIndex, written: recovered.end, durable: recovered.end,
            lastCheckpoint: recovered.checkpoint)
        state.flusherRunning = true
        state.checkpointerRunning = true
        startThread { [self] in self.flushLoop() }
        startThread { [self] in self.checkpointLoop() }
        if options.prepareAheadBytes > 0 {
            state.preparedEnd = recovered.preparedEnd
            state.preparerRunning = true
            startThread { [self] in self.prepareLoop() }
        }
        if let v = Verification.plan(recovered) { startVerification(v) }
    }

    deinit { _ = Glibc.close(lockFileDescriptor) }

    // MARK: - Queries

    /// What precedes the first entry: where it starts, and the term and chain CRC of the entry before
    /// it (deleted by retention, or never held: term 0). Nil when a store from before this was
    /// recorded lost its prefix (then a Raft leader cannot bring a follower to its first index).
    public var base: LogBase? { lock.withLock { state.base.map(LogBase.init) } }

    /// Index of the first entry present; equals `nextIndex` when the log is empty.
    public var firstIndex: LogIndex { lock.withLock { state.firstIndex } }
    /// Index of the last entry, nil when the log is empty.
    public var lastIndex: LogIndex? {
        lock.withLock { state.nextIndex > state.firstIndex ? LogIndex(state.nextIndex.rawValue - 1) : nil }
    }
    /// Index the next appended entry gets.
    public var nextIndex: LogIndex { lock.withLock { state.nextIndex } }
    /// Term of the last entry (0 when the log has never held one).
    public var lastTerm: Term { lock.withLock { state.written.lastTerm } }
    /// Position where the next entry will be written.
    public var writePosition: LogPosition { lock.withLock { LogPosition(state.written.endPosition) } }
    /// Everything before this position is on stable storage.
    public var durablePosition: LogPosition { lock.withLock { LogPosition(state.durable.endPosition) } }
    /// Why the store stopped serving writes (a failed write or sync), if it did.
    public var failureDescription: String? { lock.withLock { state.failure } }
    /// Start position of the first segment (the smallest position a read can return).
    public var firstPosition: LogPosition {
        lock.withLock { LogPosition(state.segments.first?.start ?? state.written.endPosition) }
    }

    /// Chain CRC of the last entry (the base's when the log is empty): what the next entry chains to.
    public var lastChainCRC: UInt32 { lock.withLock { state.written.lastChainCRC } }
    /// Everything before this position is in the segment files, readable with `readBytes` (under
    /// SYNC_FLUSH the newest appends wait in the write-behind buffer until their group's sync).
    public var fileEndPosition: LogPosition {
        lock.withLock { LogPosition(state.pending.isEmpty ? state.written.endPosition : state.pendingStart) }
    }
    /// The end of the segment holding `position` (nil before the first segment or past the last).
    public func segmentEnd(containing position: UInt64) -> UInt64? {
        lock.withLock { state.segments.last(where: { $0.start <= position }).flatMap { position < $0.end ? $0.end : nil } }
    }

    /// Counters since open.
    public var statistics: LogStoreStatistics { lock.withLock { state.statistics } }

    /// Moves the durable point forward (unless a truncation happened since the flush began) and
    /// returns the waiters it satisfies, to be resumed after unlocking.
    func markDurable(_ point: DurablePoint, epoch: UInt64) -> [Waiter] {
        // A failure recorded meanwhile may be the error this sync's success hides (`syncLock`).
        guard state.failure == nil, epoch == state.epoch, point.endPosition > state.durable.endPosition else { return [] }
        state.statistics.syncedBytes &+= point.endPosition - state.durable.endPosition
        state.durable = point
        if state.unsyncedSegment != nil && point.endPosition == state.written.endPosition {
            state.unsyncedSegment = nil
        }
        var done: [Waiter] = []
        state.waiters.removeAll { w in
            if w.target <= point.endPosition { done.append(w); return true }
            return false
        }
        return done
    }

    /// `drainPending`, stopping the store if it fails (lock held).
    func drainPendingOrFail() throws(StorageError) {
        do {
            try drainPending()
        } catch {
            state.failure = error.description
            failWaiters(error)
            throw error
        }
    }

    func wakeFlusherIfWaiting() {
        if state.waiters.count >= state.flusherWakeAtWaiters {
            state.flusherWakeAtWaiters = Int.max
            lock.broadcast()
        }
    }

    func failWaiters(_ error: any Error) {
        let waiters = state.waiters
        state.waiters.removeAll()
        for w in waiters { w.continuation.resume(throwing: error) }
    }
}
