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
    @Test(arguments: [(batchMessages: 8, entries: 3), (batchMessages: 1, entries: 20), (batchMessages: 128, entries: 1)])
    func sendsTakenInOneTurnShareAnEntryAndAreAnsweredEachForItself(batchMessages: Int, entries: Int) async throws {
        let sends = 20
        let f = try StoreFixture()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let replica = try await WritePathOfferTests.replica(f, group: group)
        let running = Task { try await replica.run() }
        defer { running.cancel() }
        let writes = WritePath(replica: replica, store: f.store)
        try await writes.append(.topicUpsert(TopicConfig(topicName: "T", readQueueNums: 4, writeQueueNums: 4, perm: 6)), timeout: .seconds(20))
        let logger = Logger(label: "send-batch-test")
        var options = BrokerService.Options(clusterName: "C", brokerName: "B", storeHost: "127.0.0.1:30911", maxMessageSize: 1 << 20,
                                            autoCreateTopicEnable: false, defaultTopicQueueNums: 4, clientAddresses: [:])
        options.sendBatchMessages = batchMessages
        let service = BrokerService(options: options, store: f.store, writes: writes, forwarder: RemotingClient(group: group, logger: logger), logger: logger)
        // The send processor, with its fast path fed all the requests at once.
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
        let lastBefore = try #require(replica.status).raft.lastIndex

        let answers = try await withThrowingTaskGroup(of: (Int, RemotingCommand).self) { tasks in
            for k in 0..<sends {
                tasks.addTask {
                    let request = RemotingCommand.request(code: RequestCode.sendMessageV2, opaque: 0, extFields: [
                        "a": "pg", "b": "T", "c": "TBW102", "d": "4", "e": "\(k % 3)", "f": "0", "g": "\(k)", "h": "0",
                        "i": "TAGS\u{1}t\(k)\u{2}", "j": "0", "k": "false", "m": "false"], body: ByteBuffer(string: "m\(k)"))
                    return (k, try await client.request(address, request, timeoutMilliseconds: 10_000))
                }
            }
            var out: [Int: RemotingCommand] = [:]
            for try await (k, answer) in tasks { out[k] = answer }
            return out
        }
        #expect(refused.load(ordering: .relaxed) == 0, "every send taken by the fast path")
        #expect(try #require(replica.status).raft.lastIndex.rawValue - lastBefore.rawValue == UInt64(entries),
                "\(sends) sends in one turn, at most \(batchMessages) an entry")
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
            #expect(decoded.body == Array("m\(k)".utf8) && decoded.properties["TAGS"] == "t\(k)")
        }
        for (q, o) in offsets {
            #expect(o.sorted() == Array(0..<Int64(o.count)), "queue \(q): dense from 0")
            #expect(f.store.maxOffset(QueueKey("T", q)) == Int64(o.count))
        }
        // Sends in one turn go to the log in the order they were taken: each queue's offsets rise
        // with the requests' order of arrival.
        let order = held.withLock { $0.map { Int($0.0.extFields["g"] ?? "") ?? -1 } }
        for q in offsets.keys {
            let mine = order.filter { $0 >= 0 && Int32($0 % 3) == q }.map { Int64(answers[$0]!.extFields["queueOffset"]!)! }
            #expect(mine == mine.sorted(), "queue \(q): numbered in the order taken")
        }
        await client.close()
        serving.cancel()
        running.cancel()
        _ = await running.result
        try await group.shutdownGracefully()
    }
}
