import RaftCore

/// The deadlines of the proposals waiting for their commit, soonest first (a binary min-heap).
/// Entries of proposals already answered stay until they expire or `keep` drops them.
struct DeadlineHeap {
    struct Item {
        var deadline: ContinuousClock.Instant
        var index: RaftCore.LogIndex
        var term: RaftCore.Term
    }

    private var items: [Item] = []
    var count: Int { items.count }
    /// The soonest deadline (perhaps of a proposal answered since).
    var earliest: ContinuousClock.Instant? { items.first?.deadline }

    mutating func push(_ deadline: ContinuousClock.Instant, _ index: RaftCore.LogIndex, _ term: RaftCore.Term) {
        items.append(Item(deadline: deadline, index: index, term: term))
        var k = items.count - 1
        while k > 0 {
            let parent = (k - 1) / 2
            guard items[k].deadline < items[parent].deadline else { break }
            items.swapAt(k, parent)
            k = parent
        }
    }

    /// The soonest item if it is due at `now`, removed.
    mutating func popExpired(_ now: ContinuousClock.Instant) -> (RaftCore.LogIndex, RaftCore.Term)? {
        guard let top = items.first, top.deadline <= now else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            siftDown(0)
        }
        return (top.index, top.term)
    }

    /// Removes the soonest items while `stale` says so (stops at the first it keeps).
    mutating func dropLeading(while stale: (Item) -> Bool) {
        while let top = items.first, stale(top) {
            let last = items.removeLast()
            if !items.isEmpty {
                items[0] = last
                siftDown(0)
            }
        }
    }

    /// Keeps only the items `include` accepts.
    mutating func keep(_ include: (Item) -> Bool) {
        items = items.filter(include)
        var k = items.count / 2
        while k > 0 {
            k -= 1
            siftDown(k)
        }
    }

    private mutating func siftDown(_ start: Int) {
        var k = start
        while true {
            let l = 2 * k + 1, r = l + 1
            var m = k
            if l < items.count && items[l].deadline < items[m].deadline { m = l }
            if r < items.count && items[r].deadline < items[m].deadline { m = r }
            if m == k { return }
            items.swapAt(k, m)
            k = m
        }
    }
}
