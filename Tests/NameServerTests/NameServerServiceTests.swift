import CChecksum
import Foundation
import Logging
import NIOCore
import NIOPosix
import Testing
@testable import NameServer
@testable import Remoting
import TestSupport

/// The nameserver's protocol over a real socket on 127.0.0.1, through a RemotingClient.
/// Every request here must be answered: only a hang should fail a test, not a slow start while every
/// suite starts at once on two cores (one such first request took over 3 s in a full run).
private let answerWithinMs: Int64 = 10_000

@Suite(.ownThreads) struct NameServerServiceTests {
    func withNameServer(kvPath: String? = nil, _ body: @Sendable (String, RemotingClient, NameServerService) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let logger = Logger(label: "test")
        let service = NameServerService(kvConfigPath: kvPath, logger: logger)
        let server = RemotingServer(options: RemotingServerOptions(host: "127.0.0.1", port: 0), processors: [service.processor], group: group, logger: logger)
        let (bound, boundContinuation) = AsyncStream.makeStream(of: Int.self)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await server.run { boundContinuation.yield($0.port ?? 0) } }
            var it = bound.makeAsyncIterator()
            let port = await it.next()!
            let client = RemotingClient(group: group, logger: logger)
            do {
                try await body("127.0.0.1:\(port)", client, service)
            } catch {
                await client.close()
                tasks.cancelAll()
                throw error
            }
            await client.close()
            tasks.cancelAll()
        }
        try await group.shutdownGracefully()
    }

    static let registration = #"{"filterServerList":[],"topicConfigSerializeWrapper":{"dataVersion":{"counter":1,"timestamp":5},"topicConfigTable":{"TopicTest":{"order":false,"perm":6,"readQueueNums":4,"topicFilterType":"SINGLE_TAG","topicName":"TopicTest","topicSysFlag":0,"writeQueueNums":4}}}}"#

    func register(_ client: RemotingClient, _ ns: String, id: Int, addr: String, crc: Int64? = nil) async throws -> RemotingCommand {
        var body = ByteBuffer()
        body.writeString(Self.registration)
        let bytes = Array(Self.registration.utf8)
        let computed = Int64(bytes.withUnsafeBytes { raftmq_crc32_ieee(0, $0.baseAddress, $0.count) } & 0x7FFF_FFFF)
        return try await client.request(ns, .request(code: RequestCode.registerBroker, opaque: 0, extFields: [
            "brokerName": "RaftNode00", "brokerAddr": addr, "clusterName": "RaftCluster", "haServerAddr": addr,
            "brokerId": "\(id)", "compressed": "false", "bodyCrc32": "\(crc ?? computed)",
        ], body: body), timeoutMilliseconds: answerWithinMs)
    }

    func text(_ c: RemotingCommand) -> String {
        var b = c.body ?? ByteBuffer()
        return b.readString(length: b.readableBytes) ?? ""
    }

    @Test func registerThenRouteClusterInfoAndTopicList() async throws {
        try await withNameServer { ns, client, _ in
            let master = try await register(client, ns, id: 0, addr: "127.0.0.1:30911")
            #expect(master.code == ResponseCode.success)
            let slave = try await register(client, ns, id: 2, addr: "127.0.0.2:30911")
            #expect(slave.extFields["masterAddr"] == "127.0.0.1:30911")
            let route = try await client.request(ns, .request(code: RequestCode.getRouteInfoByTopic, opaque: 0, extFields: ["topic": "TopicTest"]), timeoutMilliseconds: answerWithinMs)
            #expect(route.code == ResponseCode.success)
            #expect(text(route) == #"{"brokerDatas":[{"brokerAddrs":{"0":"127.0.0.1:30911","2":"127.0.0.2:30911"},"brokerName":"RaftNode00","cluster":"RaftCluster"}],"filterServerTable":{},"queueDatas":[{"brokerName":"RaftNode00","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#)
            let missing = try await client.request(ns, .request(code: RequestCode.getRouteInfoByTopic, opaque: 0, extFields: ["topic": "Nope"]), timeoutMilliseconds: answerWithinMs)
            #expect(missing.code == ResponseCode.topicNotExist)
            #expect(missing.remark?.hasPrefix("No topic route info in name server for the topic: Nope") == true)
            let cluster = try await client.request(ns, .request(code: RequestCode.getBrokerClusterInfo, opaque: 0), timeoutMilliseconds: answerWithinMs)
            #expect(text(cluster) == #"{"brokerAddrTable":{"RaftNode00":{"brokerAddrs":{"0":"127.0.0.1:30911","2":"127.0.0.2:30911"},"brokerName":"RaftNode00","cluster":"RaftCluster"}},"clusterAddrTable":{"RaftCluster":["RaftNode00"]}}"#)
            let topics = try await client.request(ns, .request(code: RequestCode.getAllTopicListFromNameserver, opaque: 0), timeoutMilliseconds: answerWithinMs)
            #expect(text(topics) == #"{"topicList":["TopicTest"]}"#)
            let wipe = try await client.request(ns, .request(code: RequestCode.wipeWritePermOfBroker, opaque: 0, extFields: ["brokerName": "RaftNode00"]), timeoutMilliseconds: answerWithinMs)
            #expect(wipe.extFields["wipeTopicCount"] == "1")
        }
    }

    @Test func aBadCRCOrBodyIsRefusedAndUnknownCodesAnswered3() async throws {
        try await withNameServer { ns, client, _ in
            let bad = try await register(client, ns, id: 0, addr: "127.0.0.1:30911", crc: 12_345)
            #expect(bad.code == ResponseCode.systemError && bad.remark == "crc32 not match")
            var junk = ByteBuffer()
            junk.writeString("{oops")
            let broken = try await client.request(ns, .request(code: RequestCode.registerBroker, opaque: 0, extFields: [
                "brokerName": "b", "brokerAddr": "a:1", "clusterName": "c", "brokerId": "0"], body: junk), timeoutMilliseconds: answerWithinMs)
            #expect(broken.code == ResponseCode.systemError)
            let missing = try await client.request(ns, .request(code: RequestCode.registerBroker, opaque: 0, extFields: ["brokerName": "b"]), timeoutMilliseconds: answerWithinMs)
            #expect(missing.code == ResponseCode.systemError && missing.remark?.contains("brokerAddr") == true)
            let unknown = try await client.request(ns, .request(code: 9_999, opaque: 0), timeoutMilliseconds: answerWithinMs)
            #expect(unknown.code == ResponseCode.requestCodeNotSupported)
            // The connection is still usable.
            let ok = try await register(client, ns, id: 0, addr: "127.0.0.1:30911")
            #expect(ok.code == ResponseCode.success)
        }
    }

    @Test func closingTheBrokersConnectionUnregistersIt() async throws {
        try await withNameServer { ns, client, service in
            _ = try await register(client, ns, id: 0, addr: "127.0.0.1:30911")
            #expect(service.table.route(topic: "TopicTest") != nil)
            await client.close()
            let deadline = Date().addingTimeInterval(3)
            while service.table.route(topic: "TopicTest") != nil && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(service.table.route(topic: "TopicTest") == nil)
        }
    }

    @Test func kvConfigIsKeptAndPersisted() async throws {
        let path = NSTemporaryDirectory() + "raftmq-kv-\(UUID().uuidString)/kvConfig.json"
        defer { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
        try await withNameServer(kvPath: path) { ns, client, _ in
            let put = try await client.request(ns, .request(code: RequestCode.putKVConfig, opaque: 0, extFields: ["namespace": "ORDER_TOPIC_CONFIG", "key": "T", "value": "RaftNode00:4"]), timeoutMilliseconds: answerWithinMs)
            #expect(put.code == ResponseCode.success)
            let get = try await client.request(ns, .request(code: RequestCode.getKVConfig, opaque: 0, extFields: ["namespace": "ORDER_TOPIC_CONFIG", "key": "T"]), timeoutMilliseconds: answerWithinMs)
            #expect(get.extFields["value"] == "RaftNode00:4")
            // An order-topic config goes back to registering brokers.
            let reg = try await register(client, ns, id: 0, addr: "127.0.0.1:30911")
            #expect(text(reg) == #"{"table":{"T":"RaftNode00:4"}}"#)
        }
        // A new nameserver on the same file has it.
        try await withNameServer(kvPath: path) { ns, client, _ in
            let get = try await client.request(ns, .request(code: RequestCode.getKVConfig, opaque: 0, extFields: ["namespace": "ORDER_TOPIC_CONFIG", "key": "T"]), timeoutMilliseconds: answerWithinMs)
            #expect(get.extFields["value"] == "RaftNode00:4")
            _ = try await client.request(ns, .request(code: RequestCode.deleteKVConfig, opaque: 0, extFields: ["namespace": "ORDER_TOPIC_CONFIG", "key": "T"]), timeoutMilliseconds: answerWithinMs)
            let gone = try await client.request(ns, .request(code: RequestCode.getKVConfig, opaque: 0, extFields: ["namespace": "ORDER_TOPIC_CONFIG", "key": "T"]), timeoutMilliseconds: answerWithinMs)
            #expect(gone.code == ResponseCode.queryNotFound)
            #expect(gone.remark == "No config item, Namespace: ORDER_TOPIC_CONFIG Key: T")
        }
    }
}
