import Foundation
import LogFormat
import LogStore
import Logging
import Testing
@testable import Broker
import TestSupport

/// A LogStore and a MessageStore over it, written as a Raft member writes (every entry through the
/// append hook) and dispatched as the replica's apply step does.
final class StoreFixture: @unchecked Sendable {
    let root = NSTemporaryDirectory() + "raftmq-broker-" + UUID().uuidString
    var log: LogStore
    var store: MessageStore
    let topics = TopicConfigTable(clusterName: "C", brokerName: "B", defaultTopicQueueNums: 4, autoCreateTopicEnable: true,
                                  clusterTopicEnable: true, brokerTopicEnable: true, traceTopicEnable: false, nowMs: 0)

    /// Consume queues write behind this many entries.
    let writeBehind: Int

    init(writeBehind: Int = ConsumeQueue.writeBehindEntries) throws {
        self.writeBehind = writeBehind
        log = try Self.openLog(root)
        store = try MessageStore(options: Self.options(root, topics, writeBehind), log: log, logger: Logger(label: "test"))
    }

    static func options(_ root: String, _ topics: TopicConfigTable, _ writeBehind: Int) -> MessageStore.Options {
        var o = MessageStore.Options(rootDirectory: root, initialTopics: topics)
        o.consumeQueueWriteBehind = writeBehind
        return o
    }

    static func openLog(_ root: String) throws -> LogStore {
        try LogStore.open(LogStoreOptions(directory: root + "/commitlog", segmentBytes: 1 << 20, indexFileBytes: 32 * 4096, flushMode: .sync, entryBodyBytesMax: 64 << 10))
    }

    /// Appends entries (each a list of records or a metadata/opaque body) and returns their indexes.
    @discardableResult
    func append(_ bodies: [[UInt8]]) throws -> [Int64] {
        let r = try log.write(bodies.map { EntryToAppend(term: Term(1), body: $0) }, patch: { _, position, body in
            EntryBody.patchPhysicalOffsets(position: position, body: body)
        })
        return (r.firstIndex.rawValue...r.lastIndex.rawValue).map { Int64($0) }
    }

    func reopen() throws {
        try log.close()
        log = try Self.openLog(root)
        store = try MessageStore(options: Self.options(root, topics, writeBehind), log: log, logger: Logger(label: "test"))
    }

    deinit {
        try? log.close()
        try? FileManager.default.removeItem(atPath: root)
    }
}

@Suite(.ownThreads) struct MessageStoreTests {
    @Test func dispatchBuildsConsumeQueuesThatPointAtTheRecords() throws {
        let f = try StoreFixture()
        let a0 = try record("T", queue: 0, offset: 0, tags: "TagA"), a1 = try record("T", queue: 0, offset: 1, tags: "TagB")
        let b0 = try record("T", queue: 1, offset: 0)
        let indexes = try f.append([a0, Array("opaque".utf8), a1 + b0.prefix(0), b0])
        try f.store.dispatch(upTo: indexes.last!)
        #expect(f.store.dispatchedIndex == indexes.last!)
        #expect(f.store.maxOffset(QueueKey("T", 0)) == 2 && f.store.maxOffset(QueueKey("T", 1)) == 1 && f.store.maxOffset(QueueKey("T", 2)) == 0)

        let got = f.store.getMessages(QueueKey("T", 0), offset: 0, maxCount: 32, matches: { _ in true })
        #expect(got.status == .found && got.count == 2 && got.nextBeginOffset == 2 && got.minOffset == 0 && got.maxOffset == 2)
        // The records as stored: each one's PHYSICALOFFSET is where it is, and VIEW_MESSAGE_BY_ID finds it there.
        let first = try got.records.withUnsafeBytes { try MessageRecord.decode($0) }
        #expect(first.queueOffset == 0 && first.properties["TAGS"] == "TagA")
        #expect(f.store.record(atPhysicalOffset: first.physicalOffset) == Array(got.records[0..<a0.count]))
        let cq = try #require(try f.store.queue(QueueKey("T", 0))?.read(from: 0, maxCount: 2))
        #expect(cq[0].commitLogOffset == first.physicalOffset && cq[0].size == Int32(a0.count) && cq[0].tagsCode == Int64(javaHashCode("TagA")))
        #expect(f.store.record(atPhysicalOffset: first.physicalOffset + 1) == nil)

        // Tag filtering by hash code, and RocketMQ's statuses at the edges.
        let onlyB = Subscription(topic: "T", expression: "TagB")
        let b = f.store.getMessages(QueueKey("T", 0), offset: 0, maxCount: 32, matches: onlyB.matches)
        #expect(b.status == .found && b.count == 1 && b.nextBeginOffset == 2)
        let none = Subscription(topic: "T", expression: "TagZ")
        #expect(f.store.getMessages(QueueKey("T", 0), offset: 0, maxCount: 32, matches: none.matches).status == .noMatchedMessage)
        #expect(f.store.getMessages(QueueKey("T", 0), offset: 2, maxCount: 32, matches: { _ in true }).status == .offsetOverflowOne)
        #expect(f.store.getMessages(QueueKey("T", 0), offset: 9, maxCount: 32, matches: { _ in true }).status == .offsetOverflowBadly)
        #expect(f.store.getMessages(QueueKey("T", 3), offset: 0, maxCount: 32, matches: { _ in true }).status == .noMatchedLogicQueue)
        let one = f.store.getMessages(QueueKey("T", 0), offset: 1, maxCount: 1, matches: { _ in true })
        #expect(one.count == 1 && one.nextBeginOffset == 2)
    }

