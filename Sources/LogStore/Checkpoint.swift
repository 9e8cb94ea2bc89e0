import LogFormat

/// A point up to which data and index are known durable: recovery starts its scan here.
/// Also written, synchronously, by `truncateSuffix`, so an emptied store remembers its next index.
struct DurablePoint: Equatable, Sendable {
    /// Position just past the last entry (where the next entry goes, before any padding).
    var endPosition: UInt64
    /// Index the next entry will have.
    var nextIndex: LogIndex
    /// Term and chain CRC of the entry before `endPosition` (0 when there is none).
    var lastTerm: Term
    var lastChainCRC: UInt32
}

/// The `checkpoint` file: magic "RMQCKPT1", endPosition, nextIndex, lastTerm (8 bytes each, big
/// endian), lastChainCRC (4), CRC32C of the preceding 36 bytes (4): 40 bytes. Written atomically.
enum CheckpointFile {
    static let magic: [UInt8] = Array("RMQCKPT1".utf8)
    static let byteCount = 40

    static func encode(_ p: DurablePoint) -> [UInt8] {
        var out = magic
        out.reserveCapacity(byteCount)
        for v in [p.endPosition, p.nextIndex.rawValue, p.lastTerm.rawValue] {
            Swift.withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) }
        }
        Swift.withUnsafeBytes(of: p.lastChainCRC.bigEndian) { out.append(contentsOf: $0) }
        let crc = CRC32C.checksum(out)
        Swift.withUnsafeBytes(of: crc.bigEndian) { out.append(contentsOf: $0) }
        precondition(out.count == byteCount, "checkpoint encoding length")
        return out
    }

    /// The point, or nil when the file is missing, short, or fails its checksum (recovery then scans
    /// from the first segment: slower, never wrong).
    static func decode(_ bytes: [UInt8]) -> DurablePoint? {
        guard bytes.count == byteCount, Array(bytes[0..<8]) == magic else { return nil }
        func u64(_ at: Int) -> UInt64 { bytes[at..<(at + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
        func u32(_ at: Int) -> UInt32 { bytes[at..<(at + 4)].reduce(0) { $0 << 8 | UInt32($1) } }
        guard CRC32C.checksum(bytes[0..<36]) == u32(36) else { return nil }
        return DurablePoint(endPosition: u64(8), nextIndex: LogIndex(u64(16)), lastTerm: Term(u64(24)), lastChainCRC: u32(32))
    }
}
