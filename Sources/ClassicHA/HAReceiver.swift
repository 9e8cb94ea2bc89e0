import LogFormat
import LogStore

/// The slave's side of the stream: it reassembles the master's bytes into entries, verifies each one
/// against its own log before writing it (position, index, term, chain CRC, body CRC), and writes
/// verified entries with the store's ordinary append, so the slave's segment files end up byte for
/// byte the master's. Anything that does not continue the slave's log is refused, never written.
///
/// Not thread-safe: one session owns it.
public final class HAReceiver {
    public let store: LogStore
    /// Called after the store was emptied to continue from the master's base (the consume queues
    /// must follow).
    private let onReset: (LogBase) throws -> Void
    /// Position of the next byte the master must send.
    public private(set) var streamEnd: UInt64
    private var buffer: [UInt8] = []
    /// Position of `buffer[0]`.
    private var bufferStart: UInt64
    /// A blank record's padding still to be skipped, up to this position.
    private var skipUntil: UInt64 = 0
    private var nextIndex: LogIndex
    private var lastTerm: Term
    private var lastChainCRC: UInt32
    /// The largest entry accepted (the slave's own limit plus its header).
    private let entryBytesMax: Int

    public init(store: LogStore, onReset: @escaping (LogBase) throws -> Void) {
        self.store = store
        self.onReset = onReset
        streamEnd = store.writePosition.rawValue
        bufferStart = streamEnd
        nextIndex = store.nextIndex
        lastTerm = store.lastTerm
        lastChainCRC = store.lastChainCRC
        entryBytesMax = store.options.entryBodyBytesMax + EntryHeader.byteCount
    }

    /// The master's base frame: only a slave without entries may start from it.
    public func receiveBase(_ base: LogBase) throws(HAError) {
        if store.lastIndex != nil || !buffer.isEmpty {
            throw .diverged("the master's log starts at index \(base.nextIndex) (position \(base.position)), after this slave's log ends before index \(nextIndex) (position \(streamEnd)); the slave cannot continue from the stream. Stop it, remove its storePathRootDir (commitlog, consumequeue, raft) and start it again to copy the master's log")
        }
        do {
            try store.reset(to: base)
            try onReset(base)
        } catch {
            throw .storage("resetting the empty log to the master's base \(base) failed: \(error)")
        }
        streamEnd = base.position.rawValue
        bufferStart = streamEnd
        nextIndex = base.nextIndex
        lastTerm = base.lastTerm
        lastChainCRC = base.lastChainCRC
    }

    /// What one transfer wrote.
    public struct Written: Sendable {
        public var lastIndex: LogIndex
        public var endPosition: LogPosition
    }

    /// Takes one transfer (`bytes` at `position`); returns what it wrote, nil when it completed no
    /// entry. Throws, writing nothing more, at the first byte that does not continue this log.
    public func receive(position: UInt64, _ bytes: [UInt8]) throws(HAError) -> Written? {
        guard position == streamEnd else {
            if position < streamEnd {
                throw .diverged("the master sent position \(position), but this slave's log already extends to \(streamEnd) (the master's log is shorter than the slave's: a master restored from an older copy, or another group's master)")
            }
            throw .diverged("the master sent position \(position), but this slave's log ends at \(streamEnd): the master is missing the bytes in between")
        }
        buffer.append(contentsOf: bytes)
        streamEnd += UInt64(bytes.count)
        var cursor = 0
        var position = bufferStart
        var batch: [(EntryHeader, Range<Int>)] = []
        var written: Written?
        defer {
            buffer.removeFirst(cursor)
            bufferStart = position
        }
        func flush() throws(HAError) {
            guard let first = batch.first else { return }
            let entries = batch.map { EntryToAppend(kind: $0.0.kind, term: $0.0.term, body: Array(buffer[$0.1])) }
            let result: AppendResult
            do {
                result = try store.write(entries, expectingFirstIndex: first.0.index)
            } catch {
                throw .storage("writing entries \(first.0.index)...: \(error)")
            }
            // The store placed them itself: a different segment size would put them elsewhere.
            for (k, (h, _)) in batch.enumerated() where result.positions[k] != h.position {
                try? store.truncateSuffix(after: first.0.index.rawValue > 0 ? LogIndex(first.0.index.rawValue - 1) : nil)
                throw .diverged("entry \(h.index) is at position \(h.position) on the master but would be at \(result.positions[k]) here: mappedFileSizeCommitLog must be the same on master and slave")
            }
            written = Written(lastIndex: result.lastIndex, endPosition: result.endPosition)
            batch.removeAll()
        }
        while true {
            if skipUntil > position {
                let n = Int(min(skipUntil - position, UInt64(buffer.count - cursor)))
                cursor += n
                position += UInt64(n)
                if position < skipUntil { break }
                continue
            }
            let remaining = buffer.count - cursor
            if remaining < BlankRecord.headerByteCount { break }
            let padding = buffer[cursor..<(cursor + BlankRecord.headerByteCount)].withUnsafeBytes { BlankRecord.paddingByteCount($0) }
            if let padding {
                guard padding >= BlankRecord.headerByteCount, padding <= entryBytesMax + BlankRecord.headerByteCount else {
                    throw .diverged("a blank record of \(padding) bytes at position \(position)")
                }
                try flush()
                skipUntil = position + UInt64(padding)
                continue
            }
            if remaining < EntryHeader.byteCount { break }
            let header: EntryHeader
            do {
                header = try buffer[cursor..<(cursor + EntryHeader.byteCount)].withUnsafeBytes { try EntryHeader.decode($0) }
            } catch {
                throw .diverged("no entry at position \(position): \(error)")
            }
            guard header.totalByteCount <= entryBytesMax else {
                throw .diverged("entry \(header.index) at position \(position) is \(header.totalByteCount) bytes, over this slave's limit of \(entryBytesMax)")
            }
            if remaining < header.totalByteCount { break }
            guard header.position.rawValue == position else {
                throw .diverged("the entry at stream position \(position) says it is at \(header.position)")
            }
            guard header.index == nextIndex else {
                throw .diverged("entry \(header.index) arrived where this slave's log continues with entry \(nextIndex)")
            }
            guard header.term >= lastTerm else {
                throw .diverged("entry \(header.index) has term \(header.term), below this slave's last term \(lastTerm)")
            }
            let range = cursor..<(cursor + header.totalByteCount)
            let chain = buffer[range].withUnsafeBytes { LogEntryCodec.chainCRC(previous: lastChainCRC, headerBytes: $0) }
            guard chain == header.chainCRC else {
                throw .diverged("entry \(header.index) does not chain to the entry before it in this slave's log (chain CRC \(header.chainCRC), expected \(chain)): the two logs have different histories")
            }
            do {
                try buffer[(cursor + EntryHeader.byteCount)..<range.upperBound].withUnsafeBytes { try LogEntryCodec.verifyBody(header, $0) }
            } catch {
                throw .diverged("entry \(header.index): \(error)")
            }
            batch.append((header, (cursor + EntryHeader.byteCount)..<range.upperBound))
            nextIndex = nextIndex.next
            lastTerm = header.term
            lastChainCRC = header.chainCRC
            cursor = range.upperBound
            position += UInt64(header.totalByteCount)
            if batch.count >= 1024 { try flush() }
        }
        try flush()
        return written
    }
}
