import Glibc
import LogFormat

extension LogStore {
    /// Removes every entry after `index` (Raft: the follower's log conflicts with the leader's from
    /// `index + 1`). Durable when it returns: the cut segment is fdatasync'ed, later segment files are
    /// unlinked, and the checkpoint is rewritten, so a crash cannot resurrect removed entries.
    /// Appends waiting for durability of removed entries fail with `.truncatedBeforeDurable`.
    /// `index` may be `firstIndex - 1` (empty the log); it may not be lower.
    public func truncateSuffix(after index: LogIndex?) throws(StorageError) {
        checkpointLock.lock()
        defer { checkpointLock.unlock() }
        lock.lock()
        defer { lock.unlock() }
        waitForPreparer()
        if state.closing { throw .closed }
        if let failure = state.failure { throw .failed(failure) }
        try drainPendingOrFail()
        let keepNext = index.map { $0.next } ?? state.firstIndex
        guard keepNext >= state.firstIndex else {
            throw .invalidArgument("cannot truncate after \(index.map(String.init(describing:)) ?? "nothing"): the log starts at \(state.firstIndex)")
        }
        guard keepNext < state.nextIndex else { return }

        // Where the first removed entry starts, and the point just before it.
        guard let record = try state.index.record(keepNext), record.index == keepNext else {
            throw .corrupt(file: indexDirectory, position: IndexFiles.offset(of: keepNext), detail: "index record of entry \(keepNext) is missing")
        }
        let cut = record.position.rawValue
        state.verifyLimit = min(state.verifyLimit, cut)
        var point = DurablePoint(endPosition: cut, nextIndex: keepNext, lastTerm: Term(0), lastChainCRC: 0)
        if keepNext > state.firstIndex {
            let previous = try headerUnderLock(of: LogIndex(keepNext.rawValue - 1))
            point.lastTerm = previous.term
            point.lastChainCRC = previous.chainCRC
        } else if let base = state.base {
            point.lastTerm = base.lastTerm
            point.lastChainCRC = base.lastChainCRC
        }

        do {
            guard let k = state.segments.firstIndex(where: { $0.contains(cut) }) else {
                throw StorageError.corrupt(file: dataDirectory, position: cut, detail: "no segment holds position \(cut)")
            }
            // Crash-safe order. A crash anywhere below leaves a log that opens: the removed entries
            // may still be there (the caller never heard that the truncation finished), never a hole.
            // 1. A checkpoint past the cut would make recovery call the shorter log a loss of durable
            //    entries: move it down to the cut first (everything before the cut is durable when the
            //    checkpoint is past it).
            if let checkpoint = state.lastCheckpoint, checkpoint.endPosition > cut {
                try FileIO.writeAtomically(CheckpointFile.encode(point), to: checkpointPath)
                state.lastCheckpoint = point
            }
            // 2. Later segments go first, newest first, so what remains is always a contiguous prefix
            //    ending in a sealed segment.
            let doomed = state.segments[(k + 1)...]
            for s in doomed.reversed() { try FileIO.unlink(s.path) }
            if !doomed.isEmpty { try FileIO.fsyncDirectory(dataDirectory) }
            // 3. Then the cut itself.
            let segment = state.segments[k]
            try segment.truncate(toLocal: cut - segment.start)
            try segment.sync()
            state.segments.removeSubrange((k + 1)...)
            try state.index.truncate(from: keepNext)
            let remaining = state.index.files
            state.unsyncedIndexFiles.removeAll { f in !remaining.contains { $0 === f } }
        } catch let error as StorageError {
            state.failure = error.description
            failWaiters(error)
            throw error
        } catch {
            preconditionFailure("unexpected error type: \(error)")
        }
        state.epoch &+= 1
        wakePreparer()
        state.written = point
        state.nextIndex = keepNext
        state.durable = point
        state.preparedEnd = min(state.preparedEnd, cut)
        state.unsyncedSegment = nil
        let doomedWaiters = state.waiters.filter { $0.target > cut }
        state.waiters.removeAll { $0.target > cut }
        for w in doomedWaiters { w.continuation.resume(throwing: StorageError.truncatedBeforeDurable(position: cut)) }
        // Everything before `cut` is durable now (sealed segments were synced when sealed, the cut
        // one just now), so the checkpoint can move here.
        lock.unlock()
        defer { lock.lock() }
        try writeCheckpoint(point, ifEpoch: nil)
    }

    var basePath: String { options.directory + "/base" }

