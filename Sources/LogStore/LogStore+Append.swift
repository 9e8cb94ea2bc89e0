import Glibc
import LogFormat

/// The write path: appends, group-commit waits, and the helpers that place bytes in segments.
extension LogStore {
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
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<AppendResult, any Error>) in
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
        // The write-behind buffers as this call found them: entries `state.written` already counts.
        // Nil until this call takes them over (a failure before that leaves them where they are).
        var kept: (start: UInt64, segment: SegmentFile?, bytes: Int, indexFirst: LogIndex, indexBytes: Int)?
        do {
            var active = try activeSegment(for: w.endPosition)
            if options.flushMode == .sync {
                // Encode straight into the write-behind buffers (taken out and put back, so no copy).
                if !state.pending.isEmpty && (state.pendingSegment !== active || state.pendingStart + UInt64(state.pending.count) != w.endPosition) {
                    try drainPending()
                }
                kept = (state.pendingStart, state.pendingSegment, state.pending.count, state.pendingIndexFirst, state.pendingIndex.count)
                swap(&data, &state.pending)
                if !data.isEmpty { dataStart = state.pendingStart }
                swap(&indexBytes, &state.pendingIndex)
                if !indexBytes.isEmpty { precondition(state.pendingIndexFirst.rawValue + UInt64(indexBytes.count / IndexRecord.byteCount) == firstAppendedIndex.rawValue, "pending index records are not contiguous") }
            }
            let indexFirst = indexBytes.isEmpty ? firstAppendedIndex : state.pendingIndexFirst
            // A fresh buffer gets room for the whole batch at once (growing it entry by entry cost a
            // reallocation or two each). A write-behind buffer that already holds bytes is left to
            // grow as it does: reserving more for each append measured slower under group commit.
            if data.isEmpty { data.reserveCapacity(entries.reduce(0) { $0 + EntryHeader.byteCount + $1.body.count }) }
            if indexBytes.isEmpty { indexBytes.reserveCapacity(entries.count * IndexRecord.byteCount) }
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
                let position = LogPosition(w.endPosition)
                // Patched where it lands in `data`: the body is shared with the caller (the Raft
                // core, the replica's recent entries), so patching a copy cost a malloc and a copy
                // of every body.
                let index = w.nextIndex
                let header = entry.body.withUnsafeBytes { body in
                    LogEntryCodec.append(
                        kind: entry.kind, index: index, term: entry.term, position: position, body: body,
                        previousChainCRC: w.lastChainCRC, to: &data, patchingBody: { patch?(index, position, $0) })
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
                if let kept {
                    // The failure came while this call held the earlier entries' bytes and index
                    // records (in its own buffers, or back in `pending` on its way to a roll): put
                    // back exactly those, so they still reach the files once there is space.
                    // The bytes are in `pending` once a roll handed them back, else in `data`; the
                    // index records only ever in `indexBytes` (they go back at the very end).
                    let bytes = state.pending.isEmpty ? data : state.pending
                    state.pending = Array(bytes.prefix(kept.bytes))
                    (state.pendingStart, state.pendingSegment) = (kept.start, kept.bytes > 0 ? kept.segment : nil)
                    state.pendingIndex = Array(indexBytes.prefix(kept.indexBytes))
                    state.pendingIndexFirst = kept.indexFirst
                }
                throw error
            }
            state.failure = error.description
            failWaiters(error)
            throw error
        }
        state.written = w
        state.nextIndex = w.nextIndex
        if w.endPosition >= state.preparerWakeAt { wakePreparer() }
        state.statistics.appendCalls += 1
        state.statistics.entriesAppended += entries.count
        return AppendResult(
            firstIndex: firstAppendedIndex, lastIndex: LogIndex(w.nextIndex.rawValue - 1), positions: positions,
            endPosition: LogPosition(w.endPosition))
    }

    /// Returns once everything before `position` is durable (forcing a flush in ASYNC_FLUSH mode).
    public func waitUntilDurable(_ position: LogPosition) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
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

    /// Asks the flusher thread to make everything before `position` durable and returns at once;
    /// `done` is called on the flusher thread when it is (nil), or with the error that stopped the
    /// store. Called at once, on this thread, when it already is durable or the store has failed.
    /// For a writer that goes on while its bytes sync, such as a Raft leader's driver (it counts
    /// itself toward a quorum only once `done` says so). `done` must be short and must not block.
    /// The sync starts without the group-commit delay, whatever the flush mode.
    public func requestSync(through position: LogPosition, then done: @escaping @Sendable (StorageError?) -> Void) {
        lock.lock()
        if let failure = state.failure {
            lock.unlock()
            return done(.failed(failure))
        }
        if state.durable.endPosition >= position.rawValue {
            lock.unlock()
            return done(nil)
        }
        if state.closing {
            lock.unlock()
            return done(.closed)
        }
        state.waiters.append(Waiter(target: position.rawValue, continuation: .callback(done)))
        state.syncRequested = true
        state.urgentSyncRequested = true
        // Woken whatever it waits for (a group it would otherwise fill first).
        state.flusherWakeAtWaiters = Int.max
        lock.broadcast()
        lock.unlock()
    }

    /// Makes everything before `position` durable on the calling thread: returns at once when it
    /// already is, else fdatasyncs everything written so far (and answers the waiters that covers).
    /// For a writer that owns its thread, such as the Raft driver on its event loop: it saves the
    /// two thread wake-ups of `waitUntilDurable` (the flusher's, then the caller's). A failed sync
    /// stops the store, as in the flusher.
    public func syncThrough(_ position: LogPosition) throws(StorageError) {
        let done = try lock.withLock { () throws(StorageError) -> Bool in
            if let failure = state.failure { throw StorageError.failed(failure) }
            if state.durable.endPosition >= position.rawValue { return true }
            if state.closing { throw StorageError.closed }
            return false
        }
        if done { return }
        do {
            try syncNow()
        } catch {
            lock.withLock {
                if state.failure == nil {
                    state.failure = error.description
                    failWaiters(error)
                }
            }
            throw error
        }
        // Everything written is durable now, unless `position` was never written or a truncation
        // ran meanwhile (on another thread): then it is not, and saying so is the caller's due.
        let reached = lock.withLock { state.durable.endPosition >= position.rawValue }
        if !reached { throw .invalidArgument("position \(position.rawValue) is not in the durable log (past its end, or truncated meanwhile)") }
    }

    /// fdatasyncs everything written so far on the calling thread (for callers outside Swift
    /// concurrency, such as tests and shutdown).
    public func syncNow() throws(StorageError) {
        // The sync and its outcome under `syncLock` (see there).
        let resumed = try syncLock.withLock { () throws(StorageError) -> [Waiter] in
            let (target, segment, epoch) = try lock.withLock { () throws(StorageError) in
                if let failure = state.failure { throw StorageError.failed(failure) }
                try drainPendingOrFail()
                return (state.written, state.unsyncedSegment, state.epoch)
            }
            let syncStart = monotonicNanoseconds()
            try segment?.sync()
            let syncNs = monotonicNanoseconds() &- syncStart
            return try lock.withLock { () throws(StorageError) -> [Waiter] in
                if let failure = state.failure { throw StorageError.failed(failure) }
                state.statistics.dataSyncs += 1
                state.statistics.syncNanoseconds += syncNs
                return markDurable(target, epoch: epoch)
            }
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
        waitForPreparer(overlapping: position, segment.end, in: segment)
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
            waitForPreparer(overlapping: position, position + UInt64(data.count), in: segment)
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
            // Not inside writeBytes: it holds an access to `state.pending`, and the wait changes `state`.
            waitForPreparer(overlapping: state.pendingStart, state.pendingStart + UInt64(state.pending.count), in: segment)
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
}
