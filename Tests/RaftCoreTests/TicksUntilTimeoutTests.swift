import Testing
@testable import RaftCore
import TestSupport

/// `ticksUntilTimeout` lets a driver sleep through ticks that would only count: every tick before
/// it must change nothing but the counters, and the one it names must act.
@Suite(.ownThreads) struct TicksUntilTimeoutTests {
    @Test func aFollowerCampaignsOnExactlyTheTickItNamed() {
        let c = TranscriptCluster()
        c.addNodes(3) { $0.preVote = true }
        let node = c[NodeID(1)]
        let n = node.ticksUntilTimeout
        #expect(n >= node.config.electionTimeoutTicks)
        for k in 1..<n {
            node.tick()
            #expect(node.role == .follower && !node.hasReady, "tick \(k) of \(n) only counts")
            #expect(node.ticksUntilTimeout == n - k)
        }
        node.tick()
        #expect(node.role == .preCandidate, "tick \(n) starts the pre-vote round")
        #expect(node.hasReady)
    }

    @Test func aLeaderNamesItsHeartbeatsAndItsQuorumChecks() {
        let c = TranscriptCluster()
        c.addNodes(3) { config in
            config.heartbeatTicks = 4
            config.electionTimeoutTicks = 10
            config.checkQuorum = true
        }
        c[NodeID(1)].campaign(.election)
        c.stabilize()
        let leader = c[NodeID(1)]
        #expect(leader.role == .leader)
        // Heartbeats at ticks 4, 8, 12, 16, 20; quorum checks at 10 and 20.
        var named: [Int] = []
        var ticks = 0
        for _ in 0..<6 {
            let n = leader.ticksUntilTimeout
            named.append(n)
            for _ in 1..<n {
                leader.tick()
                #expect(!leader.hasReady, "tick \(ticks + 1) only counts")
                ticks += 1
            }
            leader.tick()
            ticks += 1
            let heartbeat = ticks % 4 == 0, quorumCheck = ticks % 10 == 0
            #expect(leader.hasReady == heartbeat, "tick \(ticks): heartbeats to the followers iff one is due")
            if quorumCheck { #expect(leader.electionElapsed == 0, "tick \(ticks): the quorum check ran") }
            c.stabilize()
        }
        #expect(named == [4, 4, 2, 2, 4, 4])
    }

    /// Random runs of a whole group (messages lost, delayed and reordered, partitions, restarts,
    /// proposals): whenever a node had nothing to do and named more than one tick, one tick left it
    /// with nothing to do, in the same role and term, one tick closer.
    @Test(arguments: [UInt64(1), 2, 3, 4, 5, 6, 7, 8])
    func ticksBeforeTheNamedOneOnlyCount(seed: UInt64) {
        let random = TestRandom(seed: seed)
        let c = TranscriptCluster()
        let (preVote, checkQuorum, heartbeatTicks) = (random.percent(50), random.percent(50), 1 + random.below(3))
        c.addNodes(5) { config in
            config.randomSeed = seed
            config.preVote = preVote
            config.checkQuorum = checkQuorum
            config.heartbeatTicks = heartbeatTicks
        }
        var checked = 0, acted = 0
        for _ in 0..<3_000 {
            switch random.below(100) {
            case 0..<50:
                for id in c.ids {
                    let node = c[id]
                    let quiet = !c.hasReady(id)
                    let (role, term, n) = (node.role, node.term, node.ticksUntilTimeout)
                    node.tick()
                    if n > 1 {
                        #expect(node.ticksUntilTimeout == n - 1, "seed \(seed): \(id) \(role) named \(n)")
                        if quiet {
                            checked += 1
                            #expect(!c.hasReady(id) && node.role == role && node.term == term, "seed \(seed): \(id) acted \(n) ticks early")
                        }
                    } else if quiet && c.hasReady(id) {
                        acted += 1
                    }
                }
            case 50..<85:
                for id in c.ids where c.hasReady(id) { c.processReady(id, hold: random.percent(20)) }
                var k = 0
                let fate = c.queue.map { _ in random.below(10) }
                c.deliver(drop: true) { _ in defer { k += 1 }; return fate[k] == 0 }
                c.deliver { _ in random.below(10) < 8 }
            case 85..<90:
                for id in c.ids { c.persist(id) }
            case 90..<95:
                for id in c.ids where c[id].role == .leader { _ = try? c[id].propose([1, 2, 3]) }
            case 95..<98:
                if random.percent(50) { c.heal() } else { c.isolate(c.ids[random.below(5)]) }
            default:
                c.restart(c.ids[random.below(5)])
            }
        }
        #expect(checked > 1_000, "seed \(seed): only \(checked) quiet ticks were checked")
        #expect(acted > 10, "seed \(seed): the named tick acted only \(acted) times")
    }
}
