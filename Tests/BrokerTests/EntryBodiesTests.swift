import Foundation
import LogFormat
typealias LogFormatRecord = MessageRecord
import NIOCore
import Remoting
import Testing
@testable import Broker
import TestSupport

func record(_ topic: String, queue: Int32 = 0, offset: Int64 = 0, body: String = "hello", tags: String? = "TagA",
            storeTimestamp: Int64 = 1_700_000_000_000) throws -> [UInt8] {
    var p = MessageProperties()
    if let tags { p["TAGS"] = tags }
    p["UNIQ_KEY"] = "ID-\(topic)-\(queue)-\(offset)"
    return try MessageRecord(queueId: queue, queueOffset: offset, bornTimestamp: 1, bornHost: .v4(address: (127, 0, 0, 9), port: 5555),
                             storeTimestamp: storeTimestamp, storeHost: .v4(address: (127, 0, 0, 1), port: 30911),
                             body: Array(body.utf8), topic: topic, properties: p).encoded()
}

@Suite(.ownThreads) struct EntryBodiesTests {
    @Test func bodiesAreClassifiedByMagicAndMessagesOnlyWhenRecordsTileTheBody() throws {
        let a = try record("T"), b = try record("T", offset: 1)
        #expect(EntryBody.classify(a) == .messages)
        #expect(EntryBody.classify(a + b) == .messages)
        #expect(Array(EntryBody.recordRanges(a + b)) == [0..<a.count, a.count..<(a.count + b.count)])
        #expect(EntryBody.classify(a + [1, 2, 3]) == .opaque, "a trailing fragment makes it opaque")
        #expect(EntryBody.classify(Array(a.dropLast())) == .opaque)
        #expect(EntryBody.classify(MetadataChange.topicDelete("T").encoded()) == .metadata)
        #expect(EntryBody.classify(Array("hello raw log".utf8)) == .opaque)
        #expect(EntryBody.classify([]) == .opaque)
        // What the raw-log API refuses: anything dispatch would read as messages or metadata, or a
        // fragment that starts like one.
        #expect(!BrokerLogHooks.isOpaque(a) && !BrokerLogHooks.isOpaque(MetadataChange.topicDelete("T").encoded()))
        #expect(!BrokerLogHooks.isOpaque(Array(a.prefix(20))))
        #expect(BrokerLogHooks.isOpaque(Array("hello raw log".utf8)) && BrokerLogHooks.isOpaque([1]))
    }

    @Test func thePatchWritesEachRecordsPhysicalOffsetAndNothingElse() throws {
        let a = try record("T"), b = try record("T", offset: 1)
        var body = a + b
        EntryBody.patchPhysicalOffsets(position: LogPosition(1_000), body: &body)
        let first = try body.withUnsafeBytes { try MessageRecord.decode($0) }
        let second = try body[a.count...].withUnsafeBytes { try MessageRecord.decode($0) }
        #expect(first.physicalOffset == 1_048 && second.physicalOffset == Int64(1_048 + a.count))
        var again = body
        EntryBody.patchPhysicalOffsets(position: LogPosition(1_000), body: &again)
        #expect(again == body, "the patch is idempotent: a follower patching the leader's bytes gets the same")
        var raw = Array("opaque".utf8)
        EntryBody.patchPhysicalOffsets(position: LogPosition(7), body: &raw)
        #expect(raw == Array("opaque".utf8))
    }

    @Test func tagsCodesAreJavasStringHashCode() {
        #expect(javaHashCode("TagA") == 2_598_919)
        #expect(javaHashCode("") == 0)
        #expect(javaHashCode("é") == 233)
        // Overflow wraps as in Java: "polygenelubricants".hashCode() == Integer.MIN_VALUE.
        #expect(javaHashCode("polygenelubricants") == Int32.min)
    }

    @Test func offsetMessageIdsAreHostPortAndOffsetInUpperCaseHex() {
        let id = offsetMessageId(storeHost: .v4(address: (127, 0, 0, 1), port: 30911), physicalOffset: 1234)
        #expect(id == "7F000001000078BF00000000000004D2")
        #expect(physicalOffset(fromOffsetMessageId: id) == 1234)
        #expect(physicalOffset(fromOffsetMessageId: "nonsense") == nil)
    }

