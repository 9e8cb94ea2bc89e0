import LogFormat

extension LogStore {
    /// Reads entries from `index` on: at least one (when `index` is in the log), then as many more as
    /// fit in `maxBytes` (counting headers), stopping at the end of the log. Every entry returned was
    /// verified (position, index, chain CRC from the second entry on, body CRC): a corrupt entry is
    /// never served; it stops the store and throws `.corrupt` naming file and position.
    public func read(from index: LogIndex, maxBytes: Int) throws(StorageError) -> [LogEntry] {
        let (segments, indexFiles, first, next, written, epoch) = try lock.withLock { () throws(StorageError) in
            if let failure = state.failure { throw StorageError.failed(failure) }
            try drainPendingOrFail()
            return (state.segments, state.index, state.firstIndex, state.nextIndex, state.written.endPosition, state.epoch)
        }
        guard index >= first, index < next else {
            throw .outOfRange(requested: index.rawValue, first: first.rawValue, last: next > first ? next.rawValue - 1 : nil)
        }
        do {
            return try readVerified(from: index, maxBytes: maxBytes, segments: segments, index: indexFiles, next: next, written: written)
        } catch let error {
            // A truncation or prefix deletion that raced with this read explains a mismatch; report it
            // as a range error rather than corruption.
            let (changed, nowFirst, nowNext) = lock.withLock { (state.epoch != epoch || state.firstIndex != first, state.firstIndex, state.nextIndex) }
            if changed {
                throw .outOfRange(requested: index.rawValue, first: nowFirst.rawValue, last: nowNext > nowFirst ? nowNext.rawValue - 1 : nil)
            }
            if case .corrupt = error {
                lock.withLock {
                    state.failure = error.description
                    failWaiters(error)
                }
            }
            throw error
        }
    }

    /// The term the index record of `index` gives, unverified (nil when there is no sound record).
    /// Index records are a cache that can be wrong; a caller must check what it concludes from them
    /// with `term(at:)`. Reads 32 bytes instead of an entry: StoreLog finds the term runs of a long
    /// log with it at start.
    public func indexedTerm(at index: LogIndex) -> Term? {
        let (indexFiles, first, next) = lock.withLock { (state.index, state.firstIndex, state.nextIndex) }
        guard index >= first, index < next, let record = try? indexFiles.record(index), record.index == index else { return nil }
        return record.term
    }

    /// Where entry `index` starts: its index record when the record is sound and matches the header it
    /// points to; otherwise found by scanning the segment that must hold it (the index is only a cache
    /// of the data). Returns whether the record needs rewriting.
    private func locate(
        _ index: LogIndex, segments: [SegmentFile], index indexFiles: IndexFiles, written: UInt64
    ) throws(StorageError) -> (found: (segment: Int, position: UInt64, entryByteCount: Int), repaired: Bool) {
        if let record = try indexFiles.record(index), record.index == index,
            let k = segments.firstIndex(where: { $0.contains(record.position.rawValue) })
        {
            var reader = SegmentReader(segment: segments[k], limit: written, chunkBytes: 4096)
            if case let .entry(h) = try reader.item(at: record.position.rawValue), record.matches(h) {
                return ((k, record.position.rawValue, record.entryByteCount), false)
            }
        }
        // The last segment whose first entry is at or before `index`.
        var k: Int? = nil
        for (i, segment) in segments.enumerated() {
            var reader = SegmentReader(segment: segment, limit: written, chunkBytes: 4096)
            guard case let .entry(h) = try reader.item(at: segment.start), h.position.rawValue == segment.start else { continue }
            if h.index <= index { k = i } else { break }
        }
        if let k {
            let segment = segments[k]
            var reader = SegmentReader(segment: segment, limit: written, chunkBytes: 1 << 20)
            var position = segment.start
            while case let .entry(h) = try reader.item(at: position), h.position.rawValue == position {
                if h.index == index { return ((k, position, h.totalByteCount), true) }
                guard h.index < index else { break }
                position += UInt64(h.totalByteCount)
            }
        }
        throw .corrupt(file: indexDirectory, position: IndexFiles.offset(of: index), detail: "entry \(index) is neither where its index record says nor found by scanning its segment\(Self.rebuildIndexHint)")
    }

    /// The index is a cache of the data: an operator can always have it rebuilt.
    static let rebuildIndexHint = "; if the data is intact the index can be rebuilt: stop the broker, remove the store's index/ directory and checkpoint file, and start it again"

    /// The term of the entry at `index`, read from its index record and checked against its header.
    public func term(at index: LogIndex) throws(StorageError) -> Term {
        guard let entry = try read(from: index, maxBytes: 0).first else {
            throw .outOfRange(requested: index.rawValue, first: firstIndex.rawValue, last: lastIndex?.rawValue)
        }
        return entry.term
    }

