import LogFormat

/// Operating errors of the store. Every case says what happened and where, in words an operator can
/// act on; `description` is the message.
public enum StorageError: Error, Sendable, CustomStringConvertible, Equatable {
    /// A system call failed. `errno` is kept for callers that distinguish ENOSPC.
    case io(operation: String, path: String, errno: Int32)
    /// The store is corrupt somewhere other than its tail; it refuses to open.
    case corrupt(file: String, position: UInt64, detail: String)
    /// The directory layout is wrong (gaps between segments, foreign files of the wrong size...).
    case layout(String)
    /// Another process holds the store's lock.
    case locked(path: String)
    /// Disk usage is above `diskMaxUsedSpaceRatio`; writes are refused, reads still served.
    case diskFull(path: String, usedPercent: Int, limitPercent: Int)
    /// A previous write or sync failed; the store serves nothing until it is reopened.
    case failed(String)
    /// The caller asked for something the log cannot do (bad index, oversized entry...).
    case invalidArgument(String)
    /// An entry past the end or before the start of the log.
    case outOfRange(requested: UInt64, first: UInt64, last: UInt64?)
    /// The entries a caller waited for were removed by `truncateSuffix` before becoming durable.
    case truncatedBeforeDurable(position: UInt64)
    case closed

    public var description: String {
        switch self {
        case let .io(op, path, e):
            return "\(op) \(path): \(String(cString: strerrorMessage(e))) (errno \(e))"
        case let .corrupt(file, position, detail):
            return "commitlog corrupt in \(file) at position \(position): \(detail)"
        case let .layout(detail):
            return "commitlog layout: \(detail)"
        case let .locked(path):
            return "\(path) is locked by another process (is a broker already running on this store?)"
        case let .diskFull(path, used, limit):
            return "disk holding \(path) is \(used)% full, above diskMaxUsedSpaceRatio=\(limit): writes refused, reads still served"
        case let .failed(detail):
            return "store stopped after a storage error: \(detail)"
        case let .invalidArgument(detail):
            return detail
        case let .outOfRange(requested, first, last):
            return "entry \(requested) is outside the log [\(first), \(last.map(String.init) ?? "empty")]"
        case let .truncatedBeforeDurable(position):
            return "entries at position \(position) were truncated before they became durable"
        case .closed:
            return "store is closed"
        }
    }
}

import Glibc

func strerrorMessage(_ e: Int32) -> UnsafeMutablePointer<CChar> { strerror(e) }
