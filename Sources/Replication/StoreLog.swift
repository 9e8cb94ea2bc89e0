import LogFormat
import LogStore
import RaftCore

/// RaftCore's view of a LogStore. Raft index r is store index r - 1 + the store's first index of an
/// empty log (DLedger numbers entries from 0; Raft from 1, with 0 the empty prefix), so
/// `/raft/state` can show DLedger's numbers while the core keeps the paper's.
///
/// Terms are kept in memory as runs (one per term change), so `term(at:)`, which the core calls on
/// every message, never reads the disk. A read error is fatal to the node: a log it cannot read is
/// not a log it may vote or lead with. `entries` then answers what it read so far (possibly nothing,
/// RaftLogReader's signal) and keeps the error in `failure`; the driver stops the node before any
/// output of that step leaves, and recovery decides at the next start. (A full disk gets here too:
/// a read first hands SYNC_FLUSH's write-behind bytes to the file, and that write can fail.)
final class StoreLog: RaftLogReader {
    let store: LogStore
    /// Raft index of store index `storeBase`.
    private let storeBase: UInt64
    /// (first Raft index, term) of each run of equal terms, ascending.
    private var runs: [(first: UInt64, term: UInt64)] = []
    /// Why a read failed; once set the node must stop (see above).
    private(set) var failure: ReadFailure?
    enum ReadFailure: Error, CustomStringConvertible {
        case readFailed(raftIndex: UInt64, storeIndex: UInt64, StorageError)
        var description: String {
            switch self {
            case let .readFailed(r, s, e): "the commitlog cannot be read at Raft index \(r) (store index \(s)): \(e)"
            }
        }
    }
    private(set) var firstIndex: RaftCore.LogIndex
    private(set) var lastIndex: RaftCore.LogIndex
    /// The store's base (what precedes the first entry), when known; its term answers
    /// `term(at: firstIndex - 1)`.
    private var base: LogBase?
    /// The entries written last, as the core handed them over, so the reads that follow a write
    /// (the commit's entries for the subscriber, an append to a follower that lagged by a little) do
    /// not go back to the store (measured: those reads were about 5 % of a follower's CPU). Their
    /// bodies are as proposed, before `patch`: the patch is a function of the index and position
    /// alone, so every member writes the same bytes from either. Each is kept with its position in
    /// the store, which `positions(of:)` hands to the apply step.
    private var recent: [(entry: RaftCore.Entry, position: LogPosition)] = []
    private var recentHead = 0
    private var recentBytes = 0
    static let recentMaxBytes = 4 << 20
    static let recentMaxCount = 8_192
    /// Applied to every entry this node writes, whoever proposed it (see `RaftReplicaOptions.bodyPatch`).
    private let patch: (@Sendable (LogFormat.LogIndex, LogPosition, UnsafeMutableRawBufferPointer) -> Void)?

