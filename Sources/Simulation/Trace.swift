import RaftCore

/// What happened in a run, kept cheaply (values, formatted only when printed) in a ring buffer, so
/// a failure can show the events that led to it.
struct Trace {
    enum Event {
        case deliver(Message)
        case drop(Message, reason: StaticString)
        case role(NodeID, SoftState, Term)
        case commit(NodeID, LogIndex)
        case proposed(NodeID, client: Int, index: LogIndex, term: Term)
        case acked(NodeID, client: Int, index: LogIndex)
        case read(NodeID, index: LogIndex)
        case fault(String)
    }

    private var ring: [(SimTime, Event)?]
    private var next = 0
    private(set) var total = 0
    /// Faults are few and all matter: kept whole, apart from the ring.
    private(set) var faults: [(SimTime, String)] = []
    /// When set, every event is also printed as it happens (`raftsim --trace`).
    var echo: ((String) -> Void)?

    init(capacity: Int) {
        precondition(capacity > 0, "trace capacity must be positive")
        ring = Array(repeating: nil, count: capacity)
    }

    mutating func record(_ time: SimTime, _ event: Event) {
        ring[next] = (time, event)
        next = (next + 1) % ring.count
        total += 1
        if case .fault(let f) = event { faults.append((time, f)) }
        if let echo { echo(Self.format(time, event)) }
    }

    /// The last `count` events, oldest first.
    func last(_ count: Int) -> [String] {
        let n = min(count, min(total, ring.count))
        var out: [String] = []
        for k in 0..<n {
            let slot = (next - n + k + ring.count) % ring.count
            if let (t, e) = ring[slot] { out.append(Self.format(t, e)) }
        }
        return out
    }

    static func format(_ t: SimTime, _ e: Event) -> String {
        let body: String
        switch e {
        case .deliver(let m): body = "deliver " + m.description
        case .drop(let m, let reason): body = "drop (\(reason)) " + m.description
        case .role(let n, let s, let term): body = "\(n) is \(s.role) in term \(term)" + (s.leader.map { ", leader \($0)" } ?? "")
        case .commit(let n, let i): body = "\(n) commit=\(i)"
        case .proposed(let n, let c, let i, let term): body = "client \(c) proposed at \(n): \(term)/\(i)"
        case .acked(let n, let c, let i): body = "client \(c) acknowledged by \(n): index \(i)"
        case .read(let n, let i): body = "\(n) read index \(i)"
        case .fault(let f): body = "FAULT " + f
        }
        return "\(t) \(body)"
    }
}
