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

    @Test func offeredEntriesAreNumberedCommittedAndDispatchedWithWaitedOnes() async throws {
        let f = try StoreFixture()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let replica = try await Self.replica(f, group: group)
        let running = Task { try await replica.run() }
        defer { running.cancel() }
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
        running.cancel()
        _ = await running.result
        try await group.shutdownGracefully()
    }

    /// An offered entry the replica refuses before storing it (its guard no longer holds: here a
    /// second writer on the same replica took that index) comes back as `.again`, for the waiting
    /// path; the writer's numbering is broken until it starts a new one from the log, and nothing
    /// is numbered twice.
    @Test func anOfferTheReplicaRefusesComesBackToBeNumberedAgain() async throws {
        let f = try StoreFixture()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let replica = try await Self.replica(f, group: group)
        let running = Task { try await replica.run() }
        defer { running.cancel() }
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
        running.cancel()
        _ = await running.result
        try await group.shutdownGracefully()
    }
}