    init(store: LogStore, storeIndexOfEmptyLog: UInt64,
         patch: (@Sendable (LogFormat.LogIndex, LogPosition, UnsafeMutableRawBufferPointer) -> Void)? = nil) throws(StorageError) {
        self.store = store
        self.patch = patch
        self.storeBase = storeIndexOfEmptyLog
        firstIndex = RaftCore.LogIndex(store.firstIndex.rawValue - storeIndexOfEmptyLog + 1)
        base = store.base
        if let last = store.lastIndex {
            lastIndex = RaftCore.LogIndex(last.rawValue - storeIndexOfEmptyLog + 1)
        } else {
            lastIndex = firstIndex.previous
        }
        // The term runs, found by bisection: terms never decrease along a log, so where the terms at
        // two indexes differ a run starts between them. That reads O(runs x log n) entries instead of
        // the whole log (which took 12 s for a 1.4 GB log at every start; found by the chaos suite).
        // The bisection reads the index records' terms (32 bytes each) and then checks every run it
        // found against the entries themselves (two verified reads per run); only if a record lied
        // does it bisect again over verified entries. With 355 terms in 3.2 million entries the
        // verified bisection alone took 1.5 s of every start (the chaos suite's hour run, where it
        // made one kill-all healing miss 2 s).
        guard let last = store.lastIndex else { return }
        let first = store.firstIndex
        let starts: [(index: UInt64, term: UInt64)]
        if let hinted = try? Self.termRuns(first: first.rawValue, last: last.rawValue, term: { store.indexedTerm(at: LogFormat.LogIndex($0))?.rawValue }),
           try Self.verify(hinted, last: last.rawValue, store: store) {
            starts = hinted
        } else {
            do {
                starts = try Self.termRuns(first: first.rawValue, last: last.rawValue) { (i: UInt64) throws(StorageError) -> UInt64? in
                    try store.term(at: LogFormat.LogIndex(i)).rawValue
                }
            } catch let e as StorageError {
                throw e
            } catch {
                preconditionFailure("a verified read gives a term or throws a StorageError: \(error)")
            }
        }
        for s in starts { noteTerm(raftIndex(LogFormat.LogIndex(s.index)), s.term) }
    }

    struct MissingTerm: Error {}

    /// Every (index, term) where a run of one term starts in [first, last], by bisection over `term`
    /// (nil: unknown, which fails the search).
    static func termRuns<E: Error>(first: UInt64, last: UInt64, term: (UInt64) throws(E) -> UInt64?) throws -> [(index: UInt64, term: UInt64)] {
        func at(_ i: UInt64) throws -> UInt64 {
            guard let t = try term(i) else { throw MissingTerm() }
            return t
        }
        var starts: [(index: UInt64, term: UInt64)] = []
        func bisect(_ lo: UInt64, _ tlo: UInt64, _ hi: UInt64, _ thi: UInt64) throws {
            // Records every run start in (lo, hi]; the entries at lo and hi have the terms tlo <= thi.
            if tlo == thi { return }
            if hi == lo + 1 {
                starts.append((hi, thi))
                return
            }
            let mid = lo + (hi - lo) / 2
            let tm = try at(mid)
            try bisect(lo, tlo, mid, tm)
            try bisect(mid, tm, hi, thi)
        }
        let firstTerm = try at(first)
        starts.append((first, firstTerm))
        if last > first { try bisect(first, firstTerm, last, try at(last)) }
        return starts
    }

    /// Whether runs found from index records hold for the entries themselves: each run's first entry
    /// has its term, the entry before it the previous run's, terms increase, and the last entry has
    /// the last run's term. (Between two checked boundaries terms cannot change unseen: they never
    /// decrease, and both ends of each run are checked.)
    static func verify(_ runs: [(index: UInt64, term: UInt64)], last: UInt64, store: LogStore) throws(StorageError) -> Bool {
        guard let final = runs.last else { return false }
        for (k, run) in runs.enumerated() {
            guard try store.term(at: LogFormat.LogIndex(run.index)).rawValue == run.term else { return false }
            if k > 0 {
                let previous = runs[k - 1]
                guard previous.term < run.term, previous.index < run.index,
                      try store.term(at: LogFormat.LogIndex(run.index - 1)).rawValue == previous.term else { return false }
            }
        }
        return try store.term(at: LogFormat.LogIndex(last)).rawValue == final.term
    }

    func storeIndex(_ r: RaftCore.LogIndex) -> LogFormat.LogIndex { LogFormat.LogIndex(r.rawValue - 1 + storeBase) }
    func raftIndex(_ s: LogFormat.LogIndex) -> UInt64 { s.rawValue + 1 - storeBase }

    private func noteTerm(_ index: UInt64, _ term: UInt64) {
        if let last = runs.last, last.term == term { return }
        precondition(runs.last.map { $0.term < term } ?? true, "terms in the log go back at \(index)")
        runs.append((index, term))
    }

