import RaftCore

/// RaftCore stepping: three nodes whose network and clocks the input drives, byte by byte (ticks,
/// deliveries in any order, drops, duplicates, proposals, crashes that keep only what was persisted),
/// with Raft's safety properties checked after every step. A violation traps, so libFuzzer keeps the
/// input: at most one leader per term; terms and commit indexes never go back on a node; every
/// committed entry is the same everywhere and stays in every log that committed it.
final class FuzzCluster {
    let ids = (1...3).map { NodeID(UInt64($0)) }
    var logs: [MemoryLog]
    var hard: [HardState]
    var nodes: [RaftNode<MemoryLog>]
    var network: [Message] = []
    /// Every committed entry seen, by index.
    var committed: [UInt64: Entry] = [:]
    var leaders: [Term: NodeID] = [:]
    var lastTerm: [Term]
    var lastCommit: [LogIndex]
    var proposals: UInt8 = 0

    init() {
        logs = ids.map { _ in MemoryLog() }
        hard = ids.map { _ in HardState() }
        nodes = []
        lastTerm = ids.map { _ in .zero }
        lastCommit = ids.map { _ in .zero }
        for k in 0..<3 { nodes.append(make(k)) }
    }

    func make(_ k: Int) -> RaftNode<MemoryLog> {
        var c = RaftConfig(id: ids[k], voters: ids)
        c.electionTimeoutTicks = 3
        c.electionTimeoutMaxTicks = 6
        c.heartbeatTicks = 1
        c.randomSeed = UInt64(k + 1)
        return RaftNode(config: c, log: logs[k], hardState: hard[k])
    }

    func violated(_ what: String) -> Never { fatalError("Raft safety violated: \(what)") }

    func drain(_ k: Int) {
        var rounds = 0
        while nodes[k].hasReady && rounds < 64 {
            rounds += 1
            let r = nodes[k].ready()
            if let t = r.truncateAfter, t < lastCommit[k] { violated("n\(k + 1) truncates after \(t), below its commit \(lastCommit[k])") }
            logs[k].write(truncateAfter: r.truncateAfter, entries: r.entries)
            if let hs = r.hardState { hard[k] = hs }
            for e in r.committedEntries {
                if let seen = committed[e.index.rawValue], seen.term != e.term || seen.data != e.data {
                    violated("index \(e.index) committed as term \(seen.term) and as term \(e.term)")
                }
                committed[e.index.rawValue] = e
            }
            if network.count < 512 { network += r.messages + r.messagesAfterPersist }
            nodes[k].advance(r)
        }
        check(k)
    }

    func check(_ k: Int) {
        let n = nodes[k]
        if n.term < lastTerm[k] { violated("n\(k + 1)'s term went from \(lastTerm[k]) to \(n.term)") }
        if n.commitIndex < lastCommit[k] { violated("n\(k + 1)'s commit went from \(lastCommit[k]) to \(n.commitIndex)") }
        if n.commitIndex > n.lastIndex { violated("n\(k + 1) commits \(n.commitIndex) beyond its last index \(n.lastIndex)") }
        lastTerm[k] = n.term
        lastCommit[k] = n.commitIndex
        if n.role == .leader {
            if let other = leaders[n.term], other != ids[k] { violated("term \(n.term) has leaders \(other) and \(ids[k])") }
            leaders[n.term] = ids[k]
        }
        // Every committed entry this node holds at or below its commit is the committed one.
        var i = UInt64(1)
        while i <= n.commitIndex.rawValue {
            if let c = committed[i], logs[k].term(at: LogIndex(i)) != c.term { violated("n\(k + 1) holds term \(String(describing: logs[k].term(at: LogIndex(i)))) at committed index \(i) (term \(c.term))") }
            i += 1
        }
    }

    func run(_ input: UnsafeBufferPointer<UInt8>) {
        var i = 0
        func next() -> Int {
            defer { i += 1 }
            return i < input.count ? Int(input[i]) : 0
        }
        while i < input.count {
            let op = next() % 8, arg = next()
            switch op {
            case 0:
                nodes[arg % 3].tick()
                drain(arg % 3)
            case 1, 6:
                guard !network.isEmpty else { continue }
                let m = network.remove(at: op == 6 ? 0 : arg % network.count)
                let k = Int(m.to.rawValue) - 1
                nodes[k].step(m)
                drain(k)
            case 2:
                if !network.isEmpty { network.remove(at: arg % network.count) }
            case 3:
                if !network.isEmpty && network.count < 512 { network.append(network[arg % network.count]) }
            case 4:
                proposals &+= 1
                _ = try? nodes[arg % 3].propose([proposals, UInt8(truncatingIfNeeded: arg)])
                drain(arg % 3)
            case 5:
                // A crash: only the log and the hard state survive; messages in flight stay in flight.
                let k = arg % 3
                nodes[k] = make(k)
                lastCommit[k] = min(lastCommit[k], hard[k].commit)
                drain(k)
            default:
                for k in 0..<3 {
                    nodes[k].tick()
                    drain(k)
                }
            }
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    FuzzCluster().run(UnsafeBufferPointer(start: data, count: min(size, 8_192)))
    return 0
}
