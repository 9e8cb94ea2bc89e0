import Glibc
import LogFormat

extension LogStore {
    /// The flusher thread: group commit for SYNC_FLUSH, interval flushing for ASYNC_FLUSH, and the
    /// periodic checkpoint. One fdatasync covers every append written before it started; appends that
    /// arrive during it are covered by the next one.
    func flushLoop() {
        let intervalNs: UInt64
        switch options.flushMode {
        case .sync: intervalNs = UInt64(options.checkpointIntervalMs) * 1_000_000
        case let .async(intervalMs, _, _): intervalNs = UInt64(intervalMs) * 1_000_000
        }
        // Group commit sizing: how many waiters the last sync answered plus those that arrived during
        // it. Right after a sync the answered appenders are about to append again; syncing at once
        // would split them into two alternating cohorts of half the size. So the next sync waits for
        // that many waiters, but never longer than half the last sync took (MySQL's
        // binlog_group_commit_sync_delay, made adaptive).
        var expectedWaiters = 0
        var lastSyncNs: UInt64 = 0
        while true {
            lock.lock()
            if !state.syncRequested && !state.closing {
                state.flusherWakeAtWaiters = 1
                lock.wait(timeoutNanoseconds: intervalNs)
            }
            if options.flushMode == .sync && !state.closing && !state.urgentSyncRequested
                && state.waiters.count < expectedWaiters && !state.waiters.isEmpty {
                let waitStart = monotonicNanoseconds()
                defer { state.statistics.groupWaitNanoseconds += monotonicNanoseconds() &- waitStart }
                let deadline = waitStart + min(lastSyncNs / 2, Self.groupCommitDelayNsMax)
                state.flusherWakeAtWaiters = expectedWaiters
                while state.waiters.count < expectedWaiters && !state.closing && !state.urgentSyncRequested {
                    let left = deadline &- monotonicNanoseconds()
                    if left == 0 || left > Self.groupCommitDelayNsMax { break }
                    lock.wait(timeoutNanoseconds: left)
                }
            }
            state.flusherWakeAtWaiters = Int.max
            if state.closing {
                state.flusherRunning = false
                lock.broadcast()
                lock.unlock()
                return
            }
            let now = monotonicMilliseconds()
            let dirty = state.written.endPosition - state.durable.endPosition
            // SYNC_FLUSH: whenever anything is dirty (a waiter asked, or the periodic wake found bytes
            // written without a wait). ASYNC_FLUSH: on size or the thorough interval, or when asked.
            var flush = dirty > 0 && (state.syncRequested || options.flushMode == .sync)
            if case let .async(_, leastBytes, thoroughMs) = options.flushMode, dirty > 0 {
                if dirty >= UInt64(leastBytes) || now &- state.lastFlushAtMs >= UInt64(thoroughMs) { flush = true }
            }
            state.syncRequested = false
            state.urgentSyncRequested = false
            if state.failure == nil, (try? drainPendingOrFail()) == nil {
                lock.unlock()
                continue
            }
            let target = state.written
            let segment = state.unsyncedSegment
            let epoch = state.epoch
            let failed = state.failure != nil
            lock.unlock()
            if failed { continue }

            if flush {
                // The sync and its outcome under `syncLock` (see there).
                syncLock.lock()
                let syncStart = monotonicNanoseconds()
                do {
                    try segment?.sync()
                } catch {
                    // fsync failures cannot be retried safely (the kernel may have dropped the
                    // dirty pages): stop serving.
                    lock.withLock {
                        state.failure = error.description
                        failWaiters(error)
                    }
                    syncLock.unlock()
                    continue
                }
                lastSyncNs = monotonicNanoseconds() &- syncStart
                let resumed = lock.withLock {
                    state.statistics.dataSyncs += 1
                    state.statistics.syncNanoseconds += lastSyncNs
                    state.lastFlushAtMs = now
                    let done = markDurable(target, epoch: epoch)
                    expectedWaiters = done.count + state.waiters.count
                    return done
                }
                syncLock.unlock()
                let resumeStart = monotonicNanoseconds()
                for w in resumed { w.continuation.resume() }
                let resumeNs = monotonicNanoseconds() &- resumeStart
                lock.withLock { state.statistics.resumeNanoseconds += resumeNs }
            }
        }
    }

