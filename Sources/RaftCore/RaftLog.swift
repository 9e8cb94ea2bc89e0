/// The node's view of its log: the durable part (read through `RaftLogReader`) followed by the
/// `unstable` entries the driver has not yet confirmed durable, plus the commit and apply cursors.
///
/// Invariants: `unstableOffset <= stable.lastIndex + 1` (unstable entries start at or before the end
/// of the durable log; when they start before it, the durable entries from `unstableOffset` on are
/// stale and the next Ready truncates them), except while a reset is pending (then the reader still
/// shows the old log and `unstableOffset` is the base + 1); `applied <= committed <= lastIndex`.
struct RaftLog<Reader: RaftLogReader> {
    let stable: Reader
    private(set) var unstable: [Entry] = []
    private(set) var unstableOffset: LogIndex
    /// Highest index known committed (Raft Figure 2 `commitIndex`).
    private(set) var committed: LogIndex
    /// Highest index handed to the driver for applying.
    private(set) var applied: LogIndex
    /// How far the driver's state machine had applied when the node started. The persisted commit
    /// index is only a hint (saved with term and vote), so after a restart it may lag far behind
    /// this; once the commit index passes entries the state machine already holds, they are marked
    /// applied without being handed out again (`skipAlreadyApplied`). Nothing is declared committed
    /// because of it: `applied <= committed` still holds, only the handing out is skipped.
    private(set) var appliedBeforeStart: LogIndex
    /// The last unstable entry handed out in a Ready that is not advanced yet.
    private var inProgress: (index: LogIndex, term: Term)?
    /// A reset the driver has not confirmed yet (`Ready.resetLog`): until then this log is empty
    /// after the reset's base, whatever the reader still holds.
    private(set) var pendingReset: LogReset?
    /// The pending reset went out in the Ready that is not advanced yet.
    private var resetInProgress = false
    /// The last index known durable: at most `persistedLastIndex`, below it while a leader's deferred
    /// sync (`Ready.syncMayBeDeferred`) has not reported back. A leader counts itself toward a
    /// quorum only up to here.
    private(set) var syncedLastIndex: LogIndex

    init(stable: Reader, committed: LogIndex, applied: LogIndex, appliedBeforeStart: LogIndex = .zero) {
        precondition(committed <= stable.lastIndex, "the persisted commit index \(committed) is past the log's last index \(stable.lastIndex): the log lost committed entries")
        precondition(applied <= committed, "applied index \(applied) is past the commit index \(committed)")
        self.appliedBeforeStart = min(appliedBeforeStart, stable.lastIndex)
        self.stable = stable
        self.unstableOffset = stable.lastIndex.next
        // The driver's store makes what it recovered durable before the node starts.
        self.syncedLastIndex = stable.lastIndex
        // Whatever precedes the first index is committed: retention deletes only committed entries,
        // and a reset's base is committed. A persisted commit index below it is merely stale (it is
        // saved with term and vote, not on every commit).
        self.committed = max(committed, stable.firstIndex.previous)
        self.applied = max(applied, stable.firstIndex.previous)
    }

    var firstIndex: LogIndex { pendingReset.map { $0.baseIndex.next } ?? stable.firstIndex }

    var lastIndex: LogIndex {
        unstable.isEmpty ? (pendingReset?.baseIndex ?? stable.lastIndex) : unstableOffset + (unstable.count - 1)
    }

    var lastTerm: Term { term(at: lastIndex) ?? .zero }

    /// The last index of this log the driver wrote: it confirmed it with `advance` (durable too,
    /// unless that Ready's sync was deferred: see `syncedLastIndex`).
    var persistedLastIndex: LogIndex {
        if pendingReset != nil { return firstIndex.previous }
        return unstable.isEmpty ? stable.lastIndex : unstableOffset.previous
    }

