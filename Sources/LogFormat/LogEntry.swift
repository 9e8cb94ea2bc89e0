/// One decoded, verified log entry.
public struct LogEntry: Equatable, Sendable {
    public var header: EntryHeader
    public var body: [UInt8]

    public var index: LogIndex { header.index }
    public var term: Term { header.term }
    public var position: LogPosition { header.position }
    public var kind: EntryKind { header.kind }

    public init(header: EntryHeader, body: [UInt8]) {
        precondition(header.bodyByteCount == body.count, "header body size differs from body")
        self.header = header
        self.body = body
    }

    /// The entry's bytes as stored: header then body.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(header.totalByteCount)
        header.encode(into: &out)
        out.append(contentsOf: body)
        return out
    }
}

/// Encodes and verifies whole entries.
public enum LogEntryCodec {
    /// The chain CRC over raw header bytes (`bytes` holds at least the 48 header bytes).
    @inlinable
    public static func chainCRC(previous: UInt32, headerBytes bytes: UnsafeRawBufferPointer) -> UInt32 {
        precondition(bytes.count >= EntryHeader.byteCount, "chain CRC needs a whole header")
        var c = withUnsafeBytes(of: previous.bigEndian) { CRC32C.update(0, $0) }
        c = CRC32C.update(c, UnsafeRawBufferPointer(rebasing: bytes[0..<36]))
        return CRC32C.update(c, UnsafeRawBufferPointer(rebasing: bytes[40..<48]))
    }

    /// Appends a complete entry (header with both CRCs computed, then body) to `out` and returns its
    /// header. `previousChainCRC` is the chain CRC of the entry before it (0 for the first entry).
    @discardableResult
    public static func append(
        kind: EntryKind, index: LogIndex, term: Term, position: LogPosition, channel: UInt32 = 0,
        body: UnsafeRawBufferPointer, previousChainCRC: UInt32, to out: inout [UInt8]
    ) -> EntryHeader {
        append(kind: kind, index: index, term: term, position: position, channel: channel, body: body,
               previousChainCRC: previousChainCRC, to: &out, patchingBody: { _ in })
    }

    /// `append`, with `patch` applied to the body where it lands in `out`, before the body's CRC is
    /// computed (the log's append hook): the caller's body is not copied to be patched. The patch
    /// cannot change the body's length. No temporary buffer: the header is written with zero CRCs
    /// and they are filled in place.
    @discardableResult
    public static func append(
        kind: EntryKind, index: LogIndex, term: Term, position: LogPosition, channel: UInt32 = 0,
        body: UnsafeRawBufferPointer, previousChainCRC: UInt32, to out: inout [UInt8],
        patchingBody patch: (UnsafeMutableRawBufferPointer) -> Void
    ) -> EntryHeader {
        precondition(body.count <= EntryHeader.bodyBytesMax, "body larger than an entry can carry")
        var header = EntryHeader(
            kind: kind, index: index, term: term, position: position, channel: channel,
            chainCRC: 0, bodyCRC: 0, bodyByteCount: body.count)
        // The header with both CRCs zero, the body after it; then the body is patched in place and
        // the CRCs (body, then the chain's, which covers the body CRC) are written into the header.
        let start = out.count
        header.encode(into: &out)
        out.append(contentsOf: body)
        let bodyStart = start + EntryHeader.byteCount
        header.bodyCRC = out.withUnsafeMutableBytes { raw in
            let b = UnsafeMutableRawBufferPointer(rebasing: raw[bodyStart..<(bodyStart + body.count)])
            patch(b)
            return CRC32C.checksum(UnsafeRawBufferPointer(b))
        }
        out.storeBigEndian(header.bodyCRC, at: start + 40)
        header.chainCRC = out.withUnsafeBytes {
            chainCRC(previous: previousChainCRC, headerBytes: UnsafeRawBufferPointer(rebasing: $0[start..<bodyStart]))
        }
        out.storeBigEndian(header.chainCRC, at: start + 36)
        return header
    }

