import Foundation
import LogFormat
import Logging
import NIOCore
import NIOPosix
import RaftCore
import Remoting
import Synchronization
import Testing
@testable import Broker
import TestSupport

/// The send fast path's per-turn batches (`BrokerService.sendInline`): the sends an event loop
/// takes in one turn reach the log as one entry, up to `sendBatchMessages`, and every send is
/// answered as if it had an entry of its own: its queue's next offset, and a msgId that finds its
/// own record. Through a real server and client; the test holds the requests until all have
/// arrived and hands them to `sendInline` in one task on the connection's loop, so what one turn
/// holds is fixed.
@Suite(.ownThreads) struct SendBatchTests {
    /// Serves `service`'s processors with the send processor's fast path fed all `sends` requests in
    /// one task on the connection's loop (in the order they arrived, returned as `order`), and
    /// sends them concurrently from one client; `request(k)` builds the k-th.
    static func sendInOneTurn(_ service: BrokerService, group: MultiThreadedEventLoopGroup, sends: Int,
                              request: @escaping @Sendable (Int) -> RemotingCommand) async throws -> (answers: [Int: RemotingCommand], order: [Int], refused: Int) {
        let logger = Logger(label: "send-batch-test")
        var processors = service.processors
        let held = Mutex<[(RemotingCommand, RemotingConnection)]>([])
        let refused = Atomic<Int>(0)
        processors[0].inline = { request, connection in
            let all = held.withLock { h -> [(RemotingCommand, RemotingConnection)]? in
                h.append((request, connection))
                return h.count == sends ? h : nil
            }
            if let all {
                connection.channel.eventLoop.execute {
                    for (r, c) in all where !service.sendInline(r, c) { refused.add(1, ordering: .relaxed) }
                }
            }
            return true
        }
        let server = RemotingServer(options: RemotingServerOptions(host: "127.0.0.1", port: 0), processors: processors, group: group, logger: logger)
        let (bound, boundContinuation) = AsyncStream.makeStream(of: Int.self)
        let serving = Task { try await server.run { boundContinuation.yield($0.port ?? 0) } }
        defer { serving.cancel() }
        var it = bound.makeAsyncIterator()
        let address = "127.0.0.1:\(try #require(await it.next()))"
        let client = RemotingClient(group: group, logger: logger)
        let answers = try await withThrowingTaskGroup(of: (Int, RemotingCommand).self) { tasks in
            for k in 0..<sends {
                tasks.addTask { (k, try await client.request(address, request(k), timeoutMilliseconds: 10_000)) }
            }
            var out: [Int: RemotingCommand] = [:]
            for try await (k, answer) in tasks { out[k] = answer }
            return out
        }
        await client.close()
        let order = held.withLock { $0.map { Int($0.0.extFields["g"] ?? "") ?? -1 } }
        return (answers, order, refused.load(ordering: .relaxed))
    }

    /// The k-th send of the tests: queue k % 3 of topic T, tag t<k>, born at k (the `g` field
    /// names the send), its body `body(k)`.
    static func send(_ k: Int, body: [UInt8]) -> RemotingCommand {
        var buffer = ByteBuffer()
        buffer.writeBytes(body)
        return RemotingCommand.request(code: RequestCode.sendMessageV2, opaque: 0, extFields: [
            "a": "pg", "b": "T", "c": "TBW102", "d": "4", "e": "\(k % 3)", "f": "0", "g": "\(k)", "h": "0",
            "i": "TAGS\u{1}t\(k)\u{2}", "j": "0", "k": "false", "m": "false"], body: buffer)
    }

    static func options(batchMessages: Int, batchBytes: Int) -> BrokerService.Options {
        var options = BrokerService.Options(clusterName: "C", brokerName: "B", storeHost: "127.0.0.1:30911", maxMessageSize: 1 << 20,
                                            autoCreateTopicEnable: false, defaultTopicQueueNums: 4, clientAddresses: [:])
        options.sendBatchMessages = batchMessages
        options.sendBatchBytes = batchBytes
        return options
    }

