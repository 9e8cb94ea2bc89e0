import LogFormat
import LogStore
import NIOCore
import Synchronization

/// The bytes of RocketMQ's HA port (rocketmq-protocol.md §6.2), carrying RaftMQ's log format.
///
/// - slave -> master: 8 bytes, the slave's log end position (its max physical offset). The master
///   uses the last complete value it has read.
/// - master -> slave: a 12-byte header (position of the first byte, int64; length, int32) and that
///   many bytes of the master's segment files, never crossing a segment's end. Length 0 is a
///   heartbeat. RaftMQ adds one frame RocketMQ does not have: position -1 with 28 bytes of log base
///   (next index, position, term and chain CRC of the entry before the master's first one), sent to
///   a slave whose log ends before the master's begins.
public enum HAWire {
    public static let reportBytes = 8
    public static let headerBytes = 12
    public static let baseFramePosition: Int64 = -1
    public static let baseBytes = 28

    public static func report(_ position: UInt64) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeInteger(Int64(bitPattern: position))
        return b
    }

    public static func encodeBase(_ base: LogBase) -> [UInt8] {
        var out: [UInt8] = []
        for v in [base.nextIndex.rawValue, base.position.rawValue, base.lastTerm.rawValue] {
            withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) }
        }
        withUnsafeBytes(of: base.lastChainCRC.bigEndian) { out.append(contentsOf: $0) }
        return out
    }

    public static func decodeBase(_ bytes: [UInt8]) -> LogBase? {
        guard bytes.count == baseBytes else { return nil }
        func u64(_ at: Int) -> UInt64 { bytes[at..<(at + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
        let crc = bytes[24..<28].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return LogBase(nextIndex: LogIndex(u64(0)), position: LogPosition(u64(8)), lastTerm: Term(u64(16)), lastChainCRC: crc)
    }
}

/// Why a slave stopped taking the master's stream.
public enum HAError: Error, CustomStringConvertible, Sendable {
    /// The stream does not continue this slave's log (a different history, or sizes that differ).
    case diverged(String)
    /// The peer broke the protocol.
    case protocolViolation(String)
    /// The slave's own store failed.
    case storage(String)

    public var description: String {
        switch self {
        case .diverged(let d): return "the master's log does not continue this slave's: \(d)"
        case .protocolViolation(let d): return "HA protocol error: \(d)"
        case .storage(let d): return "the slave's store failed: \(d)"
        }
    }
}

/// When something last happened (a read on a connection), shared between its tasks.
final class LastSeen: Sendable {
    private let at = Mutex(ContinuousClock.now)
    func touch() { at.withLock { $0 = .now } }
    var elapsed: Duration { ContinuousClock.now - at.withLock { $0 } }
}