    private func readVerified(
        from index: LogIndex, maxBytes: Int, segments: [SegmentFile], index indexFiles: IndexFiles, next: LogIndex, written: UInt64
    ) throws(StorageError) -> [LogEntry] {
        let (found, repaired) = try locate(index, segments: segments, index: indexFiles, written: written)
        var position = found.position
        var k = found.segment
        var entries: [LogEntry] = []
        var bytes = 0
        var expected = index
        var previousChain: UInt32? = nil
        defer {
            // An index record that had to be found by scanning is rewritten once the entry verified.
            if repaired, let first = entries.first {
                var record: [UInt8] = []
                IndexRecord(first.header).encode(into: &record)
                lock.withLock {
                    if state.nextIndex > index, state.firstIndex <= index {
                        _ = try? state.index.write(record, firstIndex: index)
                        state.statistics.indexRecordsRepaired += 1
                    }
                }
            }
        }
        let chunk = min(max(maxBytes, found.entryByteCount) + EntryHeader.byteCount, 4 << 20)
        var reader = SegmentReader(segment: segments[k], limit: written, chunkBytes: chunk)
        while expected < next && (entries.isEmpty || bytes < maxBytes) {
            let segment = segments[k]
            switch try reader.item(at: position) {
            case let .entry(header):
                if let why = try reader.verify(header, at: position, expectedIndex: expected, previousChainCRC: previousChain) {
                    throw .corrupt(file: segment.path, position: position, detail: why)
                }
                if !entries.isEmpty && bytes + header.totalByteCount > maxBytes { return entries }
                entries.append(LogEntry(header: header, body: reader.body(of: header)))
                bytes += header.totalByteCount
                position += UInt64(header.totalByteCount)
                expected = expected.next
                previousChain = header.chainCRC
            case let .blank(padding) where UInt64(exactly: padding) == segment.end - position && k + 1 < segments.count:
                k += 1
                position = segments[k].start
                reader = SegmentReader(segment: segments[k], limit: written, chunkBytes: chunk)
            case .blank, .end, .invalid:
                throw .corrupt(file: segment.path, position: position, detail: "expected entry \(expected) here")
            }
        }
        return entries
    }
}

extension LogStore {
    /// `count` bytes at `position` inside one entry's body (a message record a consume queue points
    /// to), read without verifying the entry: the caller asks for what its own index says is there.
    /// Throws `.outOfRange` when the position is before the first segment (deleted by retention) or
    /// past what was written, or the range crosses a segment's end.
    ///
    /// Under SYNC_FLUSH the newest entries may still wait in the write-behind buffer (until their
    /// group's sync hands them to the kernel), though a quorum of the other members may have made
    /// them committed, dispatched and pullable already: those bytes come from the buffer, copied
    /// under the store lock. Read from the file they would be the zeros of prepared space (or past
    /// the file's end).
    public func readBytes(at position: UInt64, count: Int) throws(StorageError) -> [UInt8] {
        let (sum, overflow) = position.addingReportingOverflow(UInt64(max(count, 0)))
        guard !overflow else { throw .outOfRange(requested: position, first: 0, last: nil) }
        let end = sum
        let (segments, written, fileEnd, buffered) = try lock.withLock { () throws(StorageError) in
            if let failure = state.failure { throw StorageError.failed(failure) }
            let fileEnd = state.pending.isEmpty ? state.written.endPosition : state.pendingStart
            var buffered: [UInt8] = []
            if count > 0, end > fileEnd, end <= state.written.endPosition, !state.pending.isEmpty {
                // The buffer is the log's tail: [pendingStart, written end). Anything else would
                // be a defect; refused rather than read as zeros.
                guard end - state.pendingStart <= UInt64(state.pending.count) else {
                    throw StorageError.outOfRange(requested: position, first: state.pendingStart, last: state.written.endPosition - 1)
                }
                let from = Int(max(position, fileEnd) - state.pendingStart)
                buffered = Array(state.pending[from..<Int(end - state.pendingStart)])
            }
            return (state.segments, state.written.endPosition, fileEnd, buffered)
        }
        guard count >= 0, end <= written,
              let segment = segments.last(where: { $0.start <= position }), end <= segment.end
        else {
            throw .outOfRange(requested: position, first: segments.first?.start ?? written, last: written > 0 ? written - 1 : nil)
        }
        // From the file: what lies before the write-behind buffer.
        let fromFile = buffered.isEmpty ? count : Int(fileEnd > position ? fileEnd - position : 0)
        var out = [UInt8](repeating: 0, count: fromFile)
        out.reserveCapacity(count)
        var done = 0
        while done < fromFile {
            let at = done
            let n = try storageCall { try out.withUnsafeMutableBytes { b in
                try segment.read(into: UnsafeMutableRawBufferPointer(rebasing: b[at...]), at: position + UInt64(at))
            } }
            guard n > 0 else { throw .outOfRange(requested: position + UInt64(done), first: segments.first?.start ?? 0, last: written - 1) }
            done += n
        }
        out.append(contentsOf: buffered)
        return out
    }
}
