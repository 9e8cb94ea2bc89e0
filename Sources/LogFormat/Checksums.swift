import CChecksum

/// CRC32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78): the checksum of log entries.
///
/// Uses the SSE4.2 `crc32` instruction when the CPU has it (about 10 GB/s here) and a slicing-by-8
/// table implementation otherwise (about 2 GB/s). Both produce identical values; tests check them
/// against the published vectors and against each other.
public enum CRC32C {
    /// Whether the hardware path is in use on this machine.
    public static let usesHardware: Bool = raftmq_crc32c_hw_available() != 0

    /// Continues `crc` over `bytes`. Start with 0.
    @inlinable
    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        if usesHardware {
            return UInt32(truncatingIfNeeded: raftmq_crc32c_hw(crc, bytes.baseAddress, bytes.count))
        }
        return portableUpdate(crc, bytes)
    }

    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 { update(0, bytes) }

    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        let array = Array(bytes)
        return array.withUnsafeBytes { update(0, $0) }
    }

    /// The table-driven implementation, public so tests and the fallback path share one code path.
    public static func portableUpdate(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var c = ~crc
        var i = 0
        let n = bytes.count
        table.withUnsafeBufferPointer { t in
            while n - i >= 8 {
                let lo = UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16
                    | UInt32(bytes[i + 3]) << 24
                let hi = UInt32(bytes[i + 4]) | UInt32(bytes[i + 5]) << 8 | UInt32(bytes[i + 6]) << 16
                    | UInt32(bytes[i + 7]) << 24
                let x = c ^ lo
                c = t[7 * 256 + Int(x & 0xFF)] ^ t[6 * 256 + Int((x >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((x >> 16) & 0xFF)] ^ t[4 * 256 + Int(x >> 24)]
                    ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                i += 8
            }
            while i < n {
                c = t[Int((c ^ UInt32(bytes[i])) & 0xFF)] ^ (c >> 8)
                i += 1
            }
        }
        return ~c
    }

    /// Eight 256-entry tables for slicing-by-8, built once.
    static let table: [UInt32] = {
        let poly: UInt32 = 0x82F6_3B78
        var t = [UInt32](repeating: 0, count: 8 * 256)
        for i in 0..<256 {
            var c = UInt32(i)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ poly : c >> 1 }
            t[i] = c
        }
        for i in 0..<256 {
            for k in 1..<8 {
                let prev = t[(k - 1) * 256 + i]
                t[k * 256 + i] = t[Int(prev & 0xFF)] ^ (prev >> 8)
            }
        }
        return t
    }()
}

/// CRC32 (IEEE 802.3, zlib's `crc32`): RocketMQ's message body checksum.
public enum CRC32IEEE {
    public static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        raftmq_crc32_ieee(crc, bytes.baseAddress, bytes.count)
    }

    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        let array = Array(bytes)
        return array.withUnsafeBytes { update(0, $0) }
    }

    /// RocketMQ stores `crc32(body) & 0x7FFFFFFF` (Java's `UtilAll.crc32`), a non-negative int.
    public static func rocketMQBodyCRC(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        update(0, bytes) & 0x7FFF_FFFF
    }
}