    /// Empties the log and makes it start at `base`: the next entry gets index `base.nextIndex`, goes
    /// to position `base.position` (the first segment starts there), and chains from
    /// `base.lastChainCRC`. For a Raft follower whose log ends before the leader's first entry (the
    /// leader's retention deleted what it lacks): it takes the leader's base and continues the
    /// leader's log byte for byte. Durable when it returns. Appends waiting for durability fail with
    /// `.truncatedBeforeDurable`.
    ///
    /// Crash-safe order: the checkpoint goes first (a store without one is scanned in full), then the
    /// segments newest first and the index files, then the base and a checkpoint at it. A crash before
    /// the end leaves a shorter log (possibly empty at the configured first index), never a broken one.
    public func reset(to base: LogBase) throws(StorageError) {
        checkpointLock.lock()
        defer { checkpointLock.unlock() }
        lock.lock()
        defer { lock.unlock() }
        waitForPreparer()
        if state.closing { throw .closed }
        if let failure = state.failure { throw .failed(failure) }
        try drainPendingOrFail()
        let point = base.point
        state.verifyLimit = 0
        do {
            try FileIO.unlink(checkpointPath)
            try FileIO.fsyncDirectory(options.directory)
            state.lastCheckpoint = nil
            for s in state.segments.reversed() { try FileIO.unlink(s.path) }
            try FileIO.fsyncDirectory(dataDirectory)
            state.segments.removeAll()
            try state.index.removeAll()
            state.unsyncedIndexFiles.removeAll()
            try FileIO.writeAtomically(CheckpointFile.encode(point), to: basePath)
            try FileIO.writeAtomically(CheckpointFile.encode(point), to: checkpointPath)
            state.lastCheckpoint = point
        } catch {
            state.failure = error.description
            failWaiters(error)
            throw error
        }
        state.epoch &+= 1
        wakePreparer()
        state.firstIndex = base.nextIndex
        state.nextIndex = base.nextIndex
        state.base = point
        state.written = point
        state.durable = point
        state.preparedEnd = 0
        state.unsyncedSegment = nil
        let doomed = state.waiters
        state.waiters.removeAll()
        for w in doomed { w.continuation.resume(throwing: StorageError.truncatedBeforeDurable(position: base.position.rawValue)) }
    }

    /// The verified header of entry `index`, read while holding the lock.
    func headerUnderLock(of index: LogIndex) throws(StorageError) -> EntryHeader {
        guard let record = try state.index.record(index), record.index == index,
            let segment = state.segments.first(where: { $0.contains(record.position.rawValue) })
        else {
            throw .corrupt(file: indexDirectory, position: IndexFiles.offset(of: index), detail: "index record of entry \(index) is missing or points outside the log")
        }
        var reader = SegmentReader(segment: segment, limit: state.written.endPosition, chunkBytes: record.entryByteCount)
        guard case let .entry(header) = try reader.item(at: record.position.rawValue) else {
            throw .corrupt(file: segment.path, position: record.position.rawValue, detail: "no entry header where entry \(index) should be")
        }
        if let why = try reader.verify(header, at: record.position.rawValue, expectedIndex: index, previousChainCRC: nil) {
            throw .corrupt(file: segment.path, position: record.position.rawValue, detail: why)
        }
        return header
    }

    /// Deletes whole segments whose entries all lie before `index` (retention; never the segment
    /// being written). Returns how many segments were removed. `firstIndex` afterwards is the first
    /// entry of the first remaining segment, which may be below `index`.
    @discardableResult
    public func deletePrefix(before index: LogIndex) throws(StorageError) -> Int {
        try deleteLeadingSegments { start, nextSegmentFirstIndex in nextSegmentFirstIndex <= index }
    }

    /// Removes leading segments while `shouldDelete(segmentStart, firstIndexOfNextSegment)` says so,
    /// stopping at the first it declines and always keeping the last segment.
    func deleteLeadingSegments(_ shouldDelete: (UInt64, LogIndex) -> Bool) throws(StorageError) -> Int {
        lock.lock()
        defer { lock.unlock() }
        if let failure = state.failure { throw .failed(failure) }
        try drainPendingOrFail()
        var removed = 0
        while state.segments.count >= 2 {
            let victim = state.segments[0]
            let successor = state.segments[1]
            var reader = SegmentReader(segment: successor, limit: state.written.endPosition, chunkBytes: 4096)
            guard case let .entry(h) = try reader.item(at: successor.start), h.position.rawValue == successor.start else {
                break  // the successor holds no entry yet: keep the victim, it holds the last entries
            }
            guard shouldDelete(victim.start, h.index) else { break }
            // What will precede the new first entry. Both bases are on disk while the victim goes, so
            // whether or not a crash lets its unlink survive, recovery finds the one that names the
            // index the log starts at; then the new one alone.
            let last = try headerUnderLock(of: LogIndex(h.index.rawValue - 1))
            let base = DurablePoint(endPosition: successor.start, nextIndex: h.index, lastTerm: last.term, lastChainCRC: last.chainCRC)
            try FileIO.writeAtomically(CheckpointFile.encode(base) + (state.base.map(CheckpointFile.encode) ?? []), to: basePath)
            try FileIO.unlink(victim.path)
            try FileIO.fsyncDirectory(dataDirectory)
            try FileIO.writeAtomically(CheckpointFile.encode(base), to: basePath)
            state.segments.removeFirst()
            state.firstIndex = h.index
            state.base = base
            removed += 1
        }
        if removed > 0 {
            try FileIO.fsyncDirectory(dataDirectory)
            let first = state.firstIndex
            try state.index.deleteBefore(first)
        }
        return removed
    }
}