    /// Convenience for tests and small callers.
    public static func encode(
        kind: EntryKind = .normal, index: LogIndex, term: Term, position: LogPosition,
        body: [UInt8], previousChainCRC: UInt32
    ) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(EntryHeader.byteCount + body.count)
        body.withUnsafeBytes {
            _ = append(
                kind: kind, index: index, term: term, position: position, body: $0,
                previousChainCRC: previousChainCRC, to: &out)
        }
        return out
    }

    /// Throws unless `body` matches the header's body size and body CRC.
    public static func verifyBody(_ header: EntryHeader, _ body: UnsafeRawBufferPointer) throws(LogFormatError) {
        guard body.count == header.bodyByteCount else {
            throw .sizeMismatch(what: "entry \(header.index) body", detail: "\(body.count) bytes, header says \(header.bodyByteCount)")
        }
        let computed = CRC32C.checksum(body)
        guard computed == header.bodyCRC else {
            throw .checksumMismatch(what: "entry \(header.index) body", stored: header.bodyCRC, computed: computed)
        }
    }

    /// Decodes and fully verifies one entry at the start of `bytes`: structure, the chain CRC
    /// against `previousChainCRC` (skip with nil when the predecessor is unknown), and the body CRC.
    public static func decode(
        _ bytes: UnsafeRawBufferPointer, previousChainCRC: UInt32?
    ) throws(LogFormatError) -> LogEntry {
        let header = try EntryHeader.decode(bytes)
        guard bytes.count >= header.totalByteCount else {
            throw .truncated(what: "entry \(header.index)", needed: header.totalByteCount, available: bytes.count)
        }
        if let previousChainCRC {
            let computed = chainCRC(previous: previousChainCRC, headerBytes: bytes)
            guard computed == header.chainCRC else {
                throw .checksumMismatch(what: "entry \(header.index) header (chain CRC)", stored: header.chainCRC, computed: computed)
            }
        }
        let body = UnsafeRawBufferPointer(rebasing: bytes[EntryHeader.byteCount..<header.totalByteCount])
        try verifyBody(header, body)
        return LogEntry(header: header, body: Array(body))
    }
}

/// DLedger's 32-byte index record, one per entry at byte `index * 32` of the index files:
/// magic(4) pos(8) size(4) index(8) term(8). It can always be rebuilt from the data files.
public struct IndexRecord: Equatable, Sendable {
    public static let byteCount = 32

    public var kind: EntryKind
    public var position: LogPosition
    public var entryByteCount: Int
    public var index: LogIndex
    public var term: Term

    public init(kind: EntryKind, position: LogPosition, entryByteCount: Int, index: LogIndex, term: Term) {
        self.kind = kind
        self.position = position
        self.entryByteCount = entryByteCount
        self.index = index
        self.term = term
    }

    public init(_ header: EntryHeader) {
        self.init(
            kind: header.kind, position: header.position, entryByteCount: header.totalByteCount,
            index: header.index, term: header.term)
    }

    public func encode(into out: inout [UInt8]) {
        out.appendBigEndian(kind.rawValue)
        out.appendBigEndian(position.rawValue)
        out.appendBigEndian(UInt32(entryByteCount))
        out.appendBigEndian(index.rawValue)
        out.appendBigEndian(term.rawValue)
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(LogFormatError) -> IndexRecord {
        guard bytes.count >= byteCount else {
            throw .truncated(what: "index record", needed: byteCount, available: bytes.count)
        }
        let r = BigEndianReader(bytes)
        guard let kind = EntryKind(rawValue: r.u32(0)) else { throw .badMagic(what: "index record", found: r.u32(0)) }
        let size = Int32(bitPattern: r.u32(12))
        guard size >= Int32(EntryHeader.byteCount) else {
            throw .fieldOutOfRange(field: "index record size", value: Int64(size), allowed: ">= 48")
        }
        return IndexRecord(
            kind: kind, position: LogPosition(r.u64(4)), entryByteCount: Int(size),
            index: LogIndex(r.u64(16)), term: Term(r.u64(24)))
    }

    /// Whether this record describes `header`.
    public func matches(_ header: EntryHeader) -> Bool {
        kind == header.kind && position == header.position && entryByteCount == header.totalByteCount
            && index == header.index && term == header.term
    }
}
