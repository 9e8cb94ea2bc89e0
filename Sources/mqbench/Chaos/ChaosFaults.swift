/// The faults a chaos run injects, each undone by its `heal`.
enum FaultKind: String, CaseIterable, Sendable {
    case killLeader = "kill-leader"
    case killFollower = "kill-follower"
    case killAll = "kill-all"
    case pauseLeader = "pause-leader"
    case pauseFollower = "pause-follower"
    case isolateNode = "isolate-node"
    case isolateLeader = "isolate-leader"
    case bridge
    case oneWay = "one-way"
    case slowDisk = "slow-disk"
    case diskFull = "disk-full"
}

/// A small, fast, seedable generator (SplitMix64): the same seed makes the same decisions.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// One applied fault: what was done and how to undo it.
struct AppliedFault: Sendable {
    var kind: FaultKind
    var description: String
    var heal: @Sendable (ChaosCluster) throws -> Void
}

extension ChaosCluster {
    /// Applies `kind`; `leader` is the node the cluster agrees leads (nil when none does), `pick`
    /// draws from the run's generator.
    func apply(_ kind: FaultKind, leader: Int?, pick: inout SeededRandom) -> AppliedFault {
        let any = Int.random(in: 0..<3, using: &pick)
        let l = leader ?? any
        let followers = [0, 1, 2].filter { $0 != l }
        let follower = followers[Int.random(in: 0..<2, using: &pick)]
        let reset = Bool.random(using: &pick)
        switch kind {
        case .killLeader, .killFollower:
            let n = nodes[kind == .killLeader ? l : follower]
            kill9(n)
            return AppliedFault(kind: kind, description: "SIGKILL \(n.name)", heal: { try $0.start(n) })
        case .killAll:
            for n in nodes { kill9(n) }
            return AppliedFault(kind: kind, description: "SIGKILL n0 n1 n2", heal: { c in for n in c.nodes { try c.start(n) } })
        case .pauseLeader, .pauseFollower:
            let n = nodes[kind == .pauseLeader ? l : follower]
            pause(n)
            return AppliedFault(kind: kind, description: "SIGSTOP \(n.name)", heal: { $0.resume(n) })
        case .isolateNode, .isolateLeader:
            let k = kind == .isolateLeader ? l : any
            for j in 0..<3 where j != k {
                cut(k, j, true, reset: reset)
                cut(j, k, true, reset: reset)
            }
            return AppliedFault(kind: kind, description: "isolate \(nodes[k].name)\(reset ? " (connections reset)" : "")", heal: { c in
                for j in 0..<3 where j != k {
                    c.cut(k, j, false, reset: false)
                    c.cut(j, k, false, reset: false)
                }
            })
        case .bridge:
            let middle = any
            let (a, b) = (([0, 1, 2].filter { $0 != middle })[0], ([0, 1, 2].filter { $0 != middle })[1])
            cut(a, b, true, reset: reset)
            cut(b, a, true, reset: reset)
            return AppliedFault(kind: kind, description: "bridge: \(nodes[a].name) x \(nodes[b].name), \(nodes[middle].name) sees both", heal: { c in
                c.cut(a, b, false, reset: false)
                c.cut(b, a, false, reset: false)
            })
        case .oneWay:
            // A leader that cannot reach a follower, or a follower whose answers are lost.
            let (a, b) = Bool.random(using: &pick) ? (l, follower) : (follower, l)
            cut(a, b, true, reset: reset)
            return AppliedFault(kind: kind, description: "drop \(nodes[a].name) -> \(nodes[b].name) (one way)", heal: { $0.cut(a, b, false, reset: false) })
        case .slowDisk:
            let n = nodes[Bool.random(using: &pick) ? l : follower]
            let ms = Int.random(in: 50...400, using: &pick)
            setDiskFaults(n, syncDelayMs: ms)
            return AppliedFault(kind: kind, description: "slow disk on \(n.name): +\(ms) ms per sync", heal: { $0.setDiskFaults(n) })
        case .diskFull:
            let n = nodes[Bool.random(using: &pick) ? l : follower]
            setDiskFaults(n, diskFull: true)
            // A node whose write failed stopped (fail-stop); with space back, the operator restarts it.
            // The supervisor restarts it once the space is back, as systemd would.
            return AppliedFault(kind: kind, description: "disk full on \(n.name) (writes fail with ENOSPC)", heal: { $0.setDiskFaults(n) })
        }
    }
}