    /// The Raft apply step hands over the entries it wrote, as proposed (before the physical-offset
    /// patch), with their positions: dispatching those builds what reading them back builds, skips
    /// what was dispatched already, and reads the log where the handed-over entries leave a gap.
    @Test func dispatchingHeldEntriesEqualsDispatchingFromTheLog() throws {
        let read = try StoreFixture(), held = try StoreFixture()
        var batches: [[[UInt8]]] = []
        var offsets: [Int32: Int64] = [:]
        for b in 0..<6 {
            var bodies: [[UInt8]] = []
            for e in 0..<(1 + b % 3) {
                if (b + e) % 4 == 3 { bodies.append(Array("opaque \(b)".utf8)); continue }
                if b == 2 && e == 0 { bodies.append(MetadataChange.topicUpsert(TopicConfig(topicName: "M", readQueueNums: 2, writeQueueNums: 2, perm: 6)).encoded()); continue }
                var records: [UInt8] = []
                for k in 0..<(1 + (b + e) % 3) {
                    let q = Int32((b + e + k) % 3)
                    records += try record("T", queue: q, offset: offsets[q, default: 0], body: "b\(b)e\(e)k\(k)", tags: k % 2 == 0 ? "TagA" : nil)
                    offsets[q, default: 0] += 1
                }
                bodies.append(records)
            }
            batches.append(bodies)
        }
        var written: [[MessageStore.CommittedEntry]] = []
        for bodies in batches {
            try read.store.dispatch(upTo: try read.append(bodies).last!)
            let r = try held.log.write(bodies.map { EntryToAppend(term: Term(1), body: $0) }, patch: { _, position, body in
                EntryBody.patchPhysicalOffsets(position: position, body: body)
            })
            written.append(zip(bodies, r.positions).enumerated().map { k, e in
                MessageStore.CommittedEntry(index: Int64(r.firstIndex.rawValue) + Int64(k), position: e.1.rawValue, body: e.0)
            })
        }
        try held.store.dispatch(committed: written[0])
        try held.store.dispatch(committed: written[0] + written[1])  // the first again: skipped
        try held.store.dispatch(committed: written[3])  // a gap (batch 2 missing): read from the log
        #expect(held.store.dispatchedIndex == written[3].last!.index)
        try held.store.dispatch(committed: written[4] + written[5])
        #expect(held.store.dispatchedIndex == read.store.dispatchedIndex && held.store.dispatchedEnd == read.store.dispatchedEnd)
        #expect(held.store.dispatchedEnd == written[5].last!.end)
        #expect(held.store.topic("M") != nil && held.store.topic("M") == read.store.topic("M"))
        for q in Int32(0)..<3 {
            let key = QueueKey("T", q)
            #expect(held.store.maxOffset(key) == offsets[q]! && read.store.maxOffset(key) == offsets[q]!)
            let a = try #require(try read.store.queue(key)?.read(from: 0, maxCount: 64))
            let b = try #require(try held.store.queue(key)?.read(from: 0, maxCount: 64))
            #expect(a == b, "queue \(q)")
            // Each entry points at its record as stored (patched), in the log the store dispatched.
            for e in b {
                let r = try #require(held.store.record(atPhysicalOffset: e.commitLogOffset))
                #expect(try r.withUnsafeBytes { try MessageRecord.decode($0) }.physicalOffset == e.commitLogOffset)
            }
        }
    }