    /// The offsetMsgId of any host, and a send's answer's (an IPv4 host's kept as two words): the
    /// same digits as the layout written out by hand.
    @Test func aSendAnswersMessageIDIsTheOffsetMessageID() {
        var r = SplitMix64(seed: 5)
        for k in 0..<2_000 {
            let w = r.next()
            let host: MessageHost = k % 5 == 4
                ? .v6(address: (0..<16).map { _ in UInt8(truncatingIfNeeded: r.next()) }, port: UInt32(truncatingIfNeeded: w))
                : .v4(address: (UInt8(truncatingIfNeeded: w), UInt8(truncatingIfNeeded: w >> 8), UInt8(truncatingIfNeeded: w >> 16),
                                UInt8(truncatingIfNeeded: w >> 24)), port: UInt32(truncatingIfNeeded: w >> 32))
            let offset = k % 7 == 0 ? [0, 1, Int64.max][k % 3] : Int64(bitPattern: r.next() >> (r.next() % 64))
            let id = offsetMessageID(storeHost: host, physicalOffset: offset)
            if case .v4 = host, case .text = id { Issue.record("an IPv4 host's id became text") }
            let answer = ExtFields(SendResponseFields(msgId: id, queueId: 0, queueOffset: 0, region: "R", traceOn: false))
            // Written out independently: the host's bytes, the port and the offset in upper-case hex.
            let expected: String
            switch host {
            case let .v4(a, port):
                expected = String(format: "%02X%02X%02X%02X%08X%016llX", a.0, a.1, a.2, a.3, port, UInt64(bitPattern: offset))
            case let .v6(a, port):
                expected = a.map { String(format: "%02X", $0) }.joined() + String(format: "%08X%016llX", port, UInt64(bitPattern: offset))
            }
            #expect(offsetMessageId(storeHost: host, physicalOffset: offset) == expected)
            #expect(answer["msgId"] == expected)
            #expect(physicalOffset(fromOffsetMessageId: answer["msgId"] ?? "") == offset)
        }
    }

    @Test func subscriptionsMatchByTagHashAndStarMatchesAll() {
        let all = Subscription(topic: "T", expression: "*")
        #expect(all.matches(12) && all.matches(0))
        let some = Subscription(topic: "T", expression: "TagA || TagB")
        #expect(some.matches(Int64(javaHashCode("TagA"))) && some.matches(Int64(javaHashCode("TagB"))))
        #expect(!some.matches(Int64(javaHashCode("TagC"))))
        #expect(some.matches(0), "a message without tags has code 0 and is left to the client")
        #expect(Subscription(topic: "T", expression: "").codes == nil)
    }

    @Test func batchBodiesSplitIntoItemsAndBadItemsAreRefused() throws {
        func item(_ body: String, _ props: String) -> [UInt8] {
            let b = Array(body.utf8), p = Array(props.utf8)
            var out: [UInt8] = []
            out.appendBE(UInt64(22 + b.count + p.count), bytes: 4)
            out.appendBE(0, bytes: 4)
            out.appendBE(0, bytes: 4)
            out.appendBE(7, bytes: 4)
            out.appendBE(UInt64(b.count), bytes: 4)
            out += b
            out.appendBE(UInt64(p.count), bytes: 2)
            return out + p
        }
        let items = try BrokerService.batchItems(item("one", "TAGS\u{1}A") + item("two", "KEYS\u{1}k2\u{2}TAGS\u{1}B"))
        #expect(items.count == 2)
        #expect(items[0].body == Array("one".utf8) && items[0].flag == 7 && items[0].properties["TAGS"] == "A")
        #expect(items[1].properties["KEYS"] == "k2" && items[1].properties["TAGS"] == "B")
        #expect(throws: (any Error).self) { try BrokerService.batchItems(Array(item("one", "").dropLast(1))) }
        var lying = item("one", "")
        lying[3] = 99
        #expect(throws: (any Error).self) { try BrokerService.batchItems(lying) }
        #expect(throws: (any Error).self) { try BrokerService.batchItems([0, 0, 0]) }
    }