    /// `largeEvery`: every so many sends is one whose record is over `sendBatchBytes`: it is
    /// offered alone at once, after the sends taken before it (which go first, as one entry).
    @Test(arguments: [(batchMessages: 8, largeEvery: 0), (batchMessages: 1, largeEvery: 0), (batchMessages: 128, largeEvery: 0),
                      (batchMessages: 4, largeEvery: 3), (batchMessages: 128, largeEvery: 7)])
    func sendsTakenInOneTurnShareAnEntryAndAreAnsweredEachForItself(batchMessages: Int, largeEvery: Int) async throws {
        let sends = 20
        try await WritePathOfferTests.withRunningReplica { f, group, replica in
            let writes = WritePath(replica: replica, store: f.store)
            try await writes.append(.topicUpsert(TopicConfig(topicName: "T", readQueueNums: 4, writeQueueNums: 4, perm: 6)), timeout: .seconds(20))
            let logger = Logger(label: "send-batch-test")
            // Small records are about 200 bytes (all 20 stay under the 8,000-byte limit); large ones 9,000.
            let service = BrokerService(options: Self.options(batchMessages: batchMessages, batchBytes: 8_000), store: f.store, writes: writes,
                                        forwarder: RemotingClient(group: group, logger: logger), logger: logger)
            @Sendable func body(_ k: Int) -> [UInt8] {
                largeEvery > 0 && k % largeEvery == largeEvery - 1 ? [UInt8](repeating: UInt8(65 + k % 26), count: 9_000) : Array(String(format: "m%02d", k).utf8)
            }
            let lastBefore = try #require(replica.status).raft.lastIndex
            let (answers, order, refused) = try await Self.sendInOneTurn(service, group: group, sends: sends) { Self.send($0, body: body($0)) }
            #expect(refused == 0, "every send taken by the fast path")
            // The entries the turn should make, from the order the sends were taken.
            var entries = 0, pending = 0
            for k in order {
                if body(k).count > 100 {
                    if pending > 0 { entries += 1 }
                    pending = 0
                    entries += 1
                } else {
                    if pending == batchMessages {
                        entries += 1
                        pending = 0
                    }
                    pending += 1
                }
            }
            if pending > 0 { entries += 1 }
            #expect(try #require(replica.status).raft.lastIndex.rawValue - lastBefore.rawValue == UInt64(entries),
                    "\(sends) sends in one turn, at most \(batchMessages) an entry, large ones alone")
            var offsets: [Int32: [Int64]] = [:]
            for k in 0..<sends {
                let answer = try #require(answers[k])
                #expect(answer.code == ResponseCode.success, "send \(k): \(answer.code) \(answer.remark ?? "")")
                let queue = try #require(answer.extFields["queueId"].flatMap { Int32($0) })
                let offset = try #require(answer.extFields["queueOffset"].flatMap { Int64($0) })
                #expect(queue == Int32(k % 3))
                offsets[queue, default: []].append(offset)
                // The msgId's last 16 hex digits are the record's physical offset.
                let msgId = try #require(answer.extFields["msgId"])
                let physical = try #require(Int64(msgId.suffix(16), radix: 16))
                let r = try #require(f.store.record(atPhysicalOffset: physical))
                let decoded = try r.withUnsafeBytes { try MessageRecord.decode($0) }
                #expect(decoded.queueId == queue && decoded.queueOffset == offset && decoded.physicalOffset == physical)
                #expect(decoded.body == body(k) && decoded.properties["TAGS"] == "t\(k)")
            }
            for (q, o) in offsets {
                #expect(o.sorted() == Array(0..<Int64(o.count)), "queue \(q): dense from 0")
                #expect(f.store.maxOffset(QueueKey("T", q)) == Int64(o.count))
            }
            // Sends go to the log in the order they were taken (a large one does not overtake the
            // batch before it): each queue's offsets rise with the order of arrival.
            for q in offsets.keys {
                let mine = order.filter { $0 >= 0 && Int32($0 % 3) == q }.map { Int64(answers[$0]!.extFields["queueOffset"]!)! }
                #expect(mine == mine.sorted(), "queue \(q): numbered in the order taken")
            }
            #expect(writes.offeredInFlight == 0)
        }
    }

    /// A writer whose fast path takes sends (`canOffer`) but does not offer the turn's batch:
    /// `.busy` (a full mailbox) or `.again` (the numbering broke); the waiting path's `append`
    /// answers with offsets from 1,000.
    final class NotTakingWriter: BrokerWriter, @unchecked Sendable {
        let outcome: WritePath.BatchOffer
        let batches = Atomic<Int>(0)
        let appends = Atomic<Int>(0)
        init(_ outcome: WritePath.BatchOffer) { self.outcome = outcome }
        var isLeader: Bool { true }
        var leader: NodeID? { NodeID(0) }
        var isCaughtUpLeader: Bool { true }
        func confirmLeadership(timeout: Duration) async -> Bool { true }
        var refusal: WriteError { .notLeader(leader: nil) }
        var keepsLocalOffsets: Bool { false }
        var maxEntryBytes: Int { 1 << 20 }
        var canOffer: Bool { true }
        func append(queue key: QueueKey?, count: Int, timeout: Duration, kind: WritePath.EntryKind,
                    body: (Int64, [QueueKey: Int64]) -> [UInt8]) async throws(WriteError) -> Appended {
            Appended(queueOffset: 1_000 + Int64(appends.add(1, ordering: .relaxed).oldValue))
        }
        func appendSnapshot(timeout: Duration) async throws(WriteError) { throw .notReady }
        func offer(queue key: QueueKey, count: Int, timeout: Duration, body: (Int64, [QueueKey: Int64]) -> [UInt8], receipt: OfferReceipt) -> Bool {
            Issue.record("a batched send offered alone")
            return false
        }
        func offer(batch queues: [(key: QueueKey, count: Int)], receipts: [OfferReceipt], timeout: Duration,
                   body: ([Int64]) -> [UInt8]) -> WritePath.BatchOffer {
            batches.add(1, ordering: .relaxed)
            return outcome
        }
    }

    /// A batch the write path does not take: with a full mailbox every send in it is answered
    /// SYSTEM_BUSY at once; with a broken numbering every send takes the waiting path, once.
    @Test(arguments: [WritePath.BatchOffer.busy, .again])
    func aBatchNotTakenAnswersEverySend(outcome: WritePath.BatchOffer) async throws {
        let sends = 12
        let f = try PullAuthorityTests.fixture()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let writer = NotTakingWriter(outcome)
        let logger = Logger(label: "send-batch-test")
        let service = BrokerService(options: Self.options(batchMessages: 128, batchBytes: 128 << 10), store: f.store, writes: writer,
                                    forwarder: RemotingClient(group: group, logger: logger), logger: logger)
        let (answers, _, refused) = try await Self.sendInOneTurn(service, group: group, sends: sends) { Self.send($0, body: Array("m\($0)".utf8)) }
        #expect(refused == 0)
        #expect(writer.batches.load(ordering: .relaxed) == 1, "one turn, one batch")
        for k in 0..<sends {
            let answer = try #require(answers[k])
            switch outcome {
            case .busy:
                #expect(answer.code == ResponseCode.systemBusy, "send \(k): \(answer.code)")
            default:
                #expect(answer.code == ResponseCode.success && (answer.extFields["queueOffset"].flatMap { Int64($0) } ?? 0) >= 1_000,
                        "send \(k) through the waiting path: \(answer.code) \(answer.extFields["queueOffset"] ?? "-")")
            }
        }
        #expect(writer.appends.load(ordering: .relaxed) == (outcome == .busy ? 0 : sends))
        try await group.shutdownGracefully()
    }
}