    func term(at index: RaftCore.LogIndex) -> RaftCore.Term? {
        if index == firstIndex.previous { return base.map { RaftCore.Term($0.lastTerm.rawValue) } }
        guard index >= firstIndex, index <= lastIndex, index.rawValue >= 1 else { return nil }
        // The last run starting at or before index.
        var lo = 0, hi = runs.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if runs[mid].first <= index.rawValue { lo = mid } else { hi = mid - 1 }
        }
        return RaftCore.Term(runs[lo].term)
    }

    func entries(in range: ClosedRange<RaftCore.LogIndex>, maxBytes: Int) -> [RaftCore.Entry] {
        precondition(range.lowerBound >= firstIndex && range.upperBound <= lastIndex, "entries \(range) outside \(firstIndex)...\(lastIndex)")
        if recentHead < recent.count, recent[recentHead].entry.index <= range.lowerBound, recent[recent.count - 1].entry.index >= range.lowerBound {
            var out: [RaftCore.Entry] = []
            var bytes = 0
            var k = recentHead + Int(range.lowerBound.rawValue - recent[recentHead].entry.index.rawValue)
            while k < recent.count, recent[k].entry.index <= range.upperBound {
                bytes += recent[k].entry.data.count
                if !out.isEmpty && bytes > maxBytes { break }
                out.append(recent[k].entry)
                k += 1
            }
            return out
        }
        var out: [RaftCore.Entry] = []
        var next = range.lowerBound
        var bytes = 0
        while next <= range.upperBound {
            let batch: [LogEntry]
            do {
                batch = try store.read(from: storeIndex(next), maxBytes: max(1, maxBytes - bytes))
            } catch {
                // Found by the chaos suite: this trapped when a full disk failed the write a read
                // makes first. The driver now stops the node cleanly (see the type's comment).
                if failure == nil { failure = .readFailed(raftIndex: next.rawValue, storeIndex: storeIndex(next).rawValue, error) }
                return out
            }
            for e in batch {
                let i = RaftCore.LogIndex(raftIndex(e.index))
                if i > range.upperBound { return out }
                bytes += e.body.count
                if !out.isEmpty && bytes > maxBytes { return out }
                out.append(RaftCore.Entry(term: RaftCore.Term(e.term.rawValue), index: i, data: e.kind == .noop ? [] : e.body))
                next = i.next
            }
            if bytes >= maxBytes { break }
        }
        return out
    }

    /// The store position of each of `entries` (in order, contiguous), when all of them are among
    /// the entries written last (same index and term); nil otherwise, and the caller reads the store.
    func positions(of entries: [RaftCore.Entry]) -> [LogPosition]? {
        guard let first = entries.first, recentHead < recent.count else { return nil }
        let head = recent[recentHead].entry.index
        guard first.index >= head, entries.count <= recent.count - recentHead - Int(first.index.rawValue - head.rawValue) else { return nil }
        var k = recentHead + Int(first.index.rawValue - head.rawValue)
        var out: [LogPosition] = []
        out.reserveCapacity(entries.count)
        for e in entries {
            let r = recent[k]
            guard r.entry.index == e.index, r.entry.term == e.term else { return nil }
            out.append(r.position)
            k += 1
        }
        return out
    }

    /// Keeps `entries` (just written at `positions`, following the cached ones) and drops the oldest
    /// beyond the limits.
    private func remember(_ entries: [RaftCore.Entry], at positions: [LogPosition]) {
        precondition(entries.count == positions.count, "\(entries.count) entries written at \(positions.count) positions")
        if let last = recent.last, recentHead < recent.count, last.entry.index.next != entries.first!.index { forgetRecent() }
        for (e, p) in zip(entries, positions) {
            recent.append((e, p))
            recentBytes += e.data.count
        }
        while recent.count - recentHead > Self.recentMaxCount || (recentBytes > Self.recentMaxBytes && recent.count - recentHead > 1) {
            recentBytes -= recent[recentHead].entry.data.count
            // Its body goes now, not when the slots before the head are compacted away (up to 4,096
            // of them: with entries of many messages that held about 90 MB on every member).
            recent[recentHead].entry.data = []
            recentHead += 1
        }
        if recentHead > 4_096 && recentHead * 2 > recent.count {
            recent.removeFirst(recentHead)
            recentHead = 0
        }
    }

    /// The bodies the recent entries' array holds, the slots before its head included (tests).
    var recentRetainedBytes: Int { recent.reduce(0) { $0 + $1.entry.data.count } }

    private func forgetRecent() {
        recent.removeAll(keepingCapacity: true)
        recentHead = 0
        recentBytes = 0
    }

    /// The base's position and chain CRC (big-endian u64, u32): what a follower needs to continue
    /// this log byte for byte from `firstIndex - 1`.
    var baseContext: [UInt8] {
        guard let base else { return [] }
        var out: [UInt8] = []
        withUnsafeBytes(of: base.position.rawValue.bigEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: base.lastChainCRC.bigEndian) { out.append(contentsOf: $0) }
        return out
    }

    /// A Ready's `resetLog`: the store is emptied and continues from the leader's base.
    func reset(_ r: LogReset) throws(StorageError) -> LogBase {
        guard r.context.count == 12 else {
            throw .invalidArgument("a log reset carries \(r.context.count) bytes of base, not 12 (position, chain CRC)")
        }
        var position: UInt64 = 0, chain: UInt32 = 0
        for b in r.context[0..<8] { position = position << 8 | UInt64(b) }
        for b in r.context[8..<12] { chain = chain << 8 | UInt32(b) }
        let newBase = LogBase(nextIndex: storeIndex(r.baseIndex.next), position: LogPosition(position),
                              lastTerm: LogFormat.Term(r.baseTerm.rawValue), lastChainCRC: chain)
        try store.reset(to: newBase)
        base = newBase
        firstIndex = r.baseIndex.next
        lastIndex = r.baseIndex
        runs.removeAll()
        forgetRecent()
        return newBase
    }

    /// After retention deleted a prefix of the store: the log now starts where the store does.
    func prefixDeleted() {
        firstIndex = RaftCore.LogIndex(raftIndex(store.firstIndex))
        while recentHead < recent.count, recent[recentHead].entry.index < firstIndex {
            recentBytes -= recent[recentHead].entry.data.count
            recent[recentHead].entry.data = []
            recentHead += 1
        }
        base = store.base
        while runs.count >= 2 && runs[1].first <= firstIndex.rawValue { runs.removeFirst() }
    }

    /// Writes what a Ready says: the truncation, then the entries (to the page cache). Returns the
    /// position the entries' durability depends on.
    func write(truncateAfter: RaftCore.LogIndex?, entries: [RaftCore.Entry]) throws(StorageError) -> LogPosition {
        if let t = truncateAfter {
            precondition(t >= firstIndex.previous, "truncate after \(t) below the first index \(firstIndex)")
            try store.truncateSuffix(after: t >= firstIndex ? storeIndex(t) : nil)
            lastIndex = t
            while let last = runs.last, last.first > t.rawValue { runs.removeLast() }
            while recent.count > recentHead, let last = recent.last, last.entry.index > t {
                recentBytes -= last.entry.data.count
                recent.removeLast()
            }
        }
        guard let first = entries.first else { return store.writePosition }
        precondition(first.index == lastIndex.next, "Ready entries start at \(first.index), the log ends at \(lastIndex)")
        let toAppend = entries.map {
            EntryToAppend(kind: $0.isEmpty ? .noop : .normal, term: LogFormat.Term($0.term.rawValue), body: $0.data)
        }
        let result = try store.write(toAppend, expectingFirstIndex: storeIndex(first.index), patch: patch)
        for e in entries { noteTerm(e.index.rawValue, e.term.rawValue) }
        lastIndex = entries.last!.index
        remember(entries, at: result.positions)
        return result.endPosition
    }
}
