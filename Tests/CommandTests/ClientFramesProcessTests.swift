import Foundation
import LogFormat
import Logging
import NIOCore
import NIOPosix
import Remoting
import Testing

/// One request as raw bytes over a blocking socket (a JSON header exactly as a client wrote it), and
/// the answer's header (parsed) and body. 5 s timeouts.
func rawRequest(host: String, port: UInt16, header: String, body: [UInt8] = []) -> (header: [String: Any], body: [UInt8])? {
    guard let fd = connectBlocking(host: host, port: port, timeoutSeconds: 5) else { return nil }
    defer { close(fd) }
    let h = Array(header.utf8)
    var frame: [UInt8] = []
    for v in [UInt32(4 + h.count + body.count), UInt32(h.count)] { withUnsafeBytes(of: v.bigEndian) { frame.append(contentsOf: $0) } }
    frame += h + body
    guard frame.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == frame.count else { return nil }
    func read(_ n: Int) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: n)
        var got = 0
        while got < n {
            let r = out.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, n - got, 0) }
            guard r > 0 else { return nil }
            got += r
        }
        return out
    }
    // The broker may send requests of its own first (NOTIFY_CONSUMER_IDS_CHANGED after a heartbeat).
    for _ in 0..<8 {
        guard let head = read(8) else { return nil }
        let length = Int(head[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        let headerLength = Int(head[5..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        guard head[4] == 0, let rest = read(length - 4), headerLength <= rest.count,
              let json = (try? JSONSerialization.jsonObject(with: Data(rest[0..<headerLength]))) as? [String: Any] else { return nil }
        if ((json["flag"] as? Int) ?? 0) & 1 == 1 { return (json, Array(rest[headerLength...])) }
    }
    return nil
}

extension RaftGroupProcessTests {
    /// §9 of the protocol notes: requests exactly as the Java, Go and C++ clients frame them.
    @Test func framesAsJavaGoAndCppClientsSendThemAreAnsweredAsRocketMQAnswersThem() async throws {
        defer { killAll() }
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        for n in nodes { try start(n) }
        let first = try #require(try await agreedLeader(among: nodes, within: 30), "no leader\n\(logs())")
        let leader = try #require(nodes.first { $0.name == first.leader })
        let follower = try #require(nodes.first { $0 !== leader })
        // Wait for the leader to take writes (its first no-op committed and dispatched).
        var ready = false
        for _ in 0..<100 where !ready {
            let r = rawRequest(host: leader.host, port: 30911, header: #"{"code":310,"language":"JAVA","version":395,"opaque":1,"flag":0,"extFields":{"a":"g","b":"Warm","c":"TBW102","d":"4","e":"0","f":"0","g":"1","h":"0"}}"#,
                               body: Array("w".utf8))
            ready = (r?.header["code"] as? Int) == 0
            if !ready { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(ready, "the leader never took a send\n\(logs())")

        // C++ 2.2: 310 with numbers and booleans in extFields, an empty remark, a trailing newline.
        let cpp = #"{"code":310,"language":"CPP","version":334,"opaque":77,"flag":0,"remark":"","extFields":{"a":"cppGroup","b":"Frames","c":"TBW102","d":4,"e":1,"f":0,"g":1630000000000,"h":0,"i":"TAGS\u0001TagA\u0002UNIQ_KEY\u0001CPP0001","j":0,"k":false,"m":false}}"# + "\n"
        let c = try #require(rawRequest(host: leader.host, port: 30911, header: cpp, body: Array("from C++".utf8)))
        #expect(c.header["code"] as? Int == 0 && c.header["opaque"] as? Int == 77, "\(c.header)")
        #expect(c.header["language"] as? String == "JAVA" && ((c.header["flag"] as? Int) ?? 0) & 1 == 1, "answered as a Java broker does")
        let ext = try #require(c.header["extFields"] as? [String: Any])
        #expect(ext["queueId"] as? String == "1" && ext["queueOffset"] as? String == "0" && (ext["msgId"] as? String)?.count == 32, "\(ext)")
        #expect(ext["MSG_REGION"] as? String == "DefaultRegion" && ext["TRACE_ON"] as? String == "true")

        // Go: SEND_MESSAGE (10) with the V1 names for one message, sent to a follower (forwarded).
        let goSingle = #"{"code":10,"language":"GO","version":317,"opaque":5,"flag":0,"remark":"","extFields":{"producerGroup":"goGroup","topic":"Frames","defaultTopic":"TBW102","defaultTopicQueueNums":"4","queueId":"1","sysFlag":"0","bornTimestamp":"1630000000000","flag":"0","properties":"TAGS\u0001TagB","reconsumeTimes":"0","unitMode":"false","batch":"false"}}"#
        let g = try #require(rawRequest(host: follower.host, port: 30911, header: goSingle, body: Array("from Go".utf8)))
        #expect(g.header["code"] as? Int == 0 && (g.header["extFields"] as? [String: Any])?["queueOffset"] as? String == "1", "\(g.header)")

        // Go: SEND_BATCH_MESSAGE (320) with V2 keys and two items; C++ style m=1 is a batch too.
        func item(_ body: String, _ props: String) -> [UInt8] {
            let b = Array(body.utf8), p = Array(props.utf8)
            var out: [UInt8] = []
            for v in [UInt32(22 + b.count + p.count), 0, 0, 0, UInt32(b.count)] { withUnsafeBytes(of: v.bigEndian) { out.append(contentsOf: $0) } }
            out += b
            withUnsafeBytes(of: UInt16(p.count).bigEndian) { out.append(contentsOf: $0) }
            return out + p
        }
        let batch = item("b1", "TAGS\u{1}TagA\u{2}KEYS\u{1}k1") + item("b2", "TAGS\u{1}TagB")
        let goBatch = #"{"code":320,"language":"GO","version":317,"opaque":6,"flag":0,"extFields":{"a":"goGroup","b":"Frames","c":"TBW102","d":"4","e":"1","f":"0","g":"1630000000000","h":"0","i":"WAIT\u0001true","m":"true"}}"#
        let gb = try #require(rawRequest(host: leader.host, port: 30911, header: goBatch, body: batch))
        let gbExt = try #require(gb.header["extFields"] as? [String: Any])
        #expect(gb.header["code"] as? Int == 0 && gbExt["queueOffset"] as? String == "2" && (gbExt["msgId"] as? String)?.split(separator: ",").count == 2, "\(gb.header)")
        let cppBatch = #"{"code":310,"language":"CPP","version":334,"opaque":8,"flag":0,"extFields":{"a":"g","b":"Frames","c":"TBW102","d":4,"e":1,"f":0,"g":0,"h":0,"m":1}}"# + "\n"
        let cb = try #require(rawRequest(host: leader.host, port: 30911, header: cppBatch, body: item("b3", "TAGS\u{1}TagA")))
        #expect(cb.header["code"] as? Int == 0 && (cb.header["extFields"] as? [String: Any])?["queueOffset"] as? String == "4", "\(cb.header)")

        // Java push consumer: HEART_BEAT with its subscription, then pulls without the SUBSCRIPTION flag:
        // the broker filters by the heartbeat's tags. C++'s heartbeat sends ordinals and string versions.
        let javaBeat = #"{"clientID":"127.0.0.1@1234#99","consumerDataSet":[{"consumeFromWhere":"CONSUME_FROM_FIRST_OFFSET","consumeType":"CONSUME_PASSIVELY","groupName":"javaGroup","messageModel":"CLUSTERING","subscriptionDataSet":[{"classFilterMode":false,"codeSet":[],"expressionType":"TAG","subString":"TagA","subVersion":1630000000000,"tagsSet":["TagA"],"topic":"Frames"}],"unitMode":false}],"producerDataSet":[{"groupName":"CLIENT_INNER_PRODUCER"}]}"#
        let hb = try #require(rawRequest(host: follower.host, port: 30911, header: #"{"code":34,"language":"JAVA","version":395,"opaque":9,"flag":0,"extFields":{}}"#, body: Array(javaBeat.utf8)))
        #expect(hb.header["code"] as? Int == 0)
        let cppBeat = #"{"clientID":"127.0.0.1@5678","consumerDataSet":[{"consumeFromWhere":4,"consumeType":1,"groupName":"cppGroup","messageModel":1,"subscriptionDataSet":[{"subString":"*","subVersion":"1630000000000","topic":"Frames"}],"unitMode":false}],"producerDataSet":[]}"#
        let cppHb = try #require(rawRequest(host: follower.host, port: 30911, header: #"{"code":34,"language":"CPP","version":334,"opaque":10,"flag":0}"# + "\n", body: Array(cppBeat.utf8)))
        #expect(cppHb.header["code"] as? Int == 0, "a heartbeat without extFields, with ordinals")
        let pull = #"{"code":11,"language":"JAVA","version":395,"opaque":11,"flag":0,"extFields":{"consumerGroup":"javaGroup","topic":"Frames","queueId":"1","queueOffset":"0","maxMsgNums":"32","sysFlag":"2","commitOffset":"0","suspendTimeoutMillis":"1000","subVersion":"1630000000000","expressionType":"TAG"}}"#
        // A follower learns the last commit with the leader's next append or at its next tick
        // (docs/raft.md, "Commit updates"): it may serve the queue a tick behind the leader.
        var p = try #require(rawRequest(host: follower.host, port: 30911, header: pull))
        var tags: [String] = []
        for attempt in 0..<50 {
            if attempt > 0 {
                try await Task.sleep(for: .milliseconds(20))
                p = try #require(rawRequest(host: follower.host, port: 30911, header: pull))
            }
            tags = []
            var at = 0
            while at + 4 <= p.body.count {
                let size = Int(p.body[at..<(at + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
                let r = try p.body[at..<(at + size)].withUnsafeBytes { try MessageRecord.decode($0) }
                tags.append(r.properties["TAGS"] ?? "")
                at += size
            }
            if tags.count >= 3 { break }
        }
        #expect(p.header["code"] as? Int == 0 && p.header["remark"] as? String == "FOUND", "\(p.header)")
        #expect(tags == ["TagA", "TagA", "TagA"], "the follower served the committed TagA messages only: \(tags)")
        let pExt = try #require(p.header["extFields"] as? [String: Any])
        #expect(pExt["nextBeginOffset"] as? String == "5" && pExt["maxOffset"] as? String == "5" && pExt["suggestWhichBrokerId"] as? String == "0", "\(pExt)")

        // A ROCKETMQ-serialized request is answered ROCKETMQ-serialized (the RemotingClient checks).
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = RemotingClient(group: group, logger: Logger(label: "test"))
        let max = try await client.request(leader.brokerAddress, .request(code: RequestCode.getMaxOffset, opaque: 0, extFields: ["topic": "Frames", "queueId": "1"],
                                                                           serializeType: .rocketmq), timeoutMilliseconds: 5_000)
        #expect(max.serializeType == .rocketmq && max.extFields["offset"] == "5")
        // A one-way send is stored and never answered (the next request's answer is the first to come).
        try await client.oneway(leader.brokerAddress, .request(code: RequestCode.sendMessageV2, opaque: 0, extFields: [
            "a": "g", "b": "Frames", "c": "TBW102", "d": "4", "e": "1", "f": "0", "g": "0", "h": "0"], body: ByteBuffer(string: "one-way"), oneway: true))
        var stored = ""
        for _ in 0..<50 {
            stored = try await client.request(leader.brokerAddress, .request(code: RequestCode.getMaxOffset, opaque: 0, extFields: ["topic": "Frames", "queueId": "1"]),
                                              timeoutMilliseconds: 5_000).extFields["offset"] ?? ""
            if stored == "6" { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(stored == "6", "the one-way send was stored")
        // Store times: the earliest message's, and the offset of a time (29, 32).
        let earliest = try await client.request(follower.brokerAddress, .request(code: RequestCode.getEarliestMsgStoreTime, opaque: 0,
                                                                                  extFields: ["topic": "Frames", "queueId": "1"]), timeoutMilliseconds: 5_000)
        let t0 = try #require(Int64(earliest.extFields["timestamp"] ?? ""))
        #expect(t0 > 1_700_000_000_000, "\(earliest.extFields)")
        func search(_ t: Int64) async throws -> String? {
            try await client.request(follower.brokerAddress, .request(code: RequestCode.searchOffsetByTimestamp, opaque: 0,
                                                                      extFields: ["topic": "Frames", "queueId": "1", "timestamp": "\(t)"]), timeoutMilliseconds: 5_000).extFields["offset"]
        }
        let (atZero, atEnd) = (try await search(0), try await search(Int64.max))
        #expect(atZero == "0" && atEnd == "6", "\(atZero ?? "-") \(atEnd ?? "-")")
        // Orderly consumers lock queues at the leader (a follower forwards); another client is refused.
        func lock(_ client2: String, code: Int32 = RequestCode.lockBatchMQ, at address: String) async throws -> String {
            var body = ByteBuffer()
            body.writeString(#"{"clientId":"\#(client2)","consumerGroup":"orderly","mqSet":[{"brokerName":"RaftNode00","queueId":1,"topic":"Frames"}]}"#)
            let r = try await client.request(address, .request(code: code, opaque: 0, body: body), timeoutMilliseconds: 5_000)
            var b = r.body ?? ByteBuffer()
            return "\(r.code) " + (b.readString(length: b.readableBytes) ?? "")
        }
        #expect(try await lock("A", at: follower.brokerAddress).contains(#""queueId":1"#))
        #expect(try await lock("B", at: leader.brokerAddress) == #"0 {"lockOKMQSet":[]}"#)
        #expect(try await lock("A", code: RequestCode.unlockBatchMQ, at: leader.brokerAddress).hasPrefix("0"))
        #expect(try await lock("B", at: leader.brokerAddress).contains(#""queueId":1"#), "unlocked, then B's")

        // Unknown codes answer 3; a malformed header answers and keeps the connection usable.
        let unknown = try await client.request(leader.brokerAddress, .request(code: 7_777, opaque: 0), timeoutMilliseconds: 5_000)
        #expect(unknown.code == ResponseCode.requestCodeNotSupported)
        let badPull = try await client.request(leader.brokerAddress, .request(code: RequestCode.pullMessage, opaque: 0, extFields: ["topic": "Frames", "queueId": "x"]),
                                               timeoutMilliseconds: 5_000)
        #expect(badPull.code == ResponseCode.systemError)
        let noTopic = try await client.request(leader.brokerAddress, .request(code: RequestCode.pullMessage, opaque: 0, extFields: [
            "consumerGroup": "g", "topic": "Nope", "queueId": "0", "queueOffset": "0"]), timeoutMilliseconds: 5_000)
        #expect(noTopic.code == ResponseCode.topicNotExist)
        await client.close()
        try? await group.shutdownGracefully()
    }
}