    /// One batch whose queues interleave, with a queue's offsets repeating (a replay of what was
    /// dispatched) and jumping (a gap, which is refused): each queue gets its runs in log order.
    @Test func aBatchOfInterleavedQueuesWithRepeatsAndAGapDispatchesEachQueueInOrder() throws {
        let f = try StoreFixture()
        let plan: [(queue: Int32, offset: Int64)] = [(0, 0), (1, 0), (0, 1), (2, 0), (0, 1), (0, 2), (1, 1), (2, 5), (1, 2), (0, 3)]
        var bodies: [[UInt8]] = []
        for (k, p) in plan.enumerated() { bodies.append(try record("T", queue: p.queue, offset: p.offset, body: "m\(k)")) }
        let indexes = try f.append([bodies[0] + bodies[1] + bodies[2], bodies[3] + bodies[4] + bodies[5] + bodies[6], bodies[7], bodies[8] + bodies[9]])
        try f.store.dispatch(upTo: indexes.last!)
        #expect(f.store.maxOffset(QueueKey("T", 0)) == 4 && f.store.maxOffset(QueueKey("T", 1)) == 3)
        // Queue 2 starts at 0; its offset 5 would leave a gap: not dispatched.
        #expect(f.store.maxOffset(QueueKey("T", 2)) == 1)
        // Each entry is the record with that offset's first occurrence, in log order.
        for (queue, bodiesAt) in [(Int32(0), [0, 2, 5, 9]), (1, [1, 6, 8]), (2, [3])] {
            let got = f.store.getMessages(QueueKey("T", queue), offset: 0, maxCount: 32, matches: { _ in true })
            var at = 0
            var seen: [String] = []
            while at < got.records.count {
                let r = try got.records[at...].withUnsafeBytes { try MessageRecord.decode($0) }
                seen.append(String(decoding: r.body, as: UTF8.self))
                at += MessageRecord.declaredSize(got.records[at...].withUnsafeBytes { $0 })!
            }
            #expect(seen == bodiesAt.map { "m\($0)" }, "queue \(queue)")
        }
    }

    @Test func batchEntriesGiveEveryItemItsOwnQueueOffsetAndPosition() throws {
        let f = try StoreFixture()
        let items = try (0..<3).map { try record("T", queue: 2, offset: Int64($0), body: "item \($0)") }
        let i = try f.append([items.reduce([], +)])
        try f.store.dispatch(upTo: i[0])
        let cq = try #require(try f.store.queue(QueueKey("T", 2))?.read(from: 0, maxCount: 3))
        #expect(cq.count == 3)
        #expect(cq[1].commitLogOffset == cq[0].commitLogOffset + Int64(items[0].count))
        for (k, e) in cq.enumerated() {
            let r = try #require(f.store.record(atPhysicalOffset: e.commitLogOffset))
            #expect(try r.withUnsafeBytes { try MessageRecord.decode($0) }.body == Array("item \(k)".utf8))
        }
    }

