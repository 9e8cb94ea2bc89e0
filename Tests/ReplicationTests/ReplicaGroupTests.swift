import Foundation
import LogFormat
import LogStore
import Logging
import NIOCore
import NIOPosix
import RaftCore
import Remoting
import Synchronization
import Testing
@testable import LogStore
@testable import Replication
import TestSupport

/// What one replica applied, in order.
private actor Applied {
    private(set) var entries: [RaftCore.Entry] = []
    /// The store position the driver gave with each applied entry, nil where it gave none.
    private(set) var positions: [LogPosition?] = []
    func add(_ batch: CommittedEntries) {
        entries.append(contentsOf: batch.entries)
        positions += batch.positions ?? Array(repeating: nil, count: batch.entries.count)
    }
    func reset() {
        entries = []
        positions = []
    }
    /// The payloads applied (no-ops left out).
    var payloads: [[UInt8]] { entries.filter { !$0.isEmpty }.map(\.data) }
}

private final class StopFlag: Sendable { let value = Atomic<Bool>(false) }

/// What a replica's status showed each time `onRoleChange` called.
private final class RoleChanges: @unchecked Sendable {
    var replica: RaftReplica?
    private let seen = Mutex<[(role: RaftCore.Role?, leader: NodeID?)]>([])
    func called() {
        let raft = replica?.status?.raft
        seen.withLock { $0.append((raft?.role, raft?.leader)) }
    }
    var all: [(role: RaftCore.Role?, leader: NodeID?)] { seen.withLock { $0 } }
}

/// Three replicas in this process on 127.0.0.1, .2 and .3, each with its own LogStore.
private final class ReplicaGroup: @unchecked Sendable {
    let root: String
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let addresses: [NodeID: String]
    var stores: [NodeID: LogStore] = [:]
    var replicas: [NodeID: RaftReplica] = [:]
    var tasks: [NodeID: Task<Void, any Error>] = [:]
    var roleChanges: [NodeID: RoleChanges] = [:]
    let applied: [NodeID: Applied]
    let ids = [NodeID(0), NodeID(1), NodeID(2)]

    init() async throws {
        root = NSTemporaryDirectory() + "raftmq-replica-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        // A free port on 127.0.0.1, used on all three addresses (each node binds its own).
        let probe = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = probe.localAddress!.port!
        try await probe.close()
        var a: [NodeID: String] = [:]
        var ap: [NodeID: Applied] = [:]
        for id in ids {
            a[id] = "127.0.0.\(id.rawValue + 1):\(port)"
            ap[id] = Applied()
        }
        addresses = a
        applied = ap
    }

    func commitlog(_ id: NodeID) -> String { root + "/\(id)/commitlog" }

    /// `loop`: run the replica on this event loop (`run(on:)`, as mqbroker runs it on the loop that
    /// also serves its clients); nil: on a loop of its own. `checkpointIntervalMs`: the store's
    /// checkpoint, which also syncs the log (a long one leaves every sync to the driver).
    func start(_ id: NodeID, on loop: (any EventLoop)? = nil, checkpointIntervalMs: Int = 1000, electionTimeoutTicks: Int = 30) throws {
        let dir = root + "/\(id)"
        let store = try LogStore.open(LogStoreOptions(directory: dir + "/commitlog", segmentBytes: 1 << 20, indexFileBytes: 32 * 4096, flushMode: .sync,
                                                      entryBodyBytesMax: 64 << 10, checkpointIntervalMs: checkpointIntervalMs))
        stores[id] = store
        var config = RaftConfig(id: id, voters: ids)
        config.electionTimeoutTicks = electionTimeoutTicks
        config.heartbeatTicks = 5
        config.randomSeed = UInt64.random(in: 0...UInt64.max)
        var options = RaftReplicaOptions(raft: config, peerAddresses: addresses)
        options.tickIntervalMs = 10
        let changes = RoleChanges()
        options.onRoleChange = { changes.called() }
        let sink = applied[id]!
        let replica = RaftReplica(options: options, store: store, hardStateFile: HardStateFile(path: dir + "/hardstate"),
                                  logger: Logger(label: "replica-\(id)")) { batch in await sink.add(batch) }
        changes.replica = replica
        roleChanges[id] = changes
        replicas[id] = replica
        tasks[id] = Task { try await replica.run(on: loop) }
    }