    /// The send header read in one walk over the fields agrees with reading it from the dictionary
    /// (RocketMQ's rule: the request code's form of a name wins over the other), over random
    /// headers with both forms, repeated and bad values, and the forwarding fields; from a header
    /// built here and from one read off the wire as JSON text.
    @Test func theSendHeaderReadInOneWalkAgreesWithTheDictionary() throws {
        func reference(_ f: [String: String], v2: Bool) -> BrokerService.SendHeader? {
            func v(_ long: String, _ short: String) -> String? { v2 ? (f[short] ?? f[long]) : (f[long] ?? f[short]) }
            guard let topic = v("topic", "b"), let queueId = v("queueId", "e").flatMap({ Int32($0) }) else { return nil }
            return BrokerService.SendHeader(
                topic: topic, defaultTopic: v("defaultTopic", "c") ?? "TBW102",
                defaultTopicQueueNums: v("defaultTopicQueueNums", "d").flatMap { Int($0) } ?? 4, queueId: queueId,
                sysFlag: v("sysFlag", "f").flatMap { Int32($0) } ?? 0, bornTimestamp: v("bornTimestamp", "g").flatMap { Int64($0) } ?? 0,
                flag: v("flag", "h").flatMap { Int32($0) } ?? 0, properties: v("properties", "i") ?? "",
                reconsumeTimes: min(max(v("reconsumeTimes", "j").flatMap { Int32($0) } ?? 0, 0), 1_000_000),
                batch: v("batch", "m") == "true" || v("batch", "m") == "1",
                forwardedBornHost: f[BrokerService.forwardedField] != nil ? f[BrokerService.bornHostField] : nil)
        }
        var r = SplitMix64(seed: 41)
        let names = BrokerService.sendFieldNames.flatMap { [String(decoding: [$0.short], as: UTF8.self), $0.long.description] }
            + [BrokerService.forwardedField, BrokerService.bornHostField, "a", "k", "producerGroup", "x"]
        let values = ["T", "0", "3", "-1", "x", "", "true", "1", "false", "99999999999", "TAGS\u{1}A\u{2}KEYS\u{1}k", "127.0.0.9:5555"]
        var read = 0
        for _ in 0..<4_000 {
            var f: [String: String] = [:]
            for _ in 0..<Int(r.next() % 16) { f[names[Int(r.next() % UInt64(names.count))]] = values[Int(r.next() % UInt64(values.count))] }
            let v2 = r.next() % 2 == 0
            var wire = ByteBuffer()
            RemotingFrame.encode(.request(code: v2 ? 310 : 10, opaque: 1, extFields: ExtFields(f)), into: &wire)
            let decoded = try #require(try RemotingFrame.decode(&wire))
            let want = reference(f, v2: v2)
            #expect(BrokerService.sendHeader(ExtFields(f), v2: v2) == want, "\(f)")
            #expect(BrokerService.sendHeader(decoded.extFields, v2: v2) == want, "\(f)")
            if want != nil { read += 1 }
        }
        #expect(read > 200)
        // As other clients write headers: names repeated, spelled with escapes, values null or bare
        // numbers; the walk agrees with the dictionary of the same text.
        let spellings: [(String, String)] = [("b", "b"), (#"\u0062"#, "b"), ("topic", "topic"), ("e", "e"), (#"\u0065"#, "e"),
                                             ("queueId", "queueId"), ("i", "i"), ("m", "m"), (BrokerService.forwardedField, ""), (BrokerService.bornHostField, "")]
        let texts = [#""T""#, #""U""#, "null", "3", "-1", #""x""#, "true", #""TAGS\u0001A""#, #""127.0.0.9:5555""#]
        for _ in 0..<3_000 {
            var pairs: [String] = []
            for _ in 0..<Int(r.next() % 10) {
                pairs.append("\"\(spellings[Int(r.next() % UInt64(spellings.count))].0)\":" + texts[Int(r.next() % UInt64(texts.count))])
            }
            let v2 = r.next() % 2 == 0
            let header = Array(("{\"code\":\(v2 ? 310 : 10),\"opaque\":1,\"extFields\":{" + pairs.joined(separator: ",") + "}}").utf8)
            var wire = ByteBuffer()
            wire.writeInteger(Int32(4 + header.count + 1))
            wire.writeInteger(UInt32(header.count))
            wire.writeBytes(header)
            wire.writeInteger(UInt8(1))  // a body, as a send has
            let decoded = try #require(try RemotingFrame.decode(&wire))
            #expect(BrokerService.sendHeader(decoded.extFields, v2: v2) == reference(decoded.extFields.dictionary, v2: v2), "\(pairs)")
        }
    }

    @Test func sendHeadersReadV1NamesAndV2ShortKeys() {
        let v1 = BrokerService.sendHeader(["producerGroup": "g", "topic": "T", "defaultTopic": "TBW102", "defaultTopicQueueNums": "4",
                                           "queueId": "2", "sysFlag": "0", "bornTimestamp": "5", "flag": "0", "properties": "TAGS\u{1}A"], v2: false)
        #expect(v1?.topic == "T" && v1?.queueId == 2 && v1?.properties == "TAGS\u{1}A" && v1?.batch == false)
        let v2 = BrokerService.sendHeader(["a": "g", "b": "T", "c": "TBW102", "d": "4", "e": "-1", "f": "0", "g": "5", "h": "0", "m": "1"], v2: true)
        #expect(v2?.queueId == -1 && v2?.batch == true, "C++ sends m=1 for a batch")
        #expect(BrokerService.sendHeader(["b": "T"], v2: true) == nil)
        #expect(BrokerService.sendHeader(["b": "T", "e": "x"], v2: true) == nil)
    }

    /// Dispatch reads TAGS, DELAY, UNIQ_KEY and KEYS in one pass: each is what
    /// `MessageProperties.value(of:in:)` finds, over random property texts (repeated names, empty
    /// names and values, stray separators, bytes that are not UTF-8).
    @Test func dispatchFindsTheFourPropertiesAsTheGeneralReaderDoes() {
        var rng = SystemRandomNumberGenerator()
        let names: [[UInt8]] = ["TAGS", "KEYS", "DELAY", "UNIQ_KEY", "TAG", "TAGSS", "X", ""].map { Array($0.utf8) }
        let values: [[UInt8]] = ["", "a", "TagA", "k1 k2", "\u{1}", "é", "订单"].map { Array($0.utf8) } + [[0xFF], [0xC3], [0x41, 0xE9]]
        for _ in 0..<5_000 {
            var text: [UInt8] = []
            for p in 0..<Int.random(in: 0...6, using: &rng) {
                if p > 0 { text.append(0x02) }
                text += names.randomElement(using: &rng)!
                if Int.random(in: 0..<8, using: &rng) > 0 { text.append(0x01) }
                text += values.randomElement(using: &rng)!
            }
            if Bool.random(using: &rng) { text.append(0x02) }
            text.withUnsafeBytes { bytes in
                let found = DispatchProperties(bytes)
                for (name, range) in [("TAGS", found.tags), ("DELAY", found.delay), ("UNIQ_KEY", found.uniqueKey), ("KEYS", found.keys)] {
                    let expected = MessageProperties.value(of: name, in: bytes)
                    let got = range.flatMap { String(validating: UnsafeRawBufferPointer(rebasing: bytes[$0]), as: UTF8.self) }
                    #expect(got == expected, "\(name) in \(text)")
                }
            }
        }
        #expect(PropertyName.tags == "TAGS" && PropertyName.delay == "DELAY" && PropertyName.uniqueKey == "UNIQ_KEY" && PropertyName.keys == "KEYS", "the names the test compares with")
    }

    /// Java's String.hashCode continued over more text, and over UTF-8 bytes, equals the hash of the
    /// whole text; bytes that are not UTF-8 have none.
    @Test func javaHashCodesContinueOverTextAndUTF8Bytes() {
        #expect(javaHashCode("hello") == 99_162_322 && javaHashCode("") == 0)
        let texts = ["", "T", "TopicTest", "#", "order-1", "é", "订单-1", "😀x", "a b"]
        for a in texts {
            for b in texts {
                #expect(javaHashCode(b, continuing: javaHashCode(a)) == javaHashCode(a + b))
                #expect(Array(b.utf8).withUnsafeBytes { javaHashCode(utf8: $0, continuing: javaHashCode(a)) } == javaHashCode(a + b), "\(a) + \(b)")
            }
        }
        #expect([UInt8]([0x41, 0xFF]).withUnsafeBytes { javaHashCode(utf8: $0) } == nil)
    }
}