    @Test func metadataEntriesAreAppliedInLogOrder() throws {
        let f = try StoreFixture()
        let t = TopicConfig(topicName: "Created", readQueueNums: 2, writeQueueNums: 2, perm: 6)
        let version = f.store.topics.dataVersion
        let i = try f.append([MetadataChange.topicUpsert(t).encoded(), MetadataChange.offsets(["Created@g": [0: 5]]).encoded(),
                              MetadataChange.offsets(["Created@g": [0: 9, 1: 2]]).encoded()])
        try f.store.dispatch(upTo: i[1])
        #expect(f.store.topic("Created") == t && f.store.topics.dataVersion != version)
        #expect(f.store.consumerOffset(group: "g", QueueKey("Created", 0)) == 5)
        try f.store.dispatch(upTo: i[2])
        #expect(f.store.consumerOffset(group: "g", QueueKey("Created", 0)) == 9 && f.store.consumerOffsets(group: "g")["Created"]?[1] == 2)
        let j = try f.append([MetadataChange.topicDelete("Created").encoded()])
        try f.store.dispatch(upTo: j[0])
        #expect(f.store.topic("Created") == nil)
        // Creation on first use never overwrites what an operator set.
        var strict = SubscriptionGroupConfig(groupName: "g")
        strict.retryMaxTimes = 2
        let k = try f.append([MetadataChange.groupUpsert(strict).encoded(), MetadataChange.groupCreate(SubscriptionGroupConfig(groupName: "g")).encoded(),
                              MetadataChange.topicCreate(TopicConfig(topicName: "Kept", readQueueNums: 8, writeQueueNums: 8)).encoded(),
                              MetadataChange.topicCreate(TopicConfig(topicName: "Kept", readQueueNums: 1, writeQueueNums: 1)).encoded()])
        try f.store.dispatch(upTo: k.last!)
        #expect(f.store.group("g")?.retryMaxTimes == 2 && f.store.topic("Kept")?.writeQueueNums == 8)
        #expect(f.store.groupsWrapper.contains("\"retryMaxTimes\":2"))
        let l = try f.append([MetadataChange.groupDelete("g").encoded()])
        try f.store.dispatch(upTo: l[0])
        #expect(f.store.group("g") == nil)
    }

    @Test func aRestartContinuesFromTheCheckpointAndCutsWhatCameAfterIt() throws {
        let f = try StoreFixture()
        let t = TopicConfig(topicName: "T", readQueueNums: 2, writeQueueNums: 2, perm: 6)
        var i = try f.append([MetadataChange.topicUpsert(t).encoded(), try record("T", offset: 0), try record("T", offset: 1)])
        try f.store.dispatch(upTo: i.last!)
        try f.store.checkpoint()
        // Dispatched after the checkpoint, then "crashed" before the next one.
        i = try f.append([try record("T", offset: 2), MetadataChange.offsets(["T@g": [0: 3]]).encoded()])
        try f.store.dispatch(upTo: i.last!)
        #expect(f.store.maxOffset(QueueKey("T", 0)) == 3)
        try f.reopen()
        #expect(f.store.dispatchedIndex == 2, "continues after the checkpointed index")
        #expect(f.store.topic("T") == t, "the checkpoint carries the applied topics")
        #expect(f.store.maxOffset(QueueKey("T", 0)) == 2, "the consume queue is cut back to the checkpoint")
        #expect(f.store.consumerOffset(group: "g", QueueKey("T", 0)) == nil)
        try f.store.dispatch(upTo: 4)
        #expect(f.store.maxOffset(QueueKey("T", 0)) == 3 && f.store.consumerOffset(group: "g", QueueKey("T", 0)) == 3)
        let all = f.store.getMessages(QueueKey("T", 0), offset: 0, maxCount: 10, matches: { _ in true })
        #expect(all.count == 3)
    }

