import Foundation
import LogFormat
import LogStore
import Logging
import NIOCore
import NIOPosix
import RaftCore
import Replication
import Synchronization
import Testing
@testable import Broker
import TestSupport

/// The send fast path (`WritePath.offer`): entries offered without a waiting task are numbered in
/// the same sequence as waited ones, answered once committed and dispatched, and refused (for the
/// waiting path to take) while the member does not number its term.
@Suite(.serialized, .ownThreads) struct WritePathOfferTests {
    /// An entry builder for the write path: one message of topic T in `queue`, numbered.
    static func entry(queue: Int32) throws -> @Sendable (Int64, [QueueKey: Int64]) -> [UInt8] {
        let message = try record("T", queue: queue, offset: 0)
        return { first, _ in
            var e = message
            MessageRecord.patch(queueOffset: first, physicalOffset: nil, in: &e)
            return e
        }
    }

    /// A one-member Raft group over `f`'s log, applying as the broker does.
    static func replica(_ f: StoreFixture, group: MultiThreadedEventLoopGroup) async throws -> RaftReplica {
        let probe = try await ServerBootstrap(group: group).bind(host: "127.0.0.1", port: 0).get()
        let port = probe.localAddress!.port!
        try await probe.close()
        var config = RaftConfig(id: NodeID(0), voters: [NodeID(0)])
        config.electionTimeoutTicks = 5
        config.heartbeatTicks = 1
        var options = RaftReplicaOptions(raft: config, peerAddresses: [NodeID(0): "127.0.0.1:\(port)"])
        options.bodyPatch = BrokerLogHooks.bodyPatch
        options.appliedIndex = RaftCore.LogIndex(UInt64(f.store.dispatchedIndex + 1))
        let store = f.store
        return RaftReplica(options: options, store: f.log, hardStateFile: HardStateFile(path: f.root + "/hardstate"),
                           logger: Logger(label: "offer-test"), apply: { batch in try store.apply(batch, storeIndexOfEmptyLog: 0) })
    }

    /// Runs `body` with a one-member group over a fresh store, running and leading soon; stops
    /// the replica and its event loop after, whatever `body` did.
    static func withRunningReplica(_ body: (StoreFixture, MultiThreadedEventLoopGroup, RaftReplica) async throws -> Void) async throws {
        let f = try StoreFixture()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let replica = try await replica(f, group: group)
        let running = Task { try await replica.run() }
        var failure: (any Error)?
        do { try await body(f, group, replica) } catch { failure = error }
        running.cancel()
        _ = await running.result
        try await group.shutdownGracefully()
        if let failure { throw failure }
    }

