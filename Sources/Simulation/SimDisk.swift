import RaftCore

/// One node's simulated disk: the Raft log and the hard state, as the page cache holds them
/// (`current`, what the node reads) and as they would survive a power cut (`durable`).
///
/// Writes land in `current` at once and are queued as pending operations; `sync()` makes them all
/// durable. A crash keeps a random prefix of the pending operations, tears the last kept append at
/// an entry boundary (the real store cuts a torn tail the same way on recovery), and keeps the
/// unsynced hard state only by chance: everything not synced may or may not survive, nothing synced
/// is lost.
final class SimDisk {
    enum Operation {
        case truncate(after: LogIndex)
        case append([Entry])
    }

    private(set) var durableEntries: [Entry] = []
    private(set) var durableHardState = HardState()

    /// The log as the node sees it, with a hash of every prefix (for the log matching checker).
    private(set) var entries: [Entry] = []
    private(set) var prefixHashes: [UInt64] = []
    private(set) var hardState = HardState()

    /// The first entry the node may read: retention deleted the ones before it, or a reset made the
    /// log start after the leader's base. Both are durable at once (the real store unlinks and
    /// fsyncs before it returns). The entries before it stay in the arrays: the simulator's god view,
    /// which keeps the checkers' prefix hashes whole; the node never reads them.
    private(set) var firstIndex = LogIndex(1)

    private var pending: [Operation] = []
    /// Operations synced or lost so far: `pendingBase + k` names `pending[k]` for `sync(through:)`.
    private var pendingBase = 0
    private var hardStateDirty = false
    /// The visible log and the last synced log agree on this many first entries: whatever a crash
    /// keeps, those survive with their prefix hashes.
    private var unchangedSinceSync = 0

    /// Writes since the last sync.
    var hasUnsyncedWrites: Bool { !pending.isEmpty || hardStateDirty }

    var lastIndex: LogIndex { LogIndex(UInt64(entries.count)) }

    func entry(at index: LogIndex) -> Entry? {
        guard index.rawValue >= 1, index.rawValue <= UInt64(entries.count) else { return nil }
        return entries[Int(index.rawValue - 1)]
    }

    /// The hash of entries 1...index (0 for the empty prefix).
    func prefixHash(at index: LogIndex) -> UInt64 {
        index == .zero ? 0 : prefixHashes[Int(index.rawValue - 1)]
    }

    func truncate(after index: LogIndex) {
        precondition(index <= lastIndex, "truncate after \(index) past the end \(lastIndex)")
        let keep = Int(index.rawValue)
        unchangedSinceSync = min(unchangedSinceSync, keep)
        entries.removeSubrange(keep...)
        prefixHashes.removeSubrange(keep...)
        pending.append(.truncate(after: index))
    }

    func append(_ new: [Entry]) {
        guard !new.isEmpty else { return }
        for e in new {
            precondition(e.index == lastIndex.next, "disk append: expected index \(lastIndex.next), got \(e.index)")
            let h = Self.mix(prefixHash(at: lastIndex), e)
            entries.append(e)
            prefixHashes.append(h)
        }
        pending.append(.append(new))
    }

    func write(hardState hs: HardState) {
        hardState = hs
        hardStateDirty = true
    }

    /// Retention: the entries up to `index` (durable and applied) are no longer readable.
    func deletePrefix(through index: LogIndex) {
        precondition(index < lastIndex && Int(index.rawValue) <= durableEntries.count, "delete a prefix through \(index) of a log ending at \(lastIndex)")
        if index >= firstIndex { firstIndex = index.next }
    }

    /// A Ready's `resetLog`: the log becomes the leader's committed `prefix` (1...base), readable from
    /// base + 1 on; what was not synced is gone, as LogStore.reset discards it.
    func reset(toPrefix prefix: [Entry]) {
        entries = []
        prefixHashes = []
        for e in prefix {
            prefixHashes.append(Self.mix(prefixHashes.last ?? 0, e))
            entries.append(e)
        }
        durableEntries = prefix
        pendingBase += pending.count
        pending.removeAll()
        unchangedSinceSync = prefix.count
        firstIndex = LogIndex(UInt64(prefix.count)).next
    }

    /// Names what is written now, for a sync that starts now and returns later (`sync(through:)`).
    var syncTicket: Int { pendingBase + pending.count }