    @Test func withoutACheckpointTheQueuesAreRebuiltFromTheLog() throws {
        let f = try StoreFixture()
        let i = try f.append([try record("T", offset: 0), try record("T", offset: 1)])
        try f.store.dispatch(upTo: i.last!)
        try? FileManager.default.removeItem(atPath: f.root + "/raft/dispatch.json")
        try f.reopen()
        #expect(f.store.dispatchedIndex == -1 && f.store.maxOffset(QueueKey("T", 0)) == 0)
        try f.store.dispatch(upTo: i.last!)
        #expect(f.store.maxOffset(QueueKey("T", 0)) == 2)
        // A checkpoint that does not describe this log is ignored.
        try f.store.checkpoint()
        try Data(#"{"index":1,"endPosition":5}"#.utf8).write(to: URL(fileURLWithPath: f.root + "/raft/dispatch.json"))
        try f.reopen()
        #expect(f.store.dispatchedIndex == -1)
        try Data("not json".utf8).write(to: URL(fileURLWithPath: f.root + "/raft/dispatch.json"))
        try f.reopen()
        #expect(f.store.dispatchedIndex == -1)
    }

    @Test func longPollsWakeOnDispatchOrAtTheirDeadline() async throws {
        let f = try StoreFixture()
        let key = QueueKey("T", 0)
        let store = f.store
        // No timing here (a loaded machine can stall any task): the waiter's registration and release
        // are observed directly.
        func registered() async -> Bool {
            for _ in 0..<2_000 {
                if store.waiterCount(key) == 1 { return true }
                try? await Task.sleep(for: .milliseconds(5))
            }
            return false
        }
        // At the deadline: the sweep releases it (the sweep is told the time).
        let deadline = ContinuousClock.now + .seconds(60)
        let expiring = Task { await store.waitForMessages(key, offset: 0, deadline: deadline) }
        #expect(await registered())
        #expect(store.expireWaiters(now: deadline - .seconds(1)) == 1, "not yet due")
        #expect(store.expireWaiters(now: deadline + .seconds(1)) == 0)
        await expiring.value
        // On dispatch: released by the dispatch itself, long before its 1-hour deadline.
        let waiting = Task { await store.waitForMessages(key, offset: 0, deadline: .now + .seconds(3_600)) }
        #expect(await registered())
        let i = try f.append([try record("T", offset: 0)])
        try f.store.dispatch(upTo: i[0])
        #expect(store.waiterCount(key) == 0, "the dispatch released the waiter")
        await waiting.value
        // Already there: no wait at all.
        await f.store.waitForMessages(key, offset: 0, deadline: .now + .seconds(3_600))
    }
}

@Suite(.ownThreads) struct SnapshotTests {
    @Test func aSnapshotGivesAMemberThatLostThePrefixTheTopicsOffsetsAndQueueEnds() throws {
        let f = try StoreFixture()
        let t = TopicConfig(topicName: "Old", readQueueNums: 2, writeQueueNums: 2, perm: 6)
        let stray = TopicConfig(topicName: "Stray", readQueueNums: 1, writeQueueNums: 1, perm: 6)
        let snap = MetadataSnapshot(topics: f.topics.topics.merging(["Old": t]) { a, _ in a },
                                    offsets: ["Old@g": [0: 400]], queueEnds: ["Old": [0: 500, 1: 7]])
        #expect(MetadataChange.decode(MetadataChange.snapshot(snap).encoded()) == .snapshot(snap))
        // This member knew a topic the group deleted since, and nothing of Old.
        var i = try f.append([MetadataChange.topicUpsert(stray).encoded(), MetadataChange.snapshot(snap).encoded()])
        try f.store.dispatch(upTo: i.last!)
        #expect(f.store.topic("Old") == t && f.store.topic("Stray") == nil)
        #expect(f.store.consumerOffset(group: "g", QueueKey("Old", 0)) == 400)
        #expect(f.store.maxOffset(QueueKey("Old", 0)) == 500 && f.store.minOffset(QueueKey("Old", 0)) == 500 && f.store.maxOffset(QueueKey("Old", 1)) == 7)
        #expect(f.store.latestSnapshotIndex == i.last!)
        let key = QueueKey("Old", 0)
        #expect(f.store.getMessages(key, offset: 500, maxCount: 1, matches: { _ in true }).status == .offsetOverflowOne)
        let early = f.store.getMessages(key, offset: 3, maxCount: 1, matches: { _ in true })
        #expect(early.status == .offsetTooSmall && early.nextBeginOffset == 500)
        // The next message of the queue continues from the snapshot's end.
        i = try f.append([try record("Old", queue: 0, offset: 500)])
        try f.store.dispatch(upTo: i[0])
        let got = f.store.getMessages(key, offset: 500, maxCount: 5, matches: { _ in true })
        #expect(got.status == .found && got.count == 1 && f.store.maxOffset(key) == 501 && f.store.minOffset(key) == 500)
        // And all of it survives a restart through the checkpoint.
        try f.store.checkpoint()
        try f.reopen()
        #expect(f.store.maxOffset(QueueKey("Old", 1)) == 7 && f.store.latestSnapshotIndex == i[0] - 1 && f.store.topic("Old") == t)
    }
}