    @Test func offeredEntriesAreNumberedCommittedAndDispatchedWithWaitedOnes() async throws {
        try await Self.withRunningReplica { f, group, replica in
            let writes = WritePath(replica: replica, store: f.store, maxOffered: 64)
            let key = QueueKey("T", 1)
            let body = try Self.entry(queue: 1)
            // Not numbering yet (not even leading): nothing is offered, nothing is called.
            #expect(!writes.offer(queue: key, count: 1, timeout: .seconds(5), body: body) { _ in _ = Issue.record("an unoffered entry was answered") })
            // The waiting path waits for leadership and the dispatch of the log, and starts the numbering.
            try await writes.append(.topicUpsert(TopicConfig(topicName: "T", readQueueNums: 4, writeQueueNums: 4, perm: 6)), timeout: .seconds(20))
            // The broker reaches the fast path through the protocol (a classic writer has none).
            let writer: any BrokerWriter = writes
            #expect(writer.canOffer, "WritePath's fast path, not the protocol's default")
            // 300 offered without waiting (as many as the in-flight bound takes), with waited ones among them.
            let answers = Mutex<[Int64]>([])
            var offered = 0, waited: [Int64] = []
            for k in 0..<300 {
                if k % 50 == 25 {
                    waited.append(try await writes.append(queue: key, count: 1, timeout: .seconds(20), body: body).queueOffset)
                }
                if writes.offer(queue: key, count: 1, timeout: .seconds(20), body: body, onCommit: { outcome in
                    guard case .committed(let offset) = outcome else {
                        Issue.record("offer \(k) answered \(outcome)")
                        return
                    }
                    answers.withLock { $0.append(offset) }
                }) {
                    offered += 1
                }
            }
            #expect(offered > 0, "offered while numbering")
            let deadline = ContinuousClock.now + .seconds(20)
            while answers.withLock({ $0.count }) < offered && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            let offsets = answers.withLock { $0 }
            // Every queue offset once, offered and waited together: dense from 0.
            #expect((offsets + waited).sorted() == Array(0..<Int64(offered + waited.count)))
            #expect(offsets == offsets.sorted(), "answered in log order")
            #expect(f.store.maxOffset(key) == Int64(offered + waited.count), "dispatched before answered")
            // Each consume-queue entry points at a record that carries its own queue offset.
            let cq = try #require(try f.store.queue(key)?.read(from: 0, maxCount: 400))
            for (k, e) in cq.enumerated() {
                let r = try #require(f.store.record(atPhysicalOffset: e.commitLogOffset))
                let decoded = try r.withUnsafeBytes { try MessageRecord.decode($0) }
                #expect(decoded.queueOffset == Int64(k) && decoded.physicalOffset == e.commitLogOffset)
            }
            // At most `maxOffered` in flight: offered in a burst faster than the log syncs, the rest are
            // left to the waiting path (its queue is bounded).
            let burst = Mutex<Int>(0)
            var taken = 0
            for _ in 0..<1_000 where writes.offer(queue: key, count: 1, timeout: .seconds(20), body: body, onCommit: { _ in burst.withLock { $0 += 1 } }) {
                taken += 1
            }
            #expect(taken >= 64 && taken < 1_000, "\(taken) of 1,000 offered")
            while burst.withLock({ $0 }) < taken && ContinuousClock.now < deadline + .seconds(20) { try await Task.sleep(for: .milliseconds(5)) }
            #expect(burst.withLock { $0 } == taken)
            // An entry the node refuses (over its size limit) is never offered: the waiting path answers.
            #expect(!writes.offer(queue: key, count: 1, timeout: .seconds(5), body: { _, _ in [UInt8](repeating: 1, count: writes.maxEntryBytes + 1) }) { _ in
                Issue.record("a refused entry was answered")
            })
        }
    }

    /// An offered entry the replica refuses before storing it (its guard no longer holds: here a
    /// second writer on the same replica took that index) comes back as `.again`, for the waiting
    /// path; the writer's numbering is broken until it starts a new one from the log, and nothing
    /// is numbered twice.
    @Test func anOfferTheReplicaRefusesComesBackToBeNumberedAgain() async throws {
        try await Self.withRunningReplica { f, group, replica in
            let first = WritePath(replica: replica, store: f.store), second = WritePath(replica: replica, store: f.store)
            let key = QueueKey("T", 0)
            let body = try Self.entry(queue: 0)
            try await first.append(.topicUpsert(TopicConfig(topicName: "T", readQueueNums: 1, writeQueueNums: 1, perm: 6)), timeout: .seconds(20))
            // Both number from the same end of the log.
            _ = try await second.append(queue: key, count: 1, timeout: .seconds(20), body: body)
            _ = try await first.append(queue: key, count: 1, timeout: .seconds(20), body: body).queueOffset  // renumbers after the other's entry
            #expect(second.canOffer, "the second writer still believes its numbering")
            let outcome = try await withCheckedThrowingContinuation { (c: CheckedContinuation<WritePath.Offered, any Error>) in
                if !second.offer(queue: key, count: 1, timeout: .seconds(20), body: body, onCommit: { c.resume(returning: $0) }) {
                    c.resume(throwing: CancellationError())
                }
            }
            guard case .again = outcome else {
                Issue.record("a refused offer answered \(outcome)")
                return
            }
            #expect(!second.canOffer, "its numbering is broken")
            // The waiting path numbers again from the log: the next queue offset, once.
            let retried = try await second.append(queue: key, count: 1, timeout: .seconds(20), body: body).queueOffset
            #expect(retried == 2 && f.store.maxOffset(key) == 3)
            let cq = try #require(try f.store.queue(key)?.read(from: 0, maxCount: 8))
            for (k, e) in cq.enumerated() {
                let r = try #require(f.store.record(atPhysicalOffset: e.commitLogOffset))
                #expect(try r.withUnsafeBytes { try MessageRecord.decode($0) }.queueOffset == Int64(k))
            }
        }
    }

    /// A batch entry builder: each send's record (one message of topic T in its queue) with its
    /// first queue offset written in.
    /// `counts[k]` records for the k-th send (a SEND_BATCH_MESSAGE is several), numbered from its
    /// first offset.
    static func batchBody(_ queues: [Int32], counts: [Int]? = nil) throws -> @Sendable ([Int64]) -> [UInt8] {
        let messages = try (0..<4).map { try record("T", queue: Int32($0), offset: 0) }
        let counts = counts ?? queues.map { _ in 1 }
        return { firsts in
            var entry: [UInt8] = []
            for k in queues.indices {
                for m in 0..<counts[k] {
                    let start = entry.count
                    entry.append(contentsOf: messages[Int(queues[k])])
                    MessageRecord.patch(queueOffset: firsts[k] + Int64(m), physicalOffset: nil, in: &entry, at: start)
                }
            }
            return entry
        }
    }

    /// Several sends offered as one entry (`offer(batch:)`, the broker's per-turn batches of
    /// fast-path sends): one log entry per batch; each send numbered in its own queue in batch
    /// order, dense with single offers and waited appends around it; answered once committed and
    /// dispatched; every consume-queue entry pointing at its own record. A batch whose entry cannot
    /// be built offers and numbers nothing.
    @Test func aBatchOfSendsToSeveralQueuesIsOneEntryNumberedInOrder() async throws {
        try await Self.withRunningReplica { f, group, replica in
            let writes = WritePath(replica: replica, store: f.store, maxOffered: 4_096)
            let writer: any BrokerWriter = writes
            // Not numbering yet: nothing offered, no receipt answered.
            #expect(writer.offer(batch: [(key: QueueKey("T", 0), count: 1)], receipts: [ClosureOfferReceipt { _ in Issue.record("answered unoffered") }],
                                 timeout: .seconds(5), body: try Self.batchBody([0])) == .again)
            try await writes.append(.topicUpsert(TopicConfig(topicName: "T", readQueueNums: 4, writeQueueNums: 4, perm: 6)), timeout: .seconds(20))
            // (queue, offset) of every message answered, in answer order: a send of n messages
            // answers its first offset and owns the n from there.
            let answers = Mutex<[(queue: Int32, offset: Int64)]>([])
            func receipt(_ q: Int32, count: Int = 1) -> OfferReceipt {
                ClosureOfferReceipt { outcome in
                    guard case .committed(let offset) = outcome else {
                        Issue.record("a batched send answered \(outcome)")
                        return
                    }
                    answers.withLock { a in for m in 0..<count { a.append((q, offset + Int64(m))) } }
                }
            }
            var rng = SplitMix64(seed: 20261208)
            var sends = 0, entries = 0, waited: [(queue: Int32, offset: Int64)] = []
            let lastBefore = try #require(replica.status).raft.lastIndex
            for b in 0..<60 {
                let queues = (0..<Int.random(in: 1...24, using: &rng)).map { _ in Int32.random(in: 0..<4, using: &rng) }
                // Now and then a send of several messages (SEND_BATCH_MESSAGE) among them.
                let counts = queues.map { _ in Int.random(in: 0..<8, using: &rng) == 0 ? Int.random(in: 2...5, using: &rng) : 1 }
                #expect(writer.offer(batch: zip(queues, counts).map { (key: QueueKey("T", $0), count: $1) },
                                     receipts: zip(queues, counts).map { receipt($0, count: $1) }, timeout: .seconds(20),
                                     body: try Self.batchBody(queues, counts: counts)) == .offered, "batch \(b) offered")
                sends += counts.reduce(0, +)
                entries += 1
                switch b % 10 {
                case 3:
                    // A single send's offer and a waited append between batches share the numbering.
                    let q = Int32.random(in: 0..<4, using: &rng)
                    #expect(writes.offer(queue: QueueKey("T", q), count: 1, timeout: .seconds(20), body: try Self.entry(queue: q), receipt: receipt(q)))
                    sends += 1
                    entries += 1
                case 7:
                    let q = Int32.random(in: 0..<4, using: &rng)
                    waited.append((q, try await writes.append(queue: QueueKey("T", q), count: 1, timeout: .seconds(20), body: try Self.entry(queue: q)).queueOffset))
                    entries += 1
                case 9:
                    // An entry that cannot be built: nothing offered, nothing numbered (the next batch's
                    // offsets follow on densely).
                    #expect(writer.offer(batch: [(key: QueueKey("T", 1), count: 1), (key: QueueKey("T", 2), count: 1)],
                                         receipts: [ClosureOfferReceipt { _ in Issue.record("answered unbuilt") }, ClosureOfferReceipt { _ in Issue.record("answered unbuilt") }],
                                         timeout: .seconds(20)) { _ in [] } == .again)
                default: break
                }
            }
            let deadline = ContinuousClock.now + .seconds(30)
            while answers.withLock({ $0.count }) < sends && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            let answered = answers.withLock { $0 }
            #expect(answered.count == sends)
            #expect(writes.offeredInFlight == 0, "every offered send counted out once")
            #expect(try #require(replica.status).raft.lastIndex.rawValue - lastBefore.rawValue == UInt64(entries), "one entry per batch")
            for q in Int32(0)..<4 {
                let key = QueueKey("T", q)
                let mine = answered.filter { $0.queue == q }.map(\.offset)
                let all = (mine + waited.filter { $0.queue == q }.map(\.offset)).sorted()
                #expect(all == Array(0..<Int64(all.count)), "queue \(q): dense from 0")
                #expect(mine == mine.sorted(), "queue \(q): answered in log order")
                #expect(f.store.maxOffset(key) == Int64(all.count), "queue \(q): dispatched before answered")
                let cq = try #require(try f.store.queue(key)?.read(from: 0, maxCount: 2_000))
                #expect(cq.count == all.count)
                for (k, e) in cq.enumerated() {
                    let r = try #require(f.store.record(atPhysicalOffset: e.commitLogOffset))
                    let decoded = try r.withUnsafeBytes { try MessageRecord.decode($0) }
                    #expect(decoded.queueId == q && decoded.queueOffset == Int64(k) && decoded.physicalOffset == e.commitLogOffset)
                }
            }
        }
    }

    /// A batch the replica refuses before storing it (another writer took its index) comes back
    /// `.again` for every send in it, and the writer numbers again from the log.
    @Test func aBatchTheReplicaRefusesComesBackAgainForEverySend() async throws {
        try await Self.withRunningReplica { f, group, replica in
            let first = WritePath(replica: replica, store: f.store), second = WritePath(replica: replica, store: f.store)
            try await first.append(.topicUpsert(TopicConfig(topicName: "T", readQueueNums: 4, writeQueueNums: 4, perm: 6)), timeout: .seconds(20))
            _ = try await second.append(queue: QueueKey("T", 0), count: 1, timeout: .seconds(20), body: try Self.entry(queue: 0))
            _ = try await first.append(queue: QueueKey("T", 0), count: 1, timeout: .seconds(20), body: try Self.entry(queue: 0))
            let queues: [Int32] = [0, 1, 0, 3]
            let outcomes = Mutex<[WritePath.Offered]>([])
            let receipts = queues.map { _ in ClosureOfferReceipt { o in outcomes.withLock { $0.append(o) } } as OfferReceipt }
            #expect(second.offer(batch: queues.map { (key: QueueKey("T", $0), count: 1) }, receipts: receipts, timeout: .seconds(20), body: try Self.batchBody(queues)) == .offered)
            let deadline = ContinuousClock.now + .seconds(20)
            while outcomes.withLock({ $0.count }) < queues.count && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
            let got = outcomes.withLock { $0 }
            #expect(got.count == queues.count)
            for o in got {
                guard case .again = o else { Issue.record("a refused batch's send answered \(o)"); continue }
            }
            #expect(!second.canOffer, "its numbering is broken")
            #expect(try await second.append(queue: QueueKey("T", 0), count: 1, timeout: .seconds(20), body: try Self.entry(queue: 0)).queueOffset == 2)
            #expect(f.store.maxOffset(QueueKey("T", 1)) == 0 && f.store.maxOffset(QueueKey("T", 3)) == 0, "nothing of the refused batch stored")
        }
    }
}
