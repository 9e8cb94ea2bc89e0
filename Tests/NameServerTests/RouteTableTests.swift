import Testing
@testable import NameServer
import TestSupport

@Suite(.ownThreads) struct RouteTableTests {
    let v1 = RouteTable.DataVersion(timestamp: 1, counter: 1)
    let v2 = RouteTable.DataVersion(timestamp: 2, counter: 2)

    func reg(_ name: String, _ addr: String, id: Int64, version: RouteTable.DataVersion, topics: [String] = ["TopicTest"], queues: Int = 4) -> RouteTable.Registration {
        RouteTable.Registration(clusterName: "RaftCluster", brokerName: name, brokerAddr: addr, brokerId: id, haServerAddr: addr + "-ha",
                                dataVersion: version, topics: topics.map { RouteTable.TopicConfig(topicName: $0, readQueueNums: queues, writeQueueNums: queues, perm: 6) })
    }

    @Test func aMasterRegistrationMakesARouteAndSlavesLearnTheirMaster() {
        var t = RouteTable()
        #expect(t.route(topic: "TopicTest") == nil)
        let m = t.register(reg("RaftNode00", "127.0.0.1:30911", id: 0, version: v1), nowMs: 0)
        #expect(m == RouteTable.RegistrationAnswer(masterAddr: nil, haServerAddr: nil))
        let s = t.register(reg("RaftNode00", "127.0.0.2:30911", id: 2, version: v1, topics: ["OnlyOnTheSlave"]), nowMs: 0)
        #expect(s.masterAddr == "127.0.0.1:30911" && s.haServerAddr == "127.0.0.1:30911-ha")
        let route = try! #require(t.route(topic: "TopicTest"))
        #expect(route.queueDatas == [RouteTable.QueueData(brokerName: "RaftNode00", readQueueNums: 4, writeQueueNums: 4, perm: 6, topicSysFlag: 0)])
        #expect(route.brokerDatas.first?.brokerAddrs == [0: "127.0.0.1:30911", 2: "127.0.0.2:30911"])
        #expect(t.route(topic: "OnlyOnTheSlave") == nil, "slaves never create queues")
        #expect(t.clusterAddrTable == ["RaftCluster": ["RaftNode00"]])
    }

    @Test func aNewLeaderTakesIdZeroAndTheOldOneMovesToItsFollowerId() {
        var t = RouteTable()
        _ = t.register(reg("RaftNode00", "127.0.0.1:30911", id: 0, version: v1), nowMs: 0)
        _ = t.register(reg("RaftNode00", "127.0.0.2:30911", id: 2, version: v1), nowMs: 0)
        // Leadership moved: n1 registers as 0, n0 as its follower id 1.
        _ = t.register(reg("RaftNode00", "127.0.0.2:30911", id: 0, version: v1), nowMs: 1)
        _ = t.register(reg("RaftNode00", "127.0.0.1:30911", id: 1, version: v1), nowMs: 1)
        #expect(t.brokerAddrTable["RaftNode00"]?.brokerAddrs == [0: "127.0.0.2:30911", 1: "127.0.0.1:30911"], "one address has one id")
    }

    @Test func topicsAreReReadOnlyWhenTheDataVersionChanges() {
        var t = RouteTable()
        _ = t.register(reg("b", "a:1", id: 0, version: v1, queues: 4), nowMs: 0)
        _ = t.register(reg("b", "a:1", id: 0, version: v1, queues: 8), nowMs: 1)
        #expect(t.route(topic: "TopicTest")?.queueDatas.first?.writeQueueNums == 4, "same dataVersion: not re-read")
        #expect(t.wipeWritePerm(brokerName: "b") == 1)
        _ = t.register(reg("b", "a:1", id: 0, version: v1, queues: 4), nowMs: 2)
        #expect(t.route(topic: "TopicTest")?.queueDatas.first?.perm == 4, "a wipe lasts through same-version registrations")
        _ = t.register(reg("b", "a:1", id: 0, version: v2, queues: 8), nowMs: 3)
        let q = t.route(topic: "TopicTest")?.queueDatas.first
        #expect(q?.writeQueueNums == 8 && q?.perm == 6)
    }

    @Test func expiryAndUnregisterRemoveAddressesThenGroupsThenTopics() {
        var t = RouteTable()
        _ = t.register(reg("b", "m:1", id: 0, version: v1), nowMs: 0)
        _ = t.register(reg("b", "s:1", id: 1, version: v1), nowMs: 100_000)
        #expect(t.expire(nowMs: 130_000) == ["m:1"], "only the master is silent for more than 120 s")
        let route = try! #require(t.route(topic: "TopicTest"), "a live slave keeps the topic routable")
        #expect(route.brokerDatas.first?.brokerAddrs == [1: "s:1"])
        t.unregister(brokerName: "b", brokerAddr: "s:1", brokerId: 1)
        #expect(t.route(topic: "TopicTest") == nil)
        #expect(t.allTopics.isEmpty && t.brokerAddrTable.isEmpty && t.clusterAddrTable.isEmpty)
    }

