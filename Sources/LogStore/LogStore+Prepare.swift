import Glibc

/// Prepared space: zeros written ahead of the log in the active segment (`prepareAheadBytes`).
///
/// An fdatasync of a write that grows a file must also write the file's inode (its size changed);
/// one that overwrites blocks already allocated and written need not. On this machine's disk that
/// halves a group commit's fdatasync (BENCHMARKS.md, "the file's layout"), and with three members on
/// one disk the brokers spent about 40 % of their time in fdatasync. So a thread of its own keeps the
/// `prepareAheadBytes` after the log's end written with zeros and synced, one chunk at a time:
/// - it claims a chunk under the lock, only at or past the log's end, and writes it outside the lock;
///   a write of log bytes into a claimed chunk waits until its zeros are down (`waitForPreparer`),
///   so zeros never land over entries;
/// - it fdatasyncs after every chunk, so the inode's new size is made durable here, not by the next
///   group commit, and no dirty zeros are left for a group commit's sync to write;
/// - it never grows a segment past its end, and starts on a new segment once the log rolls there;
/// - a truncation or reset waits for a claimed chunk before it cuts files.
/// Lock order: the store's `lock`, then `prepareLock`. A writer waits for a chunk holding the store's
/// lock (its append must stay one critical section); the preparer finishes a chunk under
/// `prepareLock` alone.
/// Recovery reads a stop in the last segment followed by nothing but zeros to the file's end as the
/// log's end: prepared space, kept as it is (Recovery.swift). Running out of space while preparing
/// only pauses the preparing; a failed fdatasync (through the preparer's own descriptor) stops the
/// store, as in the flusher (it may have dropped log bytes as well).
extension LogStore {
    /// Bytes per claimed chunk: one pwrite and one fdatasync each. Small enough that a group
    /// commit whose fdatasync meets a chunk still being written back waits little for it.
    static let prepareChunkBytes: UInt64 = 256 << 10

