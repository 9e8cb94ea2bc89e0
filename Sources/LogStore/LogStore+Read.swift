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
        guard let record = try indexFiles.record(index) else {
            throw .corrupt(file: indexDirectory, position: IndexFiles.offset(of: index), detail: "index record of entry \(index) is missing or invalid\(Self.rebuildIndexHint)")
        }
        guard record.index == index else {
            throw .corrupt(file: indexDirectory, position: IndexFiles.offset(of: index), detail: "index record at entry \(index)'s slot names entry \(record.index)\(Self.rebuildIndexHint)")
        }
        var position = record.position.rawValue
        guard var k = segments.firstIndex(where: { $0.contains(position) }) else {
            throw .corrupt(file: indexDirectory, position: IndexFiles.offset(of: index), detail: "index record of entry \(index) points to position \(position), outside every segment\(Self.rebuildIndexHint)")
        }
        var entries: [LogEntry] = []
        var bytes = 0
        var expected = index
        var previousChain: UInt32? = nil
        let chunk = min(max(maxBytes, record.entryByteCount) + EntryHeader.byteCount, 4 << 20)
        var reader = SegmentReader(segment: segments[k], limit: written, chunkBytes: chunk)
        while expected < next && (entries.isEmpty || bytes < maxBytes) {
            let segment = segments[k]
            switch try reader.item(at: position) {
            case let .entry(header):
                if let why = try reader.verify(header, at: position, expectedIndex: expected, previousChainCRC: previousChain) {
                    throw .corrupt(file: segment.path, position: position, detail: why)
                }
                if entries.isEmpty && !record.matches(header) {
                    throw .corrupt(file: segment.path, position: position, detail: "entry \(index) differs from its index record\(Self.rebuildIndexHint)")
                }
                if !entries.isEmpty && bytes + header.totalByteCount > maxBytes { return entries }
                entries.append(LogEntry(header: header, body: reader.body(of: header)))
                bytes += header.totalByteCount
                position += UInt64(header.totalByteCount)
                expected = expected.next
                previousChain = header.chainCRC
            case let .blank(padding) where UInt64(padding) == segment.end - position && k + 1 < segments.count:
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