    @Test func aClosedConnectionUnregistersItsBrokers() {
        var t = RouteTable()
        final class Token {}
        let c = Token()
        var r = reg("b", "m:1", id: 0, version: v1)
        r.connection = ObjectIdentifier(c)
        _ = t.register(r, nowMs: 0)
        #expect(t.connectionClosed(ObjectIdentifier(c)) == ["m:1"])
        #expect(t.route(topic: "TopicTest") == nil)
    }
}

@Suite(.ownThreads) struct NameServerBodyTests {
    @Test func routesAreCompactSortedWithQuotedIds() {
        let r = RouteTable.Route(
            queueDatas: [RouteTable.QueueData(brokerName: "RaftNode00", readQueueNums: 4, writeQueueNums: 4, perm: 6, topicSysFlag: 0)],
            brokerDatas: [RouteTable.BrokerData(cluster: "RaftCluster", brokerName: "RaftNode00", brokerAddrs: [0: "127.0.0.1:30911"])])
        #expect(NameServerBodies.route(r) ==
                #"{"brokerDatas":[{"brokerAddrs":{"0":"127.0.0.1:30911"},"brokerName":"RaftNode00","cluster":"RaftCluster"}],"filterServerTable":{},"queueDatas":[{"brokerName":"RaftNode00","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#)
    }

    @Test func aPlainRegistrationBodyAsTheJavaBrokerSendsIt() throws {
        let body = #"{"filterServerList":[],"topicConfigSerializeWrapper":{"dataVersion":{"counter":3,"timestamp":1630000000000},"topicConfigTable":{"TopicTest":{"order":false,"perm":6,"readQueueNums":4,"topicFilterType":"SINGLE_TAG","topicName":"TopicTest","topicSysFlag":0,"writeQueueNums":4},"TBW102":{"order":false,"perm":7,"readQueueNums":8,"topicFilterType":"SINGLE_TAG","topicName":"TBW102","topicSysFlag":0,"writeQueueNums":8}}}}"#
        let (v, topics) = try NameServerBodies.decodeRegistration(Array(body.utf8), compressed: false)
        #expect(v == RouteTable.DataVersion(timestamp: 1_630_000_000_000, counter: 3))
        #expect(topics.map(\.topicName) == ["TBW102", "TopicTest"])
        #expect(topics[0].perm == 7 && topics[0].writeQueueNums == 8)
    }

    @Test func badBodiesAreErrorsNotCrashes() {
        #expect(throws: NameServerBodies.BodyError.self) { try NameServerBodies.decodeRegistration(Array("{not json".utf8), compressed: false) }
        #expect(throws: NameServerBodies.BodyError.self) { try NameServerBodies.decodeRegistration([1, 2, 3], compressed: true) }
        #expect(throws: NameServerBodies.BodyError.self) {
            try NameServerBodies.decodeRegistration(Array(#"{"topicConfigSerializeWrapper":{"topicConfigTable":{"T":{"perm":"x"}}}}"#.utf8), compressed: false)
        }
    }
}

import CZlib

/// The compressed registration as RocketMQ's RegisterBrokerBody.encode(true) writes it.
func compressedRegistration(version: String, topics: [String]) -> [UInt8] {
    var raw: [UInt8] = []
    func int32(_ v: Int) { raw += [UInt8(v >> 24 & 0xff), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)] }
    func chunk(_ s: String) { int32(s.utf8.count); raw += Array(s.utf8) }
    chunk(version)
    int32(topics.count)
    for t in topics { chunk(t) }
    chunk("[]")
    var out = [UInt8](repeating: 0, count: Int(compressBound(uLong(raw.count))))
    var outLength = uLongf(out.count)
    let status = compress2(&out, &outLength, raw, uLong(raw.count), Z_BEST_COMPRESSION)
    precondition(status == Z_OK)
    return Array(out[0..<Int(outLength)])
}

@Suite(.ownThreads) struct CompressedRegistrationTests {
    @Test func aCompressedBodyDecodes() throws {
        let body = compressedRegistration(version: #"{"counter":7,"timestamp":99}"#, topics: ["TopicTest 4 4 6 SINGLE_TAG", "TBW102 8 8 7 SINGLE_TAG"])
        let (v, topics) = try NameServerBodies.decodeRegistration(body, compressed: true)
        #expect(v == RouteTable.DataVersion(timestamp: 99, counter: 7))
        #expect(topics == [RouteTable.TopicConfig(topicName: "TopicTest", readQueueNums: 4, writeQueueNums: 4, perm: 6),
                           RouteTable.TopicConfig(topicName: "TBW102", readQueueNums: 8, writeQueueNums: 8, perm: 7)])
        // Cut anywhere, it is an error.
        for cut in [1, body.count / 2, body.count - 1] {
            #expect(throws: NameServerBodies.BodyError.self) { try NameServerBodies.decodeRegistration(Array(body[0..<cut]), compressed: true) }
        }
    }
}