    /// A sync that started when `ticket` was taken returned: the operations written before it are
    /// durable (those written since may or may not be; a crash decides). The hard state is not
    /// touched (a deferred sync is the log's only).
    func sync(through ticket: Int) {
        let k = min(ticket - pendingBase, pending.count)
        guard k > 0 else { return }
        for op in pending.prefix(k) { apply(op, to: &durableEntries) }
        pending.removeFirst(k)
        pendingBase += k
        // The visible log is the durable one with the remaining operations applied: they agree up to
        // the first cut among those (appends only extend).
        var agree = durableEntries.count
        for case .truncate(let after) in pending { agree = min(agree, Int(after.rawValue)) }
        unchangedSinceSync = agree
    }

    /// fdatasync: everything written so far becomes durable.
    func sync() {
        for op in pending { apply(op, to: &durableEntries) }
        pendingBase += pending.count
        pending.removeAll()
        unchangedSinceSync = entries.count
        if hardStateDirty {
            durableHardState = hardState
            hardStateDirty = false
        }
        assert(durableEntries.count == entries.count, "after a sync the durable log is the visible log")
    }

    /// Power cut. Returns a description of what was lost, for the trace.
    @discardableResult
    func crash(_ random: inout SimRandom, tearProbability: Double) -> String {
        let kept = pending.isEmpty ? 0 : random.int(in: 0...pending.count)
        var torn = ""
        for (k, op) in pending.prefix(kept).enumerated() {
            if k == kept - 1, case .append(let es) = op, es.count > 1, random.chance(tearProbability) {
                let cut = random.int(in: 0...(es.count - 1))
                apply(.append(Array(es.prefix(cut))), to: &durableEntries)
                torn = ", tore the last append after \(cut) of \(es.count) entries"
            } else {
                apply(op, to: &durableEntries)
            }
        }
        let lostOps = pending.count - kept
        pendingBase += pending.count
        let keptHardState = hardStateDirty && random.chance(0.5)
        if keptHardState { durableHardState = hardState }
        let lostHardState = hardStateDirty && !keptHardState
        pending.removeAll()
        hardStateDirty = false
        // Reboot: the page cache is gone; what the node reads is what survived.
        let same = min(unchangedSinceSync, durableEntries.count)
        entries.removeSubrange(same...)
        prefixHashes.removeSubrange(same...)
        for e in durableEntries[same...] {
            prefixHashes.append(Self.mix(prefixHashes.last ?? 0, e))
            entries.append(e)
        }
        assert(entries == durableEntries, "after a crash the node reads what is durable")
        unchangedSinceSync = entries.count
        hardState = durableHardState
        return "kept \(kept) of \(kept + lostOps) unsynced writes\(torn)" + (lostHardState ? ", lost the unsynced hard state" : "")
    }

    private func apply(_ op: Operation, to log: inout [Entry]) {
        switch op {
        case .truncate(let after): log.removeSubrange(Int(after.rawValue)...)
        case .append(let es):
            precondition(es.isEmpty || es[0].index.rawValue == UInt64(log.count) + 1, "durable append leaves a gap")
            log.append(contentsOf: es)
        }
    }

    /// FNV-1a over the previous prefix hash, the term, the index and the data.
    static func mix(_ previous: UInt64, _ e: Entry) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ previous
        func feed(_ v: UInt64) {
            var v = v
            for _ in 0..<8 {
                h = (h ^ (v & 0xff)) &* 0x100_0000_01b3
                v >>= 8
            }
        }
        feed(e.term.rawValue)
        feed(e.index.rawValue)
        for b in e.data { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }
}

/// The node's read-only view of its disk.
final class SimLogReader: RaftLogReader {
    let disk: SimDisk
    init(disk: SimDisk) { self.disk = disk }

    var firstIndex: LogIndex { disk.firstIndex }
    var lastIndex: LogIndex { disk.lastIndex }

    /// Down to `firstIndex - 1`, the base, whose term the leader needs.
    func term(at index: LogIndex) -> Term? {
        guard index >= disk.firstIndex.previous else { return nil }
        return disk.entry(at: index)?.term
    }

    func entries(in range: ClosedRange<LogIndex>, maxBytes: Int) -> [Entry] {
        precondition(range.lowerBound >= disk.firstIndex && range.upperBound <= disk.lastIndex, "entries \(range) outside the log \(disk.firstIndex)...\(disk.lastIndex)")
        var out: [Entry] = []
        var bytes = 0
        var i = range.lowerBound
        while i <= range.upperBound {
            let e = disk.entry(at: i)!
            bytes += e.data.count
            if !out.isEmpty && bytes > maxBytes { break }
            out.append(e)
            i = i.next
        }
        return out
    }
}