    /// Stops the replica as a crash of its process would (its store is closed after the task ends).
    func stop(_ id: NodeID) async throws {
        tasks[id]?.cancel()
        _ = await tasks[id]?.result
        try stores[id]?.close()
        tasks[id] = nil
        await applied[id]!.reset()
    }

    /// (Generous by default: the unit suites run in parallel on two cores, and a CPU-bound suite can
    /// hold back these tasks for seconds. Where speed is the point, the test times it itself.)
    func leader(among: [NodeID]? = nil, within seconds: Double = 20) async throws -> NodeID {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let leaders = (among ?? ids).filter { replicas[$0]?.status?.raft.role == .leader && tasks[$0] != nil }
            if leaders.count == 1 { return leaders[0] }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw NoLeader(description: "no single leader within \(seconds) s: " + roles())
    }

    func roles() -> String {
        ids.map { "\($0): \(replicas[$0]?.status.map { "\($0.raft.role) t\($0.raft.term) leader=\($0.raft.leader.map { "\($0)" } ?? "-") last=\($0.raft.lastIndex) commit=\($0.raft.commit)" } ?? "stopped")" }
            .joined(separator: ", ")
    }

    struct NoLeader: Error, CustomStringConvertible { var description: String }

    func waitApplied(_ id: NodeID, count: Int, within seconds: Double = 20) async throws -> [[UInt8]] {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let p = await applied[id]!.payloads
            if p.count >= count { return p }
            try await Task.sleep(for: .milliseconds(20))
        }
        return await applied[id]!.payloads
    }

    func shutdown() async throws {
        for id in ids where tasks[id] != nil { try await stop(id) }
        try await group.shutdownGracefully()
        try? FileManager.default.removeItem(atPath: root)
    }
}

