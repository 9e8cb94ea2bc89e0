/// The leader's view of one follower's log (etcd raft's Progress).
struct Progress {
    enum State: String {
        /// The leader does not know where the follower's log ends: one append per heartbeat until an
        /// answer tells it.
        case probe
        /// The follower accepted; appends stream optimistically up to the inflight limits.
        case replicate
    }

    /// The follower durably holds the leader's log up to here.
    var match: LogIndex = .zero
    /// The next index to send.
    var next: LogIndex
    var state: State = .probe
    /// In probe state: an append is out and unanswered; wait for its answer or the next heartbeat.
    var probeSent = false
    /// Heard from within the current check-quorum period.
    var recentActive = false
    /// The highest commit index a message to this follower has carried (an append, or a heartbeat's
    /// `min(match, commit)`): below the leader's commit, the follower is owed an update.
    var commitSent: LogIndex = .zero
    var inflights: Inflights

    init(next: LogIndex, maxCount: Int, maxBytes: Int) {
        self.next = next
        self.inflights = Inflights(maxCount: maxCount, maxBytes: maxBytes)
    }

    var isPaused: Bool {
        switch state {
        case .probe: return probeSent
        case .replicate: return inflights.isFull
        }
    }

    mutating func becomeProbe() {
        state = .probe
        next = match.next
        probeSent = false
        inflights.reset()
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match.next
        probeSent = false
        inflights.reset()
    }

    /// An append of entries through `last` (carrying `bytes`) was sent.
    mutating func sentEntries(through last: LogIndex?, bytes: Int) {
        switch state {
        case .replicate:
            if let last {
                next = last.next
                inflights.add(last: last, bytes: bytes)
            }
        case .probe:
            probeSent = true
        }
    }

    /// The follower accepted up to `index`. Returns false when the answer is stale.
    mutating func maybeUpdate(_ index: LogIndex) -> Bool {
        var updated = false
        if index > match {
            match = index
            updated = true
            probeSent = false
        }
        next = max(next, index.next)
        return updated
    }

    /// The follower rejected the append after `rejected`; `hint` is where to try next. Returns false
    /// when the rejection is stale (answers an append this progress has already moved past).
    mutating func maybeDecrease(rejected: LogIndex, hint: LogIndex) -> Bool {
        if state == .replicate {
            // Appends stream in order; a rejection at or below match is an old one.
            if rejected <= match { return false }
            next = match.next
            return true
        }
        // In probe state only the last probe's answer counts.
        if next.previous != rejected { return false }
        next = max(min(rejected, hint.next), match.next)
        probeSent = false
        return true
    }
}

/// The appends in flight to one follower, bounded in count and bytes (etcd's inflights ring).
struct Inflights {
    let maxCount: Int
    let maxBytes: Int
    private var items: [(last: LogIndex, bytes: Int)] = []
    private var head = 0
    private(set) var bytes = 0

    init(maxCount: Int, maxBytes: Int) {
        self.maxCount = maxCount
        self.maxBytes = maxBytes
    }

    var count: Int { items.count - head }
    var isFull: Bool { count >= maxCount || bytes >= maxBytes }

    mutating func add(last: LogIndex, bytes b: Int) {
        precondition(!isFull, "inflights: add while full")
        if let tail = items.last, head < items.count {
            precondition(last > tail.last, "inflights: appends must be added in index order")
        }
        items.append((last, b))
        bytes += b
    }

    /// Frees every append that ends at or before `index`.
    mutating func free(through index: LogIndex) {
        while head < items.count, items[head].last <= index {
            bytes -= items[head].bytes
            head += 1
        }
        compact()
    }

    mutating func freeFirst() {
        guard head < items.count else { return }
        bytes -= items[head].bytes
        head += 1
        compact()
    }

    mutating func reset() {
        items.removeAll(keepingCapacity: true)
        head = 0
        bytes = 0
    }

    private mutating func compact() {
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 64 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
    }
}
