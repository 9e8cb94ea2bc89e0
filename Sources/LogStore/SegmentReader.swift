import LogFormat

/// Reads entries out of one segment through a reusable buffer: one `pread` per chunk, not per entry.
struct SegmentReader {
    enum Item {
        /// A structurally valid header and where its body lies in the buffer. Checksums and
        /// continuity are the caller's to check (`verify`).
        case entry(EntryHeader)
        /// A blank record of this many bytes (the segment's end filler).
        case blank(Int)
        /// Fewer bytes than a header remain before `limit` (the clean end of a growing file, or a torn
        /// header).
        case end(availableBytes: Int)
        /// Bytes that are neither an entry header nor a blank record.
        case invalid(String)
    }

    let segment: SegmentFile
    /// Bytes past this absolute position are not read (the end of the written log for readers, the
    /// segment's end for recovery).
    let limit: UInt64
    private var buffer: [UInt8]
    private var bufferStart: UInt64 = 0
    private var bufferCount = 0
    private let chunkBytes: Int

    init(segment: SegmentFile, limit: UInt64, chunkBytes: Int) {
        self.segment = segment
        self.limit = min(limit, segment.end)
        self.chunkBytes = max(chunkBytes, 4096)
        self.buffer = []
    }

    /// Makes `[position, position + count)` available; returns how many of those bytes exist.
    mutating func load(_ position: UInt64, _ count: Int) throws(StorageError) -> Int {
        let wanted = Int(min(UInt64(count), limit > position ? limit - position : 0))
        if position >= bufferStart && position + UInt64(wanted) <= bufferStart + UInt64(bufferCount) {
            return wanted
        }
        let size = Int(min(UInt64(max(wanted, chunkBytes)), limit > position ? limit - position : 0))
        if buffer.count < size { buffer = [UInt8](repeating: 0, count: size) }
        let n = try storageCall {
            try buffer.withUnsafeMutableBytes { b in try segment.read(into: UnsafeMutableRawBufferPointer(rebasing: b[0..<size]), at: position) }
        }
        bufferStart = position
        bufferCount = n
        return min(n, wanted)
    }

    /// Calls `body` with the loaded bytes `[position, position + count)`; `load` must have returned
    /// at least `count` for them.
    func withBytes<T>(_ position: UInt64, _ count: Int, _ body: (UnsafeRawBufferPointer) throws(LogFormatError) -> T) throws(LogFormatError) -> T {
        precondition(position >= bufferStart && position + UInt64(count) <= bufferStart + UInt64(bufferCount), "bytes not loaded")
        let from = Int(position - bufferStart)
        return try formatCall { try buffer.withUnsafeBytes { b in try body(UnsafeRawBufferPointer(rebasing: b[from..<(from + count)])) } }
    }

    /// What lies at `position`.
    mutating func item(at position: UInt64) throws(StorageError) -> Item {
        let available = try load(position, EntryHeader.byteCount)
        if available >= BlankRecord.headerByteCount {
            let padding = try? withBytes(position, BlankRecord.headerByteCount) { b throws(LogFormatError) in BlankRecord.paddingByteCount(b) }
            if let padding = padding ?? nil { return .blank(padding) }
        }
        guard available >= EntryHeader.byteCount else { return .end(availableBytes: available) }
        do {
            return .entry(try withBytes(position, EntryHeader.byteCount) { b throws(LogFormatError) in try EntryHeader.decode(b) })
        } catch {
            return .invalid(error.description)
        }
    }

    /// Full check of the entry whose header `item` returned: it sits where it says, has the expected
    /// index, chains from `previousChainCRC` (when known), and its body matches its CRC. Returns nil
    /// when valid, otherwise why not.
    mutating func verify(
        _ header: EntryHeader, at position: UInt64, expectedIndex: LogIndex?, previousChainCRC: UInt32?
    ) throws(StorageError) -> String? {
        guard header.position.rawValue == position else {
            return "entry header says pos \(header.position), found at \(position)"
        }
        if let expectedIndex, header.index != expectedIndex {
            return "entry index \(header.index), expected \(expectedIndex)"
        }
        // Found by FuzzRecovery: a huge index overflowed its index record's offset. An index past
        // IndexFiles.maxIndex (records beyond 2^63 bytes) cannot be stored, so it is no entry.
        guard header.index.rawValue <= IndexFiles.maxIndex else {
            return "entry index \(header.index) is beyond the largest a log can hold (\(IndexFiles.maxIndex))"
        }
        guard position + UInt64(header.totalByteCount) + UInt64(BlankRecord.headerByteCount) <= segment.end else {
            return "entry of \(header.totalByteCount) bytes does not fit in its segment"
        }
        let available = try load(position, header.totalByteCount)
        guard available == header.totalByteCount else {
            return "entry \(header.index) needs \(header.totalByteCount) bytes, only \(available) present"
        }
        do {
            try withBytes(position, header.totalByteCount) { b throws(LogFormatError) in
                if let previousChainCRC {
                    let computed = LogEntryCodec.chainCRC(previous: previousChainCRC, headerBytes: b)
                    guard computed == header.chainCRC else {
                        throw .checksumMismatch(what: "entry \(header.index) header (chain CRC)", stored: header.chainCRC, computed: computed)
                    }
                }
                try LogEntryCodec.verifyBody(header, UnsafeRawBufferPointer(rebasing: b[EntryHeader.byteCount...]))
            }
        } catch {
            return error.description
        }
        return nil
    }

    /// The body of an entry `verify` accepted.
    func body(of header: EntryHeader) -> [UInt8] {
        let p = header.position.rawValue + UInt64(EntryHeader.byteCount)
        precondition(p >= bufferStart && p + UInt64(header.bodyByteCount) <= bufferStart + UInt64(bufferCount), "body not loaded: verify it first")
        let from = Int(p - bufferStart)
        return Array(buffer[from..<(from + header.bodyByteCount)])
    }
}
