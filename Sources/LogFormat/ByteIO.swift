/// Big-endian reads from raw bytes. Every read is bounds-checked by the caller's validation first;
/// these helpers trap only on programmer error (an index the caller did not check).
@usableFromInline
struct BigEndianReader {
    @usableFromInline let bytes: UnsafeRawBufferPointer

    @inlinable init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    @inlinable func u8(_ at: Int) -> UInt8 { bytes[at] }

    @inlinable func u16(_ at: Int) -> UInt16 {
        precondition(at >= 0 && at + 2 <= bytes.count, "u16 read out of bounds")
        return UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1])
    }

    @inlinable func u32(_ at: Int) -> UInt32 {
        precondition(at >= 0 && at + 4 <= bytes.count, "u32 read out of bounds")
        return bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self).bigEndian
    }

    @inlinable func u64(_ at: Int) -> UInt64 {
        precondition(at >= 0 && at + 8 <= bytes.count, "u64 read out of bounds")
        return bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self).bigEndian
    }
}

/// Big-endian appends to a byte array.
extension Array where Element == UInt8 {
    @inlinable mutating func appendBigEndian(_ v: UInt16) {
        append(UInt8(v >> 8)); append(UInt8(truncatingIfNeeded: v))
    }
    @inlinable mutating func appendBigEndian(_ v: UInt32) {
        Swift.withUnsafeBytes(of: v.bigEndian) { append(contentsOf: $0) }
    }
    @inlinable mutating func appendBigEndian(_ v: UInt64) {
        Swift.withUnsafeBytes(of: v.bigEndian) { append(contentsOf: $0) }
    }
    @inlinable mutating func storeBigEndian(_ v: UInt32, at: Int) {
        precondition(at >= 0 && at + 4 <= count, "u32 store out of bounds")
        withUnsafeMutableBytes { $0.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt32.self) }
    }
    @inlinable mutating func storeBigEndian(_ v: UInt64, at: Int) {
        precondition(at >= 0 && at + 8 <= count, "u64 store out of bounds")
        withUnsafeMutableBytes { $0.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt64.self) }
    }
}
