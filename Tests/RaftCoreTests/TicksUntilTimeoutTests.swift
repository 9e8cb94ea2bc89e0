import Testing
@testable import RaftCore
import TestSupport

/// `ticksUntilTimeout` lets a driver sleep through ticks that would only count: every tick before
/// it must change nothing but the counters (a leader's also sends the commit updates it owes,
/// `commitUpdateDue`), and the one it names must act.
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
        // n2's acknowledgement committed the leader's first entry; n3 got the commit with the append
        // that followed its probe's answer, but nothing has carried it to n2. The first tick, a
        // counting one, sends n2 a bare update (it names no tick sooner: the driver wakes for it
        // through `commitUpdateDue`).
        #expect(leader.commitIndex == LogIndex(1) && c[NodeID(2)].commitIndex == .zero && !leader.hasReady)
        #expect(leader.commitUpdateDue && leader.ticksUntilTimeout == 4)
        leader.tick()
        #expect(leader.hasReady && !leader.commitUpdateDue, "tick 1: the owed commit update")
        c.stabilize()
        #expect(c[NodeID(2)].commitIndex == LogIndex(1) && c[NodeID(3)].commitIndex == LogIndex(1))
        // Heartbeats at ticks 4, 8, 12, 16, 20; quorum checks at 10 and 20.
        var named: [Int] = []
        var ticks = 1
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
        #expect(named == [3, 4, 2, 2, 4, 4])
    }

    /// A commit advanced while entries are in flight, that nothing has carried to the followers yet,
    /// goes out with the leader's next tick, a counting one too; it names no tick sooner (a driver
    /// wakes for it through `commitUpdateDue`).
    @Test func anOwedCommitUpdateGoesOutWithTheNextTick() throws {
        let c = TranscriptCluster()
        c.addNodes(3) { config in
            config.heartbeatTicks = 4
            config.electionTimeoutTicks = 10
        }
        c[NodeID(1)].campaign(.election)
        c.stabilize()
        let leader = c[NodeID(1)]
        // a reaches the followers; b is proposed; the answers to a commit a with b in flight.
        for line in ["propose n1 a", "process-ready n1", "deliver-msgs", "propose n1 b", "process-ready n1,n2,n3",
                     "deliver-msgs type=AppResp", "process-ready n1"] {
            _ = try c.run(line)
        }
        #expect(leader.commitIndex == LogIndex(2) && leader.lastIndex == LogIndex(3) && !leader.hasReady)
        #expect(leader.commitUpdateDue && leader.ticksUntilTimeout == 4)
        leader.tick()
        #expect(!leader.commitUpdateDue && leader.ticksUntilTimeout == 3)
        let r = leader.ready()
        #expect(r.messages.map(\.description).sorted() == ["n1->n2 t1 App prev=1/3 commit=2 entries=[]", "n1->n3 t1 App prev=1/3 commit=2 entries=[]"])
        leader.advance(r)
    }

    /// Random runs of a whole group (messages lost, delayed and reordered, partitions, restarts,
    /// proposals): whenever a node had nothing to do and named more than one tick, one tick left it
    /// in the same role and term, one tick closer, with nothing to do but the commit updates it
    /// owed (`commitUpdateDue`).
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
                    let (role, term, n, due) = (node.role, node.term, node.ticksUntilTimeout, node.commitUpdateDue)
                    let (sent, sentAfterPersist) = (node.outbox.count, node.outboxAfterPersist.count)
                    // The followers a due update goes to: owed the commit, their window open.
                    let owed = node.role == .leader ? node.withLeader { l in
                        c.ids.filter { $0 != id && l.progress[$0]!.commitSent < node.commitIndex && !l.progress[$0]!.isPaused }
                    } : []
                    node.tick()
                    if n > 1 {
                        #expect(node.ticksUntilTimeout == n - 1, "seed \(seed): \(id) \(role) named \(n)")
                        if quiet {
                            checked += 1
                            #expect(node.role == role && node.term == term && !node.commitUpdateDue, "seed \(seed): \(id) acted \(n) ticks early")
                            // Nothing to do but the commit updates it owed: appends to followers
                            // (with the entries one was missing, if any).
                            let updates = node.outboxAfterPersist.count == sentAfterPersist && node.outbox[sent...].allSatisfy {
                                if case .append = $0.body { return true } else { return false }
                            }
                            #expect(due ? updates : !c.hasReady(id), "seed \(seed): \(id) acted \(n) ticks early")
                            if due {
                                // Each of them was sent the commit (an append, or one it joined).
                                #expect(!owed.isEmpty && node.withLeader { l in owed.allSatisfy { l.progress[$0]!.commitSent >= node.commitIndex } },
                                        "seed \(seed): \(id) owed \(owed) the commit and did not send it")
                            }
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
