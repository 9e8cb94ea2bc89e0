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
public struct LogStoreStatistics: Sendable, Equatable {
    public var appendCalls = 0
    public var entriesAppended = 0
    /// fdatasync calls made for group commit and interval flushes (not counting segment seals).
    public var dataSyncs = 0
    public var checkpoints = 0
    /// Time spent in group-commit fdatasyncs, in waiting for a group to fill, and in resuming the
    /// appenders a sync answered (nanoseconds, summed).
    public var syncNanoseconds: UInt64 = 0
    public var groupWaitNanoseconds: UInt64 = 0
    public var resumeNanoseconds: UInt64 = 0
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
/// (`position + 48`) into the message record.
public typealias BodyPatch = (_ index: LogIndex, _ position: LogPosition, _ body: inout [UInt8]) -> Void

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
    let lockFileDescriptor: Int32

    struct Waiter {
        var target: UInt64
        var continuation: Resumption
    }

    /// Who waits for durability: a `waitUntilDurable` caller, or an `append` that returns its result.
    /// Unsafe continuations (no per-call checking allocation) are fine here: a waiter is removed from
    /// `state.waiters` under the lock before it is resumed, so each is resumed exactly once.
    enum Resumption {
        case wait(UnsafeContinuation<Void, any Error>)
        case append(UnsafeContinuation<AppendResult, any Error>, AppendResult)

        func resume() {
            switch self {
            case let .wait(c): c.resume()
            case let .append(c, r): c.resume(returning: r)
            }
        }

        func resume(throwing error: any Error) {
            switch self {
            case let .wait(c): c.resume(throwing: error)
            case let .append(c, _): c.resume(throwing: error)
            }
        }
    }

    struct State {
        var segments: [SegmentFile]
        var index: IndexFiles
        var firstIndex: LogIndex
        var nextIndex: LogIndex
        var written: DurablePoint
        var durable: DurablePoint
        /// Data segments with bytes not yet fdatasync'ed (at most the active one: sealing syncs).
        var unsyncedSegment: SegmentFile?
        var unsyncedIndexFiles: [SegmentFile] = []
        var waiters: [Waiter] = []
        var syncRequested = false
        /// Bumped by truncateSuffix; a flush that started before it does not move `durable`.
        var epoch: UInt64 = 0
        var failure: String?
        var closing = false
        var flusherRunning = false
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
        self.options = options
        self.dataDirectory = options.directory + "/data"
        self.indexDirectory = options.directory + "/index"
        self.checkpointPath = options.directory + "/checkpoint"
        self.recoveryReport = recovered.report
        self.lockFileDescriptor = lockFileDescriptor
        self.state = State(
            segments: recovered.segments, index: recovered.index, firstIndex: recovered.firstIndex,
            nextIndex: recovered.end.nextIndex, written: recovered.end, durable: recovered.end,
            lastCheckpoint: recovered.checkpoint)
        state.flusherRunning = true
        startThread { [self] in self.flushLoop() }
    }

    deinit { _ = Glibc.close(lockFileDescriptor) }

    // MARK: - Queries

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
    /// Start position of the first segment (the smallest position a read can return).
    public var firstPosition: LogPosition {
        lock.withLock { LogPosition(state.segments.first?.start ?? state.written.endPosition) }
    }

    /// Counters since open.
    public var statistics: LogStoreStatistics { lock.withLock { state.statistics } }

    // MARK: - Append

