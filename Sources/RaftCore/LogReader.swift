/// The read-only view of the durable log that `RaftNode` needs. The driver writes the log (it appends
/// and truncates what a `Ready` says); the node only reads it. `LogStore` and the simulator's disk
/// both provide one.
///
/// Contract: the reader always describes what the driver has written so far, including the entries of
/// a `Ready` written before `advance`. An I/O error while reading is fatal to the node (the reader traps
/// or the driver stops the node before calling in again), as in etcd raft: a log the node cannot read
/// is not a log it can vote or lead with.
public protocol RaftLogReader: AnyObject {
    /// The first index still held. 1 until a prefix is deleted.
    var firstIndex: LogIndex { get }
    /// The last index held; `firstIndex - 1` when the log is empty.
    var lastIndex: LogIndex { get }
    /// The term of the entry at `index`, or nil when the index is outside [firstIndex - 1, lastIndex].
    /// At `firstIndex - 1` it is the term of the last entry before the log's start (deleted by
    /// retention; 0 at index 0), or nil when that is not known.
    func term(at index: LogIndex) -> Term?
    /// The entries in `range` (within [firstIndex, lastIndex]), in order, stopping once their data
    /// exceeds `maxBytes` but always returning at least the first. A reader that cannot read its
    /// storage answers with fewer entries, or none, and its driver must stop the node before using
    /// the node's output again (what the node built from a short answer is not to be trusted).
    func entries(in range: ClosedRange<LogIndex>, maxBytes: Int) -> [Entry]
    /// What a follower's driver needs, besides index and term, to continue this log from
    /// `firstIndex - 1` (`Ready.resetLog`); opaque to the node. Empty by default.
    var baseContext: [UInt8] { get }
}

extension RaftLogReader {
    public var baseContext: [UInt8] { [] }
}

/// What a follower's driver must do before anything else in a Ready: empty the log and make it
/// continue from `baseIndex` (term `baseTerm`), as the leader's `context` describes.
public struct LogReset: Sendable, Hashable {
    public var baseIndex: LogIndex
    public var baseTerm: Term
    public var context: [UInt8]
}

/// A log held in memory: the reader of transcript tests and a model for other readers.
public final class MemoryLog: RaftLogReader {
    public private(set) var stored: [Entry] = []
    public init(entries: [Entry] = []) {
        for e in entries { append(e) }
    }
    public var firstIndex: LogIndex { LogIndex(1) }
    public var lastIndex: LogIndex { LogIndex(UInt64(stored.count)) }
    public func term(at index: LogIndex) -> Term? {
        guard index.rawValue >= 1, index <= lastIndex else { return nil }
        return stored[Int(index.rawValue - 1)].term
    }
    public func entries(in range: ClosedRange<LogIndex>, maxBytes: Int) -> [Entry] {
        precondition(range.lowerBound.rawValue >= 1, "entries: index 0 holds no entry")
        precondition(range.upperBound <= lastIndex, "entries: \(range.upperBound) is past the last index \(lastIndex)")
        var out: [Entry] = []
        var bytes = 0
        for i in range.lowerBound.rawValue...range.upperBound.rawValue {
            let e = stored[Int(i - 1)]
            bytes += e.data.count
            if !out.isEmpty && bytes > maxBytes { break }
            out.append(e)
        }
        return out
    }
    /// Drops every entry after `index`.
    public func truncate(after index: LogIndex) {
        precondition(index <= lastIndex, "truncate: \(index) is past the last index \(lastIndex)")
        stored.removeLast(Int(lastIndex.rawValue - index.rawValue))
    }
    /// Appends `entry`, which must be the next index.
    public func append(_ entry: Entry) {
        precondition(entry.index == lastIndex.next, "append: expected index \(lastIndex.next), got \(entry.index)")
        precondition(entry.term >= (stored.last?.term ?? .zero), "append: terms in a log never decrease")
        stored.append(entry)
    }
    /// Writes what a Ready says: truncation point first, then the entries.
    public func write(truncateAfter: LogIndex?, entries: [Entry]) {
        if let t = truncateAfter { truncate(after: t) }
        for e in entries { append(e) }
    }
}
