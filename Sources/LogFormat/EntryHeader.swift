/// What an entry carries (DLedger's magic values). Decoders accept exactly these.
public enum EntryKind: UInt32, Sendable, CaseIterable {
    /// A RocketMQ message record (or any opaque payload).
    case normal = 1
    /// An empty entry a new leader appends to commit its term (Raft thesis §6.4).
    case noop = 2
    /// A membership change.
    case config = 3
}

/// The 48-byte big-endian header in front of every log entry, DLedger's layout
/// (`DLedgerEntryCoder`) with both checksums computed:
///
/// | offset | bytes | field |
/// |---|---|---|
/// | 0 | 4 | magic (EntryKind) |
/// | 4 | 4 | size = 48 + body size |
/// | 8 | 8 | index |
/// | 16 | 8 | term |
/// | 24 | 8 | pos: absolute position of this header |
/// | 32 | 4 | channel (reserved, 0) |
/// | 36 | 4 | chain CRC: CRC32C(previous entry's chain CRC, bytes 0..<36, bytes 40..<48) |
/// | 40 | 4 | body CRC: CRC32C(body) |
/// | 44 | 4 | body size |
///
/// The chain CRC protects every header field and links the entry to its predecessor, so a stale
/// entry left behind by a truncation, or a header from another log, cannot pass for a successor.
public struct EntryHeader: Equatable, Sendable {
    public static let byteCount = 48
    /// Largest body an entry may carry. DLedger encodes into a 4 MiB buffer; RocketMQ's message limit
    /// (`maxMessageSize`) is checked above this layer. The header keeps sizes in signed 32-bit fields.
    public static let bodyBytesMax = Int(Int32.max) - byteCount

    public var kind: EntryKind
    public var index: LogIndex
    public var term: Term
    public var position: LogPosition
    public var channel: UInt32
    public var chainCRC: UInt32
    public var bodyCRC: UInt32
    public var bodyByteCount: Int

    /// Header plus body.
    public var totalByteCount: Int { Self.byteCount + bodyByteCount }

    public init(
        kind: EntryKind, index: LogIndex, term: Term, position: LogPosition, channel: UInt32 = 0,
        chainCRC: UInt32, bodyCRC: UInt32, bodyByteCount: Int
    ) {
        self.kind = kind
        self.index = index
        self.term = term
        self.position = position
        self.channel = channel
        self.chainCRC = chainCRC
        self.bodyCRC = bodyCRC
        self.bodyByteCount = bodyByteCount
    }

    /// Reads and structurally validates a header: magic, size fields, and field ranges. Checksums
    /// are checked separately (`verifyChain`, `LogEntryCodec.verifyBody`) because recovery needs to
    /// tell a torn header from a bad body.
    public static func decode(_ bytes: UnsafeRawBufferPointer) throws(LogFormatError) -> EntryHeader {
        guard bytes.count >= byteCount else {
            throw .truncated(what: "entry header", needed: byteCount, available: bytes.count)
        }
        let r = BigEndianReader(bytes)
        let magic = r.u32(0)
        guard let kind = EntryKind(rawValue: magic) else { throw .badMagic(what: "entry", found: magic) }
        let size = Int32(bitPattern: r.u32(4))
        let bodySize = Int32(bitPattern: r.u32(44))
        guard bodySize >= 0 else {
            throw .fieldOutOfRange(field: "entry body size", value: Int64(bodySize), allowed: ">= 0")
        }
        guard Int64(size) == Int64(bodySize) + Int64(byteCount) else {
            throw .sizeMismatch(what: "entry", detail: "size \(size) != 48 + body size \(bodySize)")
        }
        let index = r.u64(8)
        let term = r.u64(16)
        let position = r.u64(24)
        for (name, value) in [("entry index", index), ("entry term", term), ("entry pos", position)]
        where value > UInt64(Int64.max) {
            throw .fieldOutOfRange(field: name, value: Int64(bitPattern: value), allowed: "0...Int64.max")
        }
        return EntryHeader(
            kind: kind, index: LogIndex(index), term: Term(term), position: LogPosition(position),
            channel: r.u32(32), chainCRC: r.u32(36), bodyCRC: r.u32(40), bodyByteCount: Int(bodySize))
    }

    /// Appends the 48 header bytes to `out`; the chain CRC written is the one in `self`.
    public func encode(into out: inout [UInt8]) {
        precondition(bodyByteCount >= 0, "negative body size")
        precondition(bodyByteCount <= Self.bodyBytesMax, "body larger than an entry can carry")
        out.appendBigEndian(kind.rawValue)
        out.appendBigEndian(UInt32(totalByteCount))
        out.appendBigEndian(index.rawValue)
        out.appendBigEndian(term.rawValue)
        out.appendBigEndian(position.rawValue)
        out.appendBigEndian(channel)
        out.appendBigEndian(chainCRC)
        out.appendBigEndian(bodyCRC)
        out.appendBigEndian(UInt32(bodyByteCount))
    }

    /// The chain CRC this header must carry, given its predecessor's chain CRC. Covers every header
    /// byte except the chain CRC field itself.
    public func computeChainCRC(previous: UInt32) -> UInt32 {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.byteCount + 4)
        bytes.appendBigEndian(previous)
        encode(into: &bytes)
        return bytes.withUnsafeBytes { raw in
            let c = CRC32C.update(0, UnsafeRawBufferPointer(rebasing: raw[0..<40]))
            return CRC32C.update(c, UnsafeRawBufferPointer(rebasing: raw[44..<52]))
        }
    }

    /// Throws unless the stored chain CRC matches the predecessor's.
    public func verifyChain(previous: UInt32) throws(LogFormatError) {
        let computed = computeChainCRC(previous: previous)
        guard computed == chainCRC else {
            throw .checksumMismatch(what: "entry \(index) header (chain CRC)", stored: chainCRC, computed: computed)
        }
    }
}

/// The end-of-segment filler: when an entry plus 8 bytes does not fit in the rest of a segment,
/// the rest is a blank record (magic -1, then the padding length) and the entry starts the next
/// segment, so an entry never spans two files (DLedger's rule, `MIN_BLANK_LEN` = 8).
public enum BlankRecord {
    public static let magic: UInt32 = 0xFFFF_FFFF
    public static let headerByteCount = 8

    public static func encode(paddingByteCount: Int) -> [UInt8] {
        precondition(paddingByteCount >= headerByteCount, "blank record shorter than its header")
        var out: [UInt8] = []
        out.appendBigEndian(magic)
        out.appendBigEndian(UInt32(paddingByteCount))
        return out
    }

    /// The padding length if `bytes` starts with a blank record header, nil if it starts otherwise.
    public static func paddingByteCount(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= headerByteCount else { return nil }
        let r = BigEndianReader(bytes)
        guard r.u32(0) == magic else { return nil }
        return Int(Int32(bitPattern: r.u32(4)))
    }
}
