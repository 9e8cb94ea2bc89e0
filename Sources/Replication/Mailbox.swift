import Synchronization

/// A bounded multi-producer, single-consumer queue: producers never wait (a full mailbox refuses the
/// item), the consumer takes everything available at once, so the driver steps a batch of inputs
/// before each Ready.
final class Mailbox<Item: Sendable>: Sendable {
    private struct State {
        var items: [Item] = []
        var head = 0
        var waiter: CheckedContinuation<Void, Never>?
        var closed = false
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) {
        precondition(limit > 0, "a mailbox holds at least one item")
        self.limit = limit
    }

    /// Queues `item`; false when the mailbox is full or closed.
    @discardableResult
    func offer(_ item: Item) -> Bool {
        let (accepted, waiter) = state.withLock { s -> (Bool, CheckedContinuation<Void, Never>?) in
            guard !s.closed, s.items.count - s.head < limit else { return (false, nil) }
            s.items.append(item)
            let w = s.waiter
            s.waiter = nil
            return (true, w)
        }
        waiter?.resume()
        return accepted
    }

    /// True when nothing is queued (the consumer would wait).
    var isEmpty: Bool { state.withLock { $0.items.count == $0.head } }

    /// Waits for at least one item, then returns up to `max` of them; empty once closed and drained.
    func take(max: Int) async -> [Item] {
        while true {
            let batch: [Item]? = state.withLock { s in
                let available = s.items.count - s.head
                if available == 0 { return s.closed ? [] : nil }
                let n = Swift.min(max, available)
                let out = Array(s.items[s.head..<(s.head + n)])
                s.head += n
                if s.head == s.items.count {
                    s.items.removeAll(keepingCapacity: true)
                    s.head = 0
                } else if s.head > 1024 && s.head * 2 > s.items.count {
                    s.items.removeFirst(s.head)
                    s.head = 0
                }
                return out
            }
            if let batch { return batch }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    if s.items.count - s.head > 0 || s.closed { return true }
                    s.waiter = c
                    return false
                }
                if resumeNow { c.resume() }
            }
        }
    }

    /// Closes the mailbox and returns what was still queued (to fail the callers waiting on it).
    func closeAndDrain() -> [Item] {
        let (rest, waiter) = state.withLock { s -> ([Item], CheckedContinuation<Void, Never>?) in
            s.closed = true
            let rest = Array(s.items[s.head...])
            s.items.removeAll()
            s.head = 0
            defer { s.waiter = nil }
            return (rest, s.waiter)
        }
        waiter?.resume()
        return rest
    }

    func close() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.closed = true
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
    }
}
