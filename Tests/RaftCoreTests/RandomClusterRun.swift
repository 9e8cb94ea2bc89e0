@testable import RaftCore
import TestSupport

/// The seeded generator of the paper-rule tests' random runs (RaftCore's own generator stays inside).
final class TestRandom {
    private var generator: SplitMix64
    init(seed: UInt64) { generator = SplitMix64(seed: seed) }
    func next() -> UInt64 { generator.next() }
    func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
    /// True with probability `percent`/100.
    func percent(_ percent: Int) -> Bool { below(100) < percent }
}

/// What a seeded run of a whole group saw, for checks of the paper's safety properties.
struct RandomRunObservations {
    var seed: UInt64
    /// Every node seen leading, by term.
    var leadersByTerm: [Term: Set<NodeID>] = [:]
    /// Descriptions of every property violation seen, with the step it was seen at.
    var logMatchingViolations: [String] = []
    var stateMachineViolations: [String] = []
    var highestCommit: LogIndex = .zero
}

/// Runs a group of `count` nodes for `steps` random steps: time passes, messages are delivered,
/// dropped, delayed (and so reordered), writes are slow, the network partitions and heals, nodes
/// crash and restart (losing writes not yet done), and leaders take proposals. After every step it records who leads, and checks that durable logs
/// obey Log Matching and that no two nodes applied different entries at one index.
func randomClusterRun(seed: UInt64, count: Int = 5, steps: Int = 3000,
                      configure: (inout RaftConfig) -> Void = { _ in }) -> RandomRunObservations {
    let random = TestRandom(seed: seed)
    let c = TranscriptCluster()
    c.addNodes(count) { config in
        config.randomSeed = seed
        configure(&config)
    }
    var seen = RandomRunObservations(seed: seed)
    var proposals = 0
    for step in 0..<steps {
        let r = random.below(100)
        switch r {
        case 0..<45:
            for id in c.ids { c[id].tick() }
        case 45..<80:
            // Some writes take a while: the Ready's messages leave, its write waits (and a crash
            // before `persist` loses it).
            for id in c.ids where c.hasReady(id) { c.processReady(id, hold: random.percent(30)) }
            // Each message is delivered (70%), dropped (10%) or kept for later (20%: reordering).
            var fate: [Int] = []
            for _ in c.queue { fate.append(random.below(10)) }
            var k = 0
            c.deliver(drop: true) { _ in defer { k += 1 }; return fate[k] == 0 }
            let kept = fate.filter { $0 != 0 }
            k = 0
            c.deliver { _ in defer { k += 1 }; return kept[k] < 8 }
        case 80..<85:
            for id in c.ids { c.persist(id) }
        case 85..<92:
            for id in c.ids where c[id].role == .leader {
                proposals += 1
                _ = try? c[id].propose(Array("p\(proposals)".utf8))
            }
        case 92..<96:
            if random.percent(50) {
                c.heal()
            } else {
                let cut = c.ids.filter { _ in random.percent(40) }
                c.partition([cut, c.ids.filter { !cut.contains($0) }])
            }
        case 96..<98:
            c.restart(c.ids[random.below(count)])
        default:
            if let id = c.ids.first(where: { c[$0].role != .leader }) {
                c[id].campaign(.preVote)
            }
        }
        record(c, into: &seen, step: step)
    }
    return seen
}

private func record(_ c: TranscriptCluster, into seen: inout RandomRunObservations, step: Int) {
    for id in c.ids where c[id].role == .leader {
        seen.leadersByTerm[c[id].term, default: []].insert(id)
    }
    for id in c.ids { seen.highestCommit = max(seen.highestCommit, c[id].commitIndex) }
    for (k, a) in c.ids.enumerated() {
        for b in c.ids[(k + 1)...] {
            if let v = logMatchingViolation(c.member(a).entries, c.member(b).entries) {
                seen.logMatchingViolations.append("step \(step), \(a) and \(b): \(v)")
            }
            let x = c.member(a).applied, y = c.member(b).applied
            for i in 0..<min(x.count, y.count) where x[i] != y[i] {
                seen.stateMachineViolations.append("step \(step): \(a) applied \(x[i]), \(b) applied \(y[i])")
                break
            }
        }
    }
}

/// Raft §5.3 Log Matching: if two logs hold an entry with the same index and term, the logs are
/// identical up to that index. Checking the highest such index covers all lower ones.
func logMatchingViolation(_ a: [Entry], _ b: [Entry]) -> String? {
    var i = min(a.count, b.count) - 1
    while i >= 0 {
        if a[i].term == b[i].term {
            for j in 0...i where a[j] != b[j] {
                return "both hold term \(a[i].term) at index \(i + 1) but differ at index \(j + 1): \(a[j]) vs \(b[j])"
            }
            return nil
        }
        i -= 1
    }
    return nil
}
