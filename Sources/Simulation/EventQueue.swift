/// A min-heap of timed events. Ties break by insertion order, so a run is deterministic.
struct EventQueue<Event> {
    private var heap: [(time: SimTime, seq: UInt64, event: Event)] = []
    private var nextSeq: UInt64 = 0

    var count: Int { heap.count }
    var isEmpty: Bool { heap.isEmpty }
    var nextTime: SimTime? { heap.first?.time }

    mutating func push(_ event: Event, at time: SimTime) {
        heap.append((time, nextSeq, event))
        nextSeq += 1
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard less(i, parent) else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> (time: SimTime, event: Event)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < heap.count && less(l, m) { m = l }
            if r < heap.count && less(r, m) { m = r }
            if m == i { break }
            heap.swapAt(i, m)
            i = m
        }
        return (top.time, top.event)
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        heap[a].time < heap[b].time || (heap[a].time == heap[b].time && heap[a].seq < heap[b].seq)
    }
}

/// Simulated time in microseconds since the start of the run.
public struct SimTime: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(microseconds: UInt64) { rawValue = microseconds }
    public static let zero = SimTime(microseconds: 0)
    public static func < (a: SimTime, b: SimTime) -> Bool { a.rawValue < b.rawValue }
    public static func + (a: SimTime, us: UInt64) -> SimTime { SimTime(microseconds: a.rawValue + us) }
    public var milliseconds: Double { Double(rawValue) / 1000 }
    public var description: String {
        let ms = rawValue / 1000, frac = rawValue % 1000
        let f = String(frac)
        return "\(ms)." + String(repeating: "0", count: 3 - f.count) + f + "ms"
    }
}