@Suite(.serialized, .ownThreads) struct ReplicaGroupTests {
    @Test func threeReplicasElectALeaderAndCommitTheSameEntriesInOrder() async throws {
        let g = try await ReplicaGroup()
        do {
            for id in g.ids { try g.start(id) }
            let leader = try await g.leader()
            var indexes: [RaftCore.LogIndex] = []
            for k in 0..<50 { indexes.append(try await g.replicas[leader]!.propose(Array("m\(k)".utf8))) }
            #expect(indexes == indexes.sorted() && Set(indexes).count == 50, "each proposal has its own index, in order")
            let expected = (0..<50).map { Array("m\($0)".utf8) }
            for id in g.ids {
                #expect(try await g.waitApplied(id, count: 50) == expected, "\(id) applied the same entries in the same order")
                // Each member wrote these lately: apply gets their store positions, and they are
                // where the store holds them.
                let (entries, positions) = (await g.applied[id]!.entries, await g.applied[id]!.positions)
                for (e, p) in zip(entries, positions) {
                    let stored = try g.stores[id]!.read(from: LogFormat.LogIndex(UInt64(g.replicas[id]!.storeNumber(e.index))), maxBytes: 1)
                    #expect(p != nil && p == stored.first?.position, "\(id): entry \(e.index) applied at \(String(describing: p)), stored at \(String(describing: stored.first?.position))")
                }
            }
            // Each member was told of its role changes once its status showed them: the last call
            // saw the role and leader it has now.
            for id in g.ids {
                let last = g.roleChanges[id]!.all.last
                let now = g.replicas[id]!.status?.raft
                #expect(last != nil && last?.role == now?.role && last?.leader == now?.leader && now?.leader == leader,
                        "\(id): last role change seen \(String(describing: last)), status \(String(describing: now?.role)) led by \(String(describing: now?.leader))")
            }
            // A follower refuses proposals and names the leader.
            let follower = g.ids.first { $0 != leader }!
            await #expect(throws: ReplicaError.refused(.notLeader(leader: leader))) { _ = try await g.replicas[follower]!.propose([1]) }
        } catch {
            try await g.shutdown()
            throw error
        }
        try await g.shutdown()
    }

    /// Idle, the driver sleeps until its next timeout (docs/replication.md, "Ticks"): the leader
    /// wakes for its heartbeats (every 5 ticks here; its quorum checks, every 300, fall on
    /// heartbeat ticks), a follower only when its election timeout (3-6 s here, so that a suite
    /// holding the CPU cannot cause an election) would have run out, where every 10 ms tick used
    /// to wake each of them. The heartbeats still flow: nobody campaigns.
    @Test func anIdleGroupWakesForItsTimeoutsNotForEveryTick() async throws {
        let g = try await ReplicaGroup()
        do {
            for id in g.ids { try g.start(id, electionTimeoutTicks: 300) }
            let leader = try await g.leader()
            _ = try await g.replicas[leader]!.propose([1])
            for id in g.ids { _ = try await g.waitApplied(id, count: 1) }
            try await Task.sleep(for: .milliseconds(300))
            let term = g.replicas[leader]!.status!.raft.term
            let before = g.ids.map { g.replicas[$0]!.alarmsFired.load(ordering: .relaxed) }
            let started = ContinuousClock.now
            try await Task.sleep(for: .seconds(2))
            let seconds = (ContinuousClock.now - started) / .seconds(1)
            for (k, id) in g.ids.enumerated() {
                let perSecond = Double(g.replicas[id]!.alarmsFired.load(ordering: .relaxed) - before[k]) / seconds
                let status = g.replicas[id]!.status!.raft
                #expect(status.term == term && status.leader == leader, "\(id): no election while idle (\(g.roles()))")
                if id == leader {
                    // 20 heartbeats a second.
                    #expect(perSecond > 5 && perSecond < 30, "the leader's alarm went off \(perSecond) times a second")
                } else {
                    // Each heartbeat pushes the timeout back; the alarm goes off where it was set,
                    // at most once in the window.
                    #expect(perSecond < 3, "\(id)'s alarm went off \(perSecond) times a second")
                }
            }
        } catch {
            try await g.shutdown()
            throw error
        }
        try await g.shutdown()
    }

    /// Under SYNC_FLUSH a leader syncs its own appends beside the followers' (`deferLeaderSync`):
    /// with one follower down, every commit needs the leader's own copy, so nothing commits unless
    /// its deferred syncs are made and reported; once idle, its durable end is its last index.
    @Test func withAFollowerDownEveryCommitWaitsForTheLeadersOwnDeferredSync() async throws {
        let g = try await ReplicaGroup()
        do {
            for id in g.ids { try g.start(id) }
            let leader = try await g.leader()
            let down = g.ids.first { $0 != leader }!
            try await g.stop(down)
            let syncsBefore = g.stores[leader]!.statistics.dataSyncs
            for k in 0..<40 { _ = try await g.replicas[leader]!.propose(Array("d\(k)".utf8), timeout: .seconds(20)) }
            let up = g.ids.first { $0 != leader && $0 != down }!
            #expect(try await g.waitApplied(up, count: 40).count == 40)
            #expect(g.stores[leader]!.statistics.dataSyncs > syncsBefore, "the leader never synced its own appends")
            let deadline = Date().addingTimeInterval(10)
            while let s = g.replicas[leader]!.status?.raft, s.persistedIndex < s.lastIndex, Date() < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            let s = try #require(g.replicas[leader]!.status?.raft)
            #expect(s.persistedIndex == s.lastIndex && s.commit == s.lastIndex, "durable \(s.persistedIndex), last \(s.lastIndex), commit \(s.commit)")
            #expect(g.stores[leader]!.durablePosition == g.stores[leader]!.writePosition)
        } catch {
            try await g.shutdown()
            throw error
        }
        try await g.shutdown()
    }

    /// mqbroker runs its replica on its first event loop, which also serves clients (`run(on:)`): a
    /// send read there is offered to the driver on that thread, and the driver answers it from its
    /// commit callback on that thread too. With a follower down, every commit needs the leader's own
    /// copy; on a shared loop its deferred syncs always go to the flusher, so if that path lost one,
    /// nothing would commit (the stores' checkpoints, which sync too, are an hour apart here).
    @Test func onALoopThatAlsoServesClientsOfferedEntriesCommitAndAreAnsweredThere() async throws {
        let sendCode: Int32 = 31_000
        let g = try await ReplicaGroup()
        let loops = Dictionary(uniqueKeysWithValues: g.ids.map { ($0, MultiThreadedEventLoopGroup(numberOfThreads: 1)) })
        let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = RemotingClient(group: clientGroup, logger: Logger(label: "clients"))
        var serving: [Task<Void, any Error>] = []
        let offLoop = Atomic<Int>(0)
        let offered = Atomic<Int>(0)
        func finish() async throws {
            await client.close()
            for t in serving { t.cancel(); _ = await t.result }
            try await g.shutdown()
            for l in loops.values { try await l.shutdownGracefully() }
            try await clientGroup.shutdownGracefully()
        }
        do {
            var ports: [NodeID: Int] = [:]
            for id in g.ids {
                let loop = loops[id]!.next()
                try g.start(id, on: loop, checkpointIntervalMs: 3_600_000)
                let replica = g.replicas[id]!
                let processor = RemotingProcessor(name: "send", codes: [sendCode], maxQueuedRequests: 1_000, inline: { request, connection in
                    if !loop.inEventLoop { offLoop.add(1, ordering: .relaxed) }
                    let data = request.body.map { Array($0.readableBytesView) } ?? []
                    let taken = replica.offer(data, guard: nil, timeout: .seconds(15)) { result in
                        if !loop.inEventLoop { offLoop.add(1, ordering: .relaxed) }
                        let code: Int32 = (try? result.get()) != nil ? 0 : 1
                        connection.respond(.response(to: request, code: code), to: request)
                    }
                    if taken { offered.add(1, ordering: .relaxed) }
                    return taken
                }) { request, _ in .response(to: request, code: 2, remark: "the mailbox was full") }
                let server = RemotingServer(options: RemotingServerOptions(host: "127.0.0.\(id.rawValue + 1)", port: 0), processors: [processor],
                                            group: loop, logger: Logger(label: "clients-\(id)"))
                let (bound, boundContinuation) = AsyncStream.makeStream(of: Int.self)
                serving.append(Task { try await server.run { boundContinuation.yield($0.port ?? 0) } })
                var it = bound.makeAsyncIterator()
                ports[id] = try #require(await it.next())
            }
            let leader = try await g.leader()
            let down = g.ids.first { $0 != leader }!
            try await g.stop(down)
            let up = g.ids.first { $0 != leader && $0 != down }!
            let syncsBefore = g.stores[leader]!.statistics.dataSyncs
            let connection = try await client.connection(to: "127.0.0.\(leader.rawValue + 1):\(ports[leader]!)")
            // 400 sends, 64 at a time, as a producer keeps them in flight.
            let codes = try await withThrowingTaskGroup(of: Int32.self) { tasks in
                var codes: [Int32] = []
                for k in 0..<400 {
                    if k >= 64, let c = try await tasks.next() { codes.append(c) }
                    tasks.addTask {
                        try await connection.request(.request(code: sendCode, opaque: 0, body: ByteBuffer(string: "s\(k)")), timeoutMilliseconds: 20_000).code
                    }
                }
                for try await c in tasks { codes.append(c) }
                return codes
            }
            #expect(codes.count == 400 && codes.allSatisfy { $0 == 0 }, "answers other than SEND_OK: \(codes.filter { $0 != 0 })")
            #expect(offered.load(ordering: .relaxed) == 400, "every send was taken on the loop")
            #expect(offLoop.load(ordering: .relaxed) == 0, "the offer or its commit callback ran off the replica's loop")
            #expect(g.stores[leader]!.statistics.dataSyncs > syncsBefore, "the leader never synced its own appends")
            let applied = try await g.waitApplied(up, count: 400)
            #expect(Set(applied) == Set((0..<400).map { Array("s\($0)".utf8) }) && applied.count == 400, "the follower applied every send once")
            #expect(try await g.waitApplied(leader, count: 400) == applied, "leader and follower applied the same order")
            let deadline = Date().addingTimeInterval(10)
            while let s = g.replicas[leader]!.status?.raft, s.persistedIndex < s.lastIndex, Date() < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            let s = try #require(g.replicas[leader]!.status?.raft)
            #expect(s.persistedIndex == s.lastIndex, "durable \(s.persistedIndex), last \(s.lastIndex)")
            #expect(g.stores[leader]!.durablePosition == g.stores[leader]!.writePosition)
        } catch {
            try await finish()
            throw error
        }
        try await finish()
    }

    @Test func whenTheLeaderStopsAnotherTakesOverAndNothingCommittedIsLost() async throws {
        let g = try await ReplicaGroup()
        do {
            for id in g.ids { try g.start(id) }
            let first = try await g.leader()
            for k in 0..<30 { _ = try await g.replicas[first]!.propose(Array("a\(k)".utf8)) }
            try await g.stop(first)
            let rest = g.ids.filter { $0 != first }
            let started = Date()
            let second = try await g.leader(among: rest, within: 5)
            let failover = Date().timeIntervalSince(started)
            #expect(second != first)
            #expect(failover < 2, "a new leader in \(failover) s")
            for k in 0..<20 { _ = try await g.replicas[second]!.propose(Array("b\(k)".utf8)) }
            // The old leader restarts from its disk and catches up with what it missed.
            try g.start(first)
            let expected = (0..<30).map { Array("a\($0)".utf8) } + (0..<20).map { Array("b\($0)".utf8) }
            for id in g.ids {
                let got = try await g.waitApplied(id, count: 50)
                #expect(got == expected, "\(id) (first leader \(first)): \(got.map { String(decoding: $0, as: UTF8.self) })")
            }
        } catch {
            try await g.shutdown()
            throw error
        }
        try await g.shutdown()
    }

    /// A guarded proposal lands exactly where its guard says, or nowhere.
    @Test func guardedProposalsLandAtTheirIndexInTheirTermOrAreRefused() async throws {
        let g = try await ReplicaGroup()
        do {
            for id in g.ids { try g.start(id) }
            let leader = try await g.leader()
            let replica = g.replicas[leader]!
            _ = try await replica.propose(Array("warm".utf8))
            func offer(_ data: String, _ guardValue: ProposalGuard) async -> Result<RaftReplica.Committed, any Error> {
                do {
                    return .success(try await withCheckedThrowingContinuation { c in
                        #expect(replica.offer(Array(data.utf8), guard: guardValue, timeout: .seconds(5), continuation: c))
                    })
                } catch { return .failure(error) }
            }
            // The status is published after each Ready: wait until it shows the warm-up committed.
            var status = replica.status!.raft
            for _ in 0..<100 where status.commit != status.lastIndex {
                try await Task.sleep(for: .milliseconds(10))
                status = replica.status!.raft
            }
            let next = status.lastIndex.next
            let term = status.term
            // Two in a row, the second numbered after the first without waiting for it: both land, in order.
            let second = Task<Result<RaftReplica.Committed, any Error>, Never>.detached {
                try? await Task.sleep(for: .milliseconds(1))
                return await offer("b", ProposalGuard(term: term, index: next.next))
            }
            let ra = await offer("a", ProposalGuard(term: term, index: next))
            let rb = await second.value
            #expect((try? ra.get())?.index == next && (try? rb.get())?.index == next.next, "\(ra) \(rb)")
            // A wrong index or a wrong term appends nothing.
            let skipped = await offer("skip", ProposalGuard(term: status.term, index: RaftCore.LogIndex(next.rawValue + 5)))
            let stale = await offer("stale", ProposalGuard(term: RaftCore.Term(status.term.rawValue + 1), index: next.next.next))
            for r in [skipped, stale] {
                guard case .failure(let e) = r, case ReplicaError.unexpectedPosition = e else {
                    Issue.record("expected unexpectedPosition, got \(r)")
                    continue
                }
            }
            let payloads = try await g.waitApplied(leader, count: 3)
            #expect(payloads.map { String(decoding: $0, as: UTF8.self) } == ["warm", "a", "b"])
            #expect(replica.status!.raft.lastIndex == next.next, "nothing was appended for the refused ones")
            // A follower refuses a guarded proposal as not leading.
            let follower = g.ids.first { $0 != leader }!
            let refused: Result<RaftReplica.Committed, any Error>
            do {
                refused = .success(try await withCheckedThrowingContinuation { c in
                    _ = g.replicas[follower]!.offer([1], guard: ProposalGuard(term: status.term, index: next), timeout: .seconds(1), continuation: c)
                })
            } catch { refused = .failure(error) }
            if case .failure(let e) = refused, case ReplicaError.unexpectedPosition = e {} else { Issue.record("a follower took a guarded proposal: \(refused)") }
        } catch {
            try await g.shutdown()
            throw error
        }
        try await g.shutdown()
    }

    /// A follower whose disk fills up stops with a storage error, whichever write finds it full: one
    /// of its first data writes, or the checkpoint, which a background thread writes (the store then
    /// refuses reads, and the node's next read used to trap instead of stopping it). The other two go
    /// on committing; once there is space again it restarts and catches up with all of it.
    @Test(arguments: [("/", 0), ("/", 1), ("/", 2), ("/", 5), ("/checkpoint", 0)])
    func aFollowerWhoseDiskFillsStopsCleanlyAndCatchesUpAfterARestart(file: String, writesBeforeFull: Int) async throws {
        let g = try await ReplicaGroup()
        do {
            for id in g.ids { try g.start(id) }
            let leader = try await g.leader()
            var expected: [[UInt8]] = []
            for k in 0..<10 {
                expected.append(Array("a\(k)".utf8))
                _ = try await g.replicas[leader]!.propose(expected.last!)
            }
            let victim = g.ids.first { $0 != leader }!
            _ = try await g.waitApplied(victim, count: 10)
            let full = g.commitlog(victim) + file
            StoreFaults.fillDisk(under: full, afterWrites: writesBeforeFull)
            defer { StoreFaults.clearDiskFull(under: full) }
            // Proposals go on (the victim reads and writes for each) until its node stops on the full
            // disk: with a storage error, for a trap would end this test process.
            let stopped = StopFlag()
            let ended = Task {
                let r = await g.tasks[victim]!.result
                stopped.value.store(true, ordering: .relaxed)
                return r
            }
            let deadline = Date().addingTimeInterval(8)
            var k = 0
            while Date() < deadline && !stopped.value.load(ordering: .relaxed) && k < 400 {
                expected.append(Array("b\(k)".utf8))
                k += 1
                do {
                    _ = try await g.replicas[leader]!.propose(expected.last!, timeout: .seconds(5))
                } catch {
                    throw ReplicaGroup.NoLeader(description: "proposal \(k) failed: \(error); " + g.roles())
                }
                try await Task.sleep(for: .milliseconds(10))
            }
            let didStop = stopped.value.load(ordering: .relaxed)
            #expect(didStop, "the victim's node did not stop on its full disk")
            let result = await ended.value
            guard case .failure(let e) = result, case ReplicaError.storage = e else {
                Issue.record("the victim's replica did not stop with a storage error: \(result)")
                throw ReplicaGroup.NoLeader(description: "no storage stop")
            }
            try await g.stop(victim)
            StoreFaults.clearDiskFull(under: full)
            try g.start(victim)
            let got = try await g.waitApplied(victim, count: expected.count)
            #expect(got == expected, "after the restart the victim applied \(got.count) of \(expected.count) entries")
        } catch {
            try await g.shutdown()
            throw error
        }
        try await g.shutdown()
    }
}