    func prepareLoop() {
        let ahead = options.prepareAheadBytes
        let zeros = [UInt8](repeating: 0, count: Int(Self.prepareChunkBytes))
        var pausedUntilMs: UInt64 = 0
        while true {
            lock.lock()
            if state.closing {
                state.preparerRunning = false
                lock.broadcast()
                lock.unlock()
                return
            }
            var job: (segment: SegmentFile, from: UInt64, to: UInt64, epoch: UInt64)? = nil
            state.preparerWakeAt = UInt64.max
            // Below the disk guard's limit only: zeros must not take the space the guard keeps for
            // the index, consume queue and checkpoint files (the last sample of `checkWritable`).
            let diskAllows = state.diskUsedRatio * 100 <= Double(options.diskMaxUsedSpaceRatio)
            if state.failure == nil, diskAllows, monotonicMilliseconds() >= pausedUntilMs, let active = state.segments.last {
                let from = max(state.preparedEnd, state.written.endPosition, active.start)
                let target = min(active.end, state.written.endPosition &+ ahead)
                // Whole chunks only (or the segment's rest): under steady load a claim of whatever
                // the log grew meanwhile would sync back to back beside the group commit.
                if from < target && (target - from >= Self.prepareChunkBytes || target == active.end) {
                    let claimed = (active, from, min(from + Self.prepareChunkBytes, target), state.epoch)
                    // Claimed while the store's lock is held: no write can start in the chunk
                    // before the claim is visible to it.
                    prepareLock.withLock { preparingChunk = (ObjectIdentifier(active), claimed.1..<claimed.2) }
                    job = claimed
                } else if from < active.end {
                    // Far enough ahead: sleep until a whole chunk is wanted, that is until the log's
                    // end reaches `from + chunk - ahead` (above the end now: `from + chunk > end + ahead`).
                    // A roll into a new segment passes this position too.
                    state.preparerWakeAt = min(active.end, from + Self.prepareChunkBytes - ahead)
                } else {
                    state.preparerWakeAt = active.end
                }
            } else if state.segments.isEmpty {
                state.preparerWakeAt = 0  // the first append creates the first segment
            }
            // Read under the store's lock: a wake after this point is not lost.
            let wakes = prepareLock.withLock { prepareWakeSequence }
            lock.unlock()
            guard let job else {
                // Idle: an append that reaches `preparerWakeAt` wakes it; the timeout only covers a
                // pause after a failed write and a store that stopped growing while paused.
                prepareLock.withLock { if prepareWakeSequence == wakes { prepareLock.wait(timeoutNanoseconds: 1_000_000_000) } }
                continue
            }
            if options.prepareClaimDelayMicroseconds > 0 { usleep(options.prepareClaimDelayMicroseconds) }
            var wrote = true
            // A descriptor of its own (the path names the claimed segment: truncation and reset wait
            // for the claim). The kernel reports a writeback error once to each open file, so an
            // error this descriptor's fdatasync takes is still reported to the log's own descriptor:
            // the group commit's next fdatasync fails too, and nothing is acknowledged on a sync that
            // hid it. (With one shared descriptor, one of the two would return 0.)
            var fd: Int32 = -1
            do {
                fd = try FileIO.open(job.segment.path, flags: O_WRONLY)
                let n = Int(job.to - job.from)
                let (path, offset) = (job.segment.path, job.from - job.segment.start)
                try storageCall { try zeros.withUnsafeBytes { b in try FileIO.pwriteAll(fd, UnsafeRawBufferPointer(rebasing: b[0..<n]), at: offset, path: path) } }
            } catch {
                // ENOSPC or another write error: zeros are only an optimization. Some of them may be
                // down; the log writes over them. Try again later.
                wrote = false
                pausedUntilMs = monotonicMilliseconds() + 1_000
            }
            // Writers waiting for this chunk hold the store's lock: release them first.
            prepareLock.withLock {
                preparingChunk = nil
                prepareLock.broadcast()
            }
            lock.withLock {
                // A truncation or reset since the claim may have cut these zeros off again.
                if wrote, state.epoch == job.epoch, state.segments.last === job.segment { state.preparedEnd = max(state.preparedEnd, job.to) }
                if !wrote { state.statistics.prepareFailures += 1 }
            }
            defer { if fd >= 0 { _ = Glibc.close(fd) } }
            guard wrote else { continue }
            do {
                try FileIO.fdatasync(fd, path: job.segment.path)
                lock.withLock {
                    state.statistics.preparedBytes += job.to - job.from
                    state.statistics.prepareSyncs += 1
                }
            } catch {
                // The sync covered the log's bytes in this file too: stop serving, as the flusher
                // does (the log's descriptor reports the same error to its next sync).
                lock.withLock {
                    if state.failure == nil {
                        state.failure = error.description
                        failWaiters(error)
                    }
                }
            }
        }
    }

    /// Wakes the idle preparer, if there is one (store's lock held; once per chunk of log written).
    func wakePreparer() {
        guard options.prepareAheadBytes > 0 else { return }
        state.preparerWakeAt = UInt64.max
        prepareLock.withLock {
            prepareWakeSequence &+= 1
            prepareLock.broadcast()
        }
    }

    /// Waits, holding the store's lock, until no chunk of zeros is being written over `[from, to)`
    /// of `segment` (the preparer needs only `prepareLock` to finish a chunk).
    func waitForPreparer(overlapping from: UInt64, _ to: UInt64, in segment: SegmentFile) {
        guard options.prepareAheadBytes > 0 else { return }  // every write passes here
        prepareLock.lock()
        while let p = preparingChunk, p.segment == ObjectIdentifier(segment), p.range.overlaps(from..<to) {
            prepareLock.wait(timeoutNanoseconds: 10_000_000)
        }
        prepareLock.unlock()
    }

    /// Waits, holding the store's lock, until no chunk of zeros is being written (before files are cut).
    func waitForPreparer() {
        guard options.prepareAheadBytes > 0 else { return }
        prepareLock.lock()
        while preparingChunk != nil { prepareLock.wait(timeoutNanoseconds: 10_000_000) }
        prepareLock.unlock()
    }
}