    /// The checkpoint thread: every `checkpointIntervalMs`, syncs the index files and records the
    /// durable point. Kept off the flusher thread so its three fsyncs never delay a group commit.
    func checkpointLoop() {
        let intervalNs = UInt64(options.checkpointIntervalMs) * 1_000_000
        while true {
            checkpointLock.lock()
            if !lock.withLock({ state.closing }) { checkpointLock.wait(timeoutNanoseconds: intervalNs) }
            checkpointLock.unlock()
            if lock.withLock({ state.closing }) {
                lock.withLock {
                    state.checkpointerRunning = false
                    lock.broadcast()
                }
                return
            }
            maybeCheckpoint(force: false)
        }
    }

    /// The longest a sync waits for the appenders the previous one answered.
    static let groupCommitDelayNsMax: UInt64 = 1_000_000

    /// Makes the durable point the new checkpoint if the interval passed: index files are synced
    /// first, so everything before the checkpoint is durable in data and index.
    func maybeCheckpoint(force: Bool) {
        checkpointLock.lock()
        defer { checkpointLock.unlock() }
        let (point, indexFiles, due, epoch) = lock.withLock {
            let due = force || monotonicMilliseconds() &- lastCheckpointAtMs >= UInt64(options.checkpointIntervalMs)
            return (state.durable, state.unsyncedIndexFiles, due, state.epoch)
        }
        guard due, point != lock.withLock({ state.lastCheckpoint }) else { return }
        do {
            for f in indexFiles { try f.sync() }
            try writeCheckpoint(point, ifEpoch: epoch)
            lock.withLock {
                state.unsyncedIndexFiles.removeAll { f in indexFiles.contains { $0 === f } }
            }
        } catch {
            lock.withLock {
                state.failure = error.description
                failWaiters(error)
            }
        }
    }

    /// Writes the checkpoint file unless a truncation happened since `epoch` was read. Caller holds
    /// `checkpointLock`.
    func writeCheckpoint(_ point: DurablePoint, ifEpoch epoch: UInt64?) throws(StorageError) {
        if let epoch, lock.withLock({ state.epoch }) != epoch { return }
        try FileIO.writeAtomically(CheckpointFile.encode(point), to: checkpointPath)
        lock.withLock {
            state.lastCheckpoint = point
            state.statistics.checkpoints += 1
            lastCheckpointAtMs = monotonicMilliseconds()
        }
    }

    var lastCheckpointAtMs: UInt64 {
        get { state.lastCheckpointAtMs }
        set { state.lastCheckpointAtMs = newValue }
    }

    /// Makes everything written so far durable and records it in the checkpoint, now.
    public func checkpointNow() throws(StorageError) {
        try syncNow()
        maybeCheckpoint(force: true)
        if let failure = lock.withLock({ state.failure }) { throw .failed(failure) }
    }

    /// Flushes everything, writes a final checkpoint and stops the flusher. Waiters still pending are
    /// resumed (their entries are durable after the final flush). Further calls throw `.closed`.
    public func close() throws(StorageError) {
        let alreadyClosing = lock.withLock { () -> Bool in
            let was = state.closing
            state.closing = true
            lock.broadcast()
            while state.flusherRunning || state.checkpointerRunning || state.verifierRunning || state.preparerRunning {
                lock.unlock()
                checkpointLock.withLock { checkpointLock.broadcast() }
                prepareLock.withLock { prepareLock.broadcast() }
                lock.lock()
                lock.wait(timeoutNanoseconds: 10_000_000)
            }
            return was
        }
        if alreadyClosing { return }
        // Whatever happens below, nothing writes to the files after this: another store may open them.
        defer { _ = flock(lockFileDescriptor, LOCK_UN) }
        let (target, segment, epoch, failure) = lock.withLock {
            if state.failure == nil { _ = try? drainPendingOrFail() }
            return (state.written, state.unsyncedSegment, state.epoch, state.failure)
        }
        if let failure {
            lock.withLock { failWaiters(StorageError.failed(failure)) }
            return
        }
        syncLock.lock()
        do {
            try segment?.sync()
        } catch {
            lock.withLock { failWaiters(error) }
            syncLock.unlock()
            throw error
        }
        let resumed = lock.withLock {
            if segment != nil { state.statistics.dataSyncs += 1 }
            return markDurable(target, epoch: epoch)
        }
        syncLock.unlock()
        for w in resumed { w.continuation.resume() }
        lock.withLock { failWaiters(StorageError.closed) }
        maybeCheckpoint(force: true)
    }
}
