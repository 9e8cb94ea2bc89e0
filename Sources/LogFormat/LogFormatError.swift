/// Why a run of bytes is not a valid log entry, blank record, index record or message record.
/// Decoders throw these instead of trapping; the store turns them into "cut here" or "refuse".
public enum LogFormatError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(what: String, needed: Int, available: Int)
    case badMagic(what: String, found: UInt32)
    case sizeMismatch(what: String, detail: String)
    case fieldOutOfRange(field: String, value: Int64, allowed: String)
    case checksumMismatch(what: String, stored: UInt32, computed: UInt32)
    case unexpectedValue(field: String, found: UInt64, expected: UInt64)
    case invalidUTF8(field: String)
    case invalidProperty(String)

    public var description: String {
        switch self {
        case let .truncated(what, needed, available):
            return "\(what) truncated: needs \(needed) bytes, \(available) available"
        case let .badMagic(what, found):
            return "\(what) has bad magic 0x\(String(found, radix: 16, uppercase: true))"
        case let .sizeMismatch(what, detail):
            return "\(what) size mismatch: \(detail)"
        case let .fieldOutOfRange(field, value, allowed):
            return "\(field) \(value) out of range (\(allowed))"
        case let .checksumMismatch(what, stored, computed):
            return "\(what) checksum mismatch: stored 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16))"
        case let .unexpectedValue(field, found, expected):
            return "\(field) is \(found), expected \(expected)"
        case let .invalidUTF8(field):
            return "\(field) is not valid UTF-8"
        case let .invalidProperty(detail):
            return "invalid message property: \(detail)"
        }
    }
}