    /// Appends entries at the end of the log and, under `FlushMode.sync`, returns once they are
    /// durable (sharing one fdatasync with every append that arrived meanwhile).
    ///
    /// - Parameters:
    ///   - expectingFirstIndex: when given, the append fails unless the first entry gets this index
    ///     (a Raft follower writing entries the leader numbered).
    ///   - patch: see `BodyPatch`.
    public func append(
        _ entries: [EntryToAppend], expectingFirstIndex: LogIndex? = nil, patch: BodyPatch? = nil
    ) async throws -> AppendResult {
        guard options.flushMode == .sync else {
            return try write(entries, expectingFirstIndex: expectingFirstIndex, patch: patch)
        }
        // Write and register as a waiter in one critical section: this is the hot path of group
        // commit, and every microsecond an appender spends here delays the next fdatasync.
        return try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<AppendResult, any Error>) in
            lock.lock()
            let result: AppendResult
            do {
                result = try writeLocked(entries, expectingFirstIndex: expectingFirstIndex, patch: patch)
            } catch {
                lock.unlock()
                continuation.resume(throwing: error)
                return
            }
            state.waiters.append(Waiter(target: result.endPosition.rawValue, continuation: .append(continuation, result)))
            state.syncRequested = true
            wakeFlusherIfWaiting()
            lock.unlock()
        }
    }

    /// Writes entries to the page cache without waiting for durability (the Raft driver writes,
    /// then waits once for everything in its Ready). See `append`.
    public func write(
        _ entries: [EntryToAppend], expectingFirstIndex: LogIndex? = nil, patch: BodyPatch? = nil
    ) throws(StorageError) -> AppendResult {
        guard !entries.isEmpty else { throw .invalidArgument("append of no entries") }
        for e in entries where e.body.count > options.entryBodyBytesMax {
            throw .invalidArgument("entry body of \(e.body.count) bytes exceeds the limit of \(options.entryBodyBytesMax)")
        }
        lock.lock()
        defer { lock.unlock() }
        return try writeLocked(entries, expectingFirstIndex: expectingFirstIndex, patch: patch)
    }

    func writeLocked(
        _ entries: [EntryToAppend], expectingFirstIndex: LogIndex?, patch: BodyPatch?
    ) throws(StorageError) -> AppendResult {
        guard !entries.isEmpty else { throw .invalidArgument("append of no entries") }
        for e in entries where e.body.count > options.entryBodyBytesMax {
            throw .invalidArgument("entry body of \(e.body.count) bytes exceeds the limit of \(options.entryBodyBytesMax)")
        }
        try checkWritable()
        if let expectingFirstIndex, expectingFirstIndex != state.nextIndex {
            throw .invalidArgument("append expected to start at index \(expectingFirstIndex), the log's next index is \(state.nextIndex)")
        }
        var term = state.written.lastTerm
        for entry in entries {
            guard entry.term >= term else {
                throw .invalidArgument("entry term \(entry.term) is below the last term \(term)")
            }
            term = entry.term
        }
        var w = state.written
        var positions: [LogPosition] = []
        positions.reserveCapacity(entries.count)
        var data: [UInt8] = []
        var dataStart = w.endPosition
        var indexBytes: [UInt8] = []
        let firstAppendedIndex = state.nextIndex
        var rolled = false
        do {
            var active = try activeSegment(for: w.endPosition)
            if options.flushMode == .sync {
                // Encode straight into the write-behind buffers (taken out and put back, so no copy).
                if !state.pending.isEmpty && (state.pendingSegment !== active || state.pendingStart + UInt64(state.pending.count) != w.endPosition) {
                    try drainPending()
                }
                swap(&data, &state.pending)
                if !data.isEmpty { dataStart = state.pendingStart }
                swap(&indexBytes, &state.pendingIndex)
                if !indexBytes.isEmpty { precondition(state.pendingIndexFirst.rawValue + UInt64(indexBytes.count / IndexRecord.byteCount) == firstAppendedIndex.rawValue, "pending index records are not contiguous") }
            }
            let indexFirst = indexBytes.isEmpty ? firstAppendedIndex : state.pendingIndexFirst
            for entry in entries {
                assert(entry.term >= w.lastTerm, "terms were checked before writing")
                let size = UInt64(EntryHeader.byteCount + entry.body.count)
                if w.endPosition + size + UInt64(BlankRecord.headerByteCount) > active.end {
                    // Flush what this batch put in the old segment, then seal it and start the next.
                    try commitBatch(&data, to: active, at: dataStart)
                    try drainPending()
                    rolled = true
                    try seal(active, at: w.endPosition)
                    active = try createSegment(at: active.end)
                    w.endPosition = active.start
                    dataStart = active.start
                }
                var body = entry.body
                let position = LogPosition(w.endPosition)
                patch?(w.nextIndex, position, &body)
                precondition(body.count == entry.body.count, "a BodyPatch must not change the body's length")
                let header = body.withUnsafeBytes {
                    LogEntryCodec.append(
                        kind: entry.kind, index: w.nextIndex, term: entry.term, position: position, body: $0,
                        previousChainCRC: w.lastChainCRC, to: &data)
                }
                IndexRecord(header).encode(into: &indexBytes)
                positions.append(position)
                w.endPosition += size
                w.nextIndex = w.nextIndex.next
                w.lastTerm = entry.term
                w.lastChainCRC = header.chainCRC
            }
            try commitBatch(&data, to: active, at: dataStart)
            try commitIndexRecords(&indexBytes, firstIndex: indexFirst)
        } catch {
            // Nothing past `state.written` counts; a write that failed half-way is overwritten by the
            // next append or cut by recovery. ENOSPC within the active segment leaves the store
            // usable; anything else (including a failure after sealing a segment) stops it.
            if case let .io(_, _, code) = error, code == ENOSPC, !rolled {
                throw error
            }
            state.failure = error.description
            failWaiters(error)
            throw error
        }
        state.written = w
        state.nextIndex = w.nextIndex
        state.statistics.appendCalls += 1
        state.statistics.entriesAppended += entries.count
        return AppendResult(
            firstIndex: firstAppendedIndex, lastIndex: LogIndex(w.nextIndex.rawValue - 1), positions: positions,
            endPosition: LogPosition(w.endPosition))
    }

    /// Returns once everything before `position` is durable (forcing a flush in ASYNC_FLUSH mode).
    public func waitUntilDurable(_ position: LogPosition) async throws {
        try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
            lock.lock()
            if let failure = state.failure {
                lock.unlock()
                continuation.resume(throwing: StorageError.failed(failure))
                return
            }
            if state.durable.endPosition >= position.rawValue {
                lock.unlock()
                continuation.resume()
                return
            }
            if state.closing {
                lock.unlock()
                continuation.resume(throwing: StorageError.closed)
                return
            }
            state.waiters.append(Waiter(target: position.rawValue, continuation: .wait(continuation)))
            state.syncRequested = true
            wakeFlusherIfWaiting()
            lock.unlock()
        }
    }

    /// fdatasyncs everything written so far on the calling thread (for callers outside Swift
    /// concurrency, such as tests and shutdown).
    public func syncNow() throws(StorageError) {
        let (target, segment, epoch) = try lock.withLock { () throws(StorageError) in
            if let failure = state.failure { throw StorageError.failed(failure) }
            try drainPendingOrFail()
            return (state.written, state.unsyncedSegment, state.epoch)
        }
        try segment?.sync()
        let resumed = lock.withLock {
            state.statistics.dataSyncs += 1
            return markDurable(target, epoch: epoch)
        }
        for w in resumed { w.continuation.resume() }
    }

    // MARK: - Helpers called with the lock held

    func checkWritable() throws(StorageError) {
        if state.closing { throw .closed }
        if let failure = state.failure { throw .failed(failure) }
        let now = monotonicMilliseconds()
        if state.diskSampledAtMs == 0 || now &- state.diskSampledAtMs >= UInt64(options.diskUsageSampleIntervalMs) {
            state.diskUsedRatio = try options.diskUsage(options.directory)
            state.diskSampledAtMs = now
        }
        let usedPercent = state.diskUsedRatio * 100
        if usedPercent > Double(options.diskMaxUsedSpaceRatio) {
            throw .diskFull(path: options.directory, usedPercent: Int(usedPercent.rounded()), limitPercent: options.diskMaxUsedSpaceRatio)
        }
    }

    /// The segment the next entry at `position` goes to, creating the first one if needed.
    func activeSegment(for position: UInt64) throws(StorageError) -> SegmentFile {
        if let last = state.segments.last {
            precondition(last.contains(position) || position == last.end, "write position outside the active segment")
            if position == last.end {
                return try createSegment(at: last.end)
            }
            return last
        }
        return try createSegment(at: position)
    }

    func createSegment(at start: UInt64) throws(StorageError) -> SegmentFile {
        if let last = state.segments.last {
            precondition(start == last.end, "segments must be contiguous")
        }
        let segment = try SegmentFile(directory: dataDirectory, start: start, capacity: options.segmentBytes, create: true)
        try FileIO.fsyncDirectory(dataDirectory)
        state.segments.append(segment)
        return segment
    }

    /// Writes the blank record that ends `segment` at `position` and makes the whole segment durable
    /// before anything goes to the next one (the invariant that confines torn writes to the last
    /// segment).
    func seal(_ segment: SegmentFile, at position: UInt64) throws(StorageError) {
        let padding = Int(segment.end - position)
        precondition(padding >= BlankRecord.headerByteCount, "no room for the blank record")
        let blank = BlankRecord.encode(paddingByteCount: padding)
        try storageCall { try blank.withUnsafeBytes { b in try segment.write(b, at: position) } }
        try segment.truncate(toLocal: segment.capacity)
        try segment.sync()
        if state.unsyncedSegment === segment { state.unsyncedSegment = nil }
    }

    /// Hands a batch of encoded entries to the file. Under SYNC_FLUSH nobody is answered before the
    /// next fdatasync, so batches wait in `pending` and the flusher writes them with one `pwrite` just
    /// before it syncs (one syscall per group instead of one per append). Under ASYNC_FLUSH the bytes
    /// go to the page cache at once, so a killed process loses nothing that was acknowledged.
    func commitBatch(_ data: inout [UInt8], to segment: SegmentFile, at position: UInt64) throws(StorageError) {
        guard !data.isEmpty else { return }
        if options.flushMode == .sync {
            if !state.pending.isEmpty && (state.pendingSegment !== segment || state.pendingStart + UInt64(state.pending.count) != position) {
                try drainPending()
            }
            if state.pending.isEmpty {
                state.pendingStart = position
                state.pendingSegment = segment
                swap(&state.pending, &data)
            } else {
                state.pending.append(contentsOf: data)
            }
            data.removeAll(keepingCapacity: true)
        } else {
            try writeBytes(&data, to: segment, at: position)
            state.unsyncedSegment = segment
        }
    }

    func commitIndexRecords(_ bytes: inout [UInt8], firstIndex: LogIndex) throws(StorageError) {
        if options.flushMode == .sync {
            if !state.pendingIndex.isEmpty
                && state.pendingIndexFirst.rawValue + UInt64(state.pendingIndex.count / IndexRecord.byteCount) != firstIndex.rawValue
            {
                try drainPending()
            }
            if state.pendingIndex.isEmpty {
                state.pendingIndexFirst = firstIndex
                swap(&state.pendingIndex, &bytes)
            } else {
                state.pendingIndex.append(contentsOf: bytes)
            }
        } else {
            try writeIndexRecords(bytes, firstIndex: firstIndex)
        }
    }

    /// Writes the batches waiting in `pending` (lock held). Every path that reads or cuts the files
    /// calls this first, so only the flusher's fdatasync sees un-drained bytes.
    func drainPending() throws(StorageError) {
        if !state.pending.isEmpty, let segment = state.pendingSegment {
            try writeBytes(&state.pending, to: segment, at: state.pendingStart)
            state.unsyncedSegment = segment
            state.pendingSegment = nil
        }
        if !state.pendingIndex.isEmpty {
            try writeIndexRecords(state.pendingIndex, firstIndex: state.pendingIndexFirst)
            state.pendingIndex.removeAll(keepingCapacity: true)
        }
    }

    func writeBytes(_ data: inout [UInt8], to segment: SegmentFile, at position: UInt64) throws(StorageError) {
        guard !data.isEmpty else { return }
        try storageCall { try data.withUnsafeBytes { b in try segment.write(b, at: position) } }
        data.removeAll(keepingCapacity: true)
    }

    func writeIndexRecords(_ bytes: [UInt8], firstIndex: LogIndex) throws(StorageError) {
        for file in try state.index.write(bytes, firstIndex: firstIndex)
        where !state.unsyncedIndexFiles.contains(where: { $0 === file }) {
            state.unsyncedIndexFiles.append(file)
        }
    }

    /// Moves the durable point forward (unless a truncation happened since the flush began) and
    /// returns the waiters it satisfies, to be resumed after unlocking.
    func markDurable(_ point: DurablePoint, epoch: UInt64) -> [Waiter] {
        guard epoch == state.epoch, point.endPosition > state.durable.endPosition else { return [] }
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