    func term(at index: LogIndex) -> Term? {
        // The empty prefix, while the log still starts at 1 (once a prefix is gone, the log knows
        // only its base: a follower that needs index 1 is reset, not sent entries that are gone).
        if index == .zero { return firstIndex == LogIndex(1) ? .zero : nil }
        if index >= unstableOffset {
            let k = index - unstableOffset
            return k < unstable.count ? unstable[k].term : nil
        }
        if let r = pendingReset { return index == r.baseIndex ? r.baseTerm : nil }
        return stable.term(at: index)
    }

    /// Empties the log and continues it from `reset`'s base, which is committed (the leader deleted
    /// everything up to it after committing it). The driver does it on the next Ready.
    mutating func reset(_ reset: LogReset) {
        precondition(reset.baseIndex > committed, "a reset to \(reset.baseIndex) would drop the committed index \(committed)")
        precondition(!resetInProgress && inProgress == nil, "reset while a Ready is outstanding")
        pendingReset = reset
        unstable = []
        unstableOffset = reset.baseIndex.next
        committed = reset.baseIndex
        applied = reset.baseIndex
        syncedLastIndex = min(syncedLastIndex, reset.baseIndex)
        appliedBeforeStart = .zero  // the driver resets its state machine with the log
    }

    /// The reset the next Ready carries.
    var resetToHandOut: LogReset? { resetInProgress ? nil : pendingReset }

    func matchTerm(_ index: LogIndex, _ term: Term) -> Bool {
        self.term(at: index) == term
    }

    /// Raft §5.4.1: a candidate's log is at least as up-to-date as this one.
    func isUpToDate(lastIndex candidateIndex: LogIndex, lastTerm candidateTerm: Term) -> Bool {
        candidateTerm > lastTerm || (candidateTerm == lastTerm && candidateIndex >= lastIndex)
    }

    /// Entries from `index` on, at most `maxCount` of them and about `maxBytes` (always at least one
    /// when `index <= lastIndex`). Empty when `index` is past the end.
    func entries(from index: LogIndex, maxCount: Int, maxBytes: Int) -> [Entry] {
        guard index <= lastIndex else { return [] }
        precondition(index >= firstIndex, "entries from \(index) are before the first index \(firstIndex)")
        var upper = min(lastIndex, index + (maxCount - 1))
        var out: [Entry] = []
        var bytes = 0
        if index < unstableOffset {
            let stableUpper = min(upper, unstableOffset.previous)
            out = stable.entries(in: index...stableUpper, maxBytes: maxBytes)
            bytes = out.reduce(0) { $0 + $1.data.count }
            // No entries: the reader could not read its log. The driver stops the node before
            // anything built from this answer leaves (RaftLogReader.entries).
            if out.isEmpty { return [] }
            if out.count < (stableUpper - index) + 1 { return out }
            if bytes >= maxBytes { return out }
        }
        upper = min(upper, lastIndex)
        var i = max(index, unstableOffset)
        while i <= upper {
            let e = unstable[i - unstableOffset]
            bytes += e.data.count
            if !out.isEmpty && bytes > maxBytes { break }
            out.append(e)
            i = i.next
        }
        return out
    }

    /// The first index among `entries` whose term differs from this log's, or nil when every entry
    /// is already here (they may run past the end: those count as conflicts).
    func findConflict(_ entries: [Entry]) -> LogIndex? {
        for e in entries where !matchTerm(e.index, e.term) {
            return e.index
        }
        return nil
    }

    /// The largest index at or below `index` whose term is at most `term` (for fast backup).
    func findConflictByTerm(index: LogIndex, term: Term) -> (index: LogIndex, term: Term) {
        var i = min(index, lastIndex)
        while true {
            guard let t = self.term(at: i) else { return (i, .zero) }
            if t <= term { return (i, t) }
            if i == .zero { return (i, t) }
            i = i.previous
        }
    }

    /// Appends `entries` (consecutive), replacing whatever conflicts with them.
    mutating func append(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        precondition(first.index > committed, "append at \(first.index) would overwrite the committed index \(committed)")
        // Entries replaced here are not the ones the state machine held before the start.
        if first.index <= appliedBeforeStart { appliedBeforeStart = first.index.previous }
        // Nor are they the ones a sync made durable.
        if first.index <= syncedLastIndex { syncedLastIndex = first.index.previous }
        precondition(first.index <= lastIndex.next, "append at \(first.index) leaves a gap after \(lastIndex)")
        if first.index == lastIndex.next && !unstable.isEmpty {
            unstable.append(contentsOf: entries)
        } else if first.index <= unstableOffset || unstable.isEmpty {
            unstable = entries
            unstableOffset = first.index
        } else {
            unstable.removeSubrange((first.index - unstableOffset)...)
            unstable.append(contentsOf: entries)
        }
    }

    mutating func commit(to index: LogIndex) {
        guard index > committed else { return }
        precondition(index <= lastIndex, "commit to \(index) is past the last index \(lastIndex)")
        committed = index
    }

    /// Committed entries not handed out yet, about `maxBytes` of them.
    func nextCommittedEntries(maxBytes: Int) -> [Entry] {
        guard committed > applied else { return [] }
        return entries(from: applied.next, maxCount: committed - applied, maxBytes: maxBytes)
    }

    var hasNextCommittedEntries: Bool { committed > applied }

    /// Marks applied the committed entries the state machine held before the start (see
    /// `appliedBeforeStart`). Called before each Ready is built, so none of them is ever handed out.
    mutating func skipAlreadyApplied() {
        let upTo = min(committed, appliedBeforeStart)
        if upTo > applied { applied = upTo }
    }

    mutating func markApplied(through index: LogIndex) {
        precondition(index <= committed, "applied \(index) is past the commit index \(committed)")
        precondition(index >= applied, "applied index went back from \(applied) to \(index)")
        applied = index
    }

    /// Where the driver must cut the durable log before writing the unstable entries.
    var pendingTruncation: LogIndex? {
        guard pendingReset == nil, !unstable.isEmpty, unstableOffset <= stable.lastIndex else { return nil }
        return unstableOffset.previous
    }

    var unstableEntries: [Entry] { unstable }

    mutating func markInProgress() {
        if let last = unstable.last { inProgress = (last.index, last.term) }
        if pendingReset != nil { resetInProgress = true }
    }

    /// Everything written so far is durable (a Ready that had to sync was advanced).
    mutating func markAllSynced() {
        syncedLastIndex = persistedLastIndex
    }

    /// A deferred sync reported that the entries through `index`, the last of them of `term`, are
    /// durable. Ignored when the log no longer holds that entry where it was written (a conflict
    /// replaced it: whatever replaced it was synced by the Ready that truncated) or when it says
    /// nothing new. Returns whether `syncedLastIndex` moved.
    mutating func markSynced(through index: LogIndex, term: Term) -> Bool {
        guard index > syncedLastIndex, index <= persistedLastIndex, self.term(at: index) == term else { return false }
        syncedLastIndex = index
        return true
    }

    /// The driver wrote what the last Ready held: forget the unstable entries that are now written,
    /// unless a conflict replaced them in the meantime (then the next Ready writes them again).
    mutating func advanceStable() {
        defer { inProgress = nil }
        if resetInProgress, let r = pendingReset {
            precondition(stable.firstIndex == r.baseIndex.next && stable.term(at: r.baseIndex) == r.baseTerm,
                         "the driver did not reset the log to \(r.baseTerm)/\(r.baseIndex) (it starts at \(stable.firstIndex))")
            pendingReset = nil
            resetInProgress = false
        }
        guard let (index, term) = inProgress, index >= unstableOffset, matchTerm(index, term) else { return }
        let count = (index - unstableOffset) + 1
        precondition(stable.lastIndex >= index, "the driver did not write the entries of the Ready before advance (log ends at \(stable.lastIndex), expected \(index))")
        precondition(stable.term(at: index) == term, "the log reader holds term \(String(describing: stable.term(at: index))) at \(index), the Ready wrote \(term)")
        unstable.removeFirst(count)
        unstableOffset = index.next
        if unstable.isEmpty { unstableOffset = stable.lastIndex.next }
    }
}
