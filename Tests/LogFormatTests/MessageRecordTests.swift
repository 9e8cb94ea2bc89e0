import Testing
import TestSupport

@testable import LogFormat

@Suite(.ownThreads) struct MessageRecordTests {
    static let guideProperties = MessageProperties([
        ("UNIQ_KEY", "7F0000010CF91B6D35864651355803D4"), ("CLUSTER", "rocketmq-cluster"), ("TAGS", "TagA"),
    ])

    func guideMessage() -> MessageRecord {
        MessageRecord(
            queueId: 3, queueOffset: 1372, physicalOffset: 1_067_578, bornTimestamp: 1_702_539_727_192,
            bornHost: .v4(address: (192, 168, 150, 140), port: 39784), storeTimestamp: 1_702_539_727_192,
            storeHost: .v4(address: (192, 168, 150, 140), port: 10911), body: Array("Hello RocketMQ 980".utf8),
            topic: "TopicTest", properties: Self.guideProperties)
    }

    @Test func theGuidesQuickstartMessageIs194Bytes() throws {
        // The guide's consumer printed storeSize=194, bodyCRC=1187919614 for this message.
        let m = guideMessage()
        let bytes = try m.encoded()
        #expect(bytes.count == 194)
        #expect(m.bodyCRC == 1_187_919_614)
        #expect(Array(bytes[4..<8]) == [0xDA, 0xA3, 0x20, 0xA7])
        let decoded = try bytes.withUnsafeBytes { try MessageRecord.decode($0) }
        #expect(decoded == m)
    }

    @Test func fieldOffsetsAreRocketMQs() throws {
        var bytes = try guideMessage().encoded()
        func u64(_ at: Int) -> Int64 { Int64(bitPattern: bytes[at..<(at + 8)].reduce(0) { $0 << 8 | UInt64($1) }) }
        #expect(u64(20) == 1372)  // QUEUEOFFSET
        #expect(u64(28) == 1_067_578)  // PHYSICALOFFSET
        #expect(Array(bytes[48..<56]) == [192, 168, 150, 140, 0, 0, 0x9B, 0x68])  // BORNHOST 39784
        #expect(Array(bytes[84..<88]) == [0, 0, 0, 18])  // BODYLENGTH
        MessageRecord.patch(queueOffset: 5, physicalOffset: 4096 + 48, in: &bytes)
        let patched = try bytes.withUnsafeBytes { try MessageRecord.decode($0) }
        #expect(patched.queueOffset == 5)
        #expect(patched.physicalOffset == 4144)
    }

    /// A record patched where it lies inside a larger buffer (a batch being built) is the record
    /// patched on its own, and the bytes around it are untouched.
    @Test func patchingInPlaceInsideABufferEqualsPatchingTheRecordAlone() throws {
        let record = try guideMessage().encoded()
        var alone = record
        MessageRecord.patch(queueOffset: 77, physicalOffset: 9_000, in: &alone)
        var buffer = [UInt8](repeating: 0xEE, count: 13) + record + record
        MessageRecord.patch(queueOffset: 77, physicalOffset: 9_000, in: &buffer, at: 13 + record.count)
        #expect(Array(buffer[0..<13]) == [UInt8](repeating: 0xEE, count: 13))
        #expect(Array(buffer[13..<(13 + record.count)]) == record, "the record before is untouched")
        #expect(Array(buffer[(13 + record.count)...]) == alone)
        var raw = [UInt8](repeating: 0xEE, count: 13) + record + record
        raw.withUnsafeMutableBytes { MessageRecord.patch(queueOffset: 77, physicalOffset: 9_000, in: $0, at: 13 + record.count) }
        #expect(raw == buffer, "patching memory in place writes the same bytes")
    }

    @Test func roundTripsRandomRecords() throws {
        var rng = SplitMix64(seed: 2024)
        for _ in 0..<300 {
            func host() -> MessageHost {
                if Bool.random(using: &rng) {
                    return .v4(address: (UInt8.random(in: 0...255, using: &rng), 1, 2, UInt8.random(in: 0...255, using: &rng)), port: UInt32.random(in: 0...65535, using: &rng))
                }
                return .v6(address: (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }, port: UInt32.random(in: 0...65535, using: &rng))
            }
            var props = MessageProperties()
            for i in 0..<Int.random(in: 0...6, using: &rng) {
                props["k\(i)\(Int.random(in: 0...9, using: &rng))"] = String(repeating: "v", count: Int.random(in: 1...20, using: &rng)) + "é漢"
            }
            let m = MessageRecord(
                queueId: Int32.random(in: 0...1000, using: &rng), flag: Int32.random(in: Int32.min...Int32.max, using: &rng),
                queueOffset: Int64.random(in: 0...Int64.max, using: &rng), physicalOffset: Int64.random(in: 0...Int64.max, using: &rng),
                sysFlag: Int32.random(in: 0...0x0F, using: &rng), bornTimestamp: Int64.random(in: 0...Int64.max, using: &rng), bornHost: host(),
                storeTimestamp: Int64.random(in: 0...Int64.max, using: &rng), storeHost: host(),
                reconsumeTimes: Int32.random(in: 0...16, using: &rng),
                body: (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) },
                topic: "Topic_" + String(Int.random(in: 0...99999, using: &rng)), properties: props)
            let bytes = try m.encoded()
            let decoded = try bytes.withUnsafeBytes { try MessageRecord.decode($0) }
            #expect(decoded.storedSysFlag == m.storedSysFlag)
            var expected = m
            expected.sysFlag = m.storedSysFlag
            #expect(decoded == expected)
            #expect(try decoded.encoded() == bytes)
            // Dispatch's in-place read agrees with the full decode.
            let routing = try bytes.withUnsafeBytes { try MessageRecord.routing($0) }
            #expect(routing.topic == m.topic && routing.queueId == m.queueId && routing.queueOffset == m.queueOffset && routing.storeTimestamp == m.storeTimestamp)
            for (name, value) in props {
                #expect(bytes.withUnsafeBytes { MessageProperties.value(of: name, in: UnsafeRawBufferPointer(rebasing: $0[routing.properties])) } == value)
            }
        }
    }

    /// The send path's record built from bytes (numbered as it is encoded, its body CRC given or
    /// computed) is the record the general path builds, of the size `encodedSize` gives.
    @Test func aRecordFromBytesIsTheRecordFromItsParts() throws {
        var rng = SplitMix64(seed: 2025)
        for _ in 0..<300 {
            func host() -> MessageHost {
                if Bool.random(using: &rng) { return .v4(address: (127, 0, 0, UInt8.random(in: 0...255, using: &rng)), port: UInt32.random(in: 0...65535, using: &rng)) }
                return .v6(address: (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }, port: UInt32.random(in: 0...65535, using: &rng))
            }
            var props = MessageProperties()
            for i in 0..<Int.random(in: 0...6, using: &rng) { props["k\(i)"] = String(repeating: "v", count: Int.random(in: 1...20, using: &rng)) + "é" }
            let m = MessageRecord(
                queueId: Int32.random(in: 0...1000, using: &rng), flag: Int32.random(in: Int32.min...Int32.max, using: &rng),
                queueOffset: Int64.random(in: 0...Int64.max, using: &rng),
                sysFlag: Int32.random(in: 0...0x3F, using: &rng), bornTimestamp: Int64.random(in: 0...Int64.max, using: &rng), bornHost: host(),
                storeTimestamp: Int64.random(in: 0...Int64.max, using: &rng), storeHost: host(), reconsumeTimes: Int32.random(in: 0...16, using: &rng),
                body: (0..<Int.random(in: 0...2_000, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) },
                topic: "Topic_" + String(Int.random(in: 0...99999, using: &rng)), properties: props)
            let propertyBytes = try props.encoded()
            let fromBytes = try m.body.withUnsafeBytes { b in
                try propertyBytes.withUnsafeBytes { p in
                    try MessageRecord.encoded(queueId: m.queueId, flag: m.flag, queueOffset: m.queueOffset, sysFlag: m.sysFlag, bornTimestamp: m.bornTimestamp,
                                              bornHost: m.bornHost, storeTimestamp: m.storeTimestamp, storeHost: m.storeHost, reconsumeTimes: m.reconsumeTimes,
                                              body: b, bodyCRC: Bool.random(using: &rng) ? m.bodyCRC : nil, topic: m.topic, propertyBytes: p)
                }
            }
            #expect(try fromBytes == m.encoded())
            #expect(try MessageRecord.encodedSize(bornHost: m.bornHost, storeHost: m.storeHost, bodyBytes: m.body.count, topic: m.topic,
                                                  propertyBytes: propertyBytes.count) == fromBytes.count)
        }
        #expect(throws: LogFormatError.self) {
            try MessageRecord.encodedSize(bornHost: .v4(address: (1, 2, 3, 4), port: 1), storeHost: .v4(address: (1, 2, 3, 4), port: 1), bodyBytes: 0,
                                          topic: String(repeating: "t", count: 128), propertyBytes: 0)
        }
        #expect(throws: LogFormatError.self) {
            try MessageRecord.encodedSize(bornHost: .v4(address: (1, 2, 3, 4), port: 1), storeHost: .v4(address: (1, 2, 3, 4), port: 1), bodyBytes: 0,
                                          topic: "T", propertyBytes: MessageProperties.encodedBytesMax + 1)
        }
        let long = [UInt8](repeating: 0x41, count: MessageProperties.encodedBytesMax + 1)
        #expect(throws: LogFormatError.self) {
            try long.withUnsafeBytes { p in
                try MessageRecord.encoded(queueId: 0, flag: 0, sysFlag: 0, bornTimestamp: 0, bornHost: .v4(address: (1, 2, 3, 4), port: 1), storeTimestamp: 0,
                                          storeHost: .v4(address: (1, 2, 3, 4), port: 1), reconsumeTimes: 0, body: UnsafeRawBufferPointer(start: nil, count: 0),
                                          topic: "T", propertyBytes: p)
            }
        }
    }

    /// Rewriting properties in place (the send path's CLUSTER set, WAIT dropped) gives what
    /// decoding, setting and encoding gives, or declines: never different bytes.
    @Test func rewrittenPropertiesAreTheDecodedOnesReencoded() throws {
        let cases = [
            "UNIQ_KEY\u{1}7F000001\u{2}WAIT\u{1}true\u{2}TAGS\u{1}a", "CLUSTER\u{1}old\u{2}K\u{1}v", "", "WAIT\u{1}true",
            "K\u{1}v\u{2}", "\u{2}K\u{1}v", "K\u{1}v\u{1}w", "K\u{1}v\u{2}K\u{1}w", "K\u{1}\u{2}J\u{1}v", "DELAY\u{1}3\u{2}K\u{1}v", "K",
        ]
        var rng = SplitMix64(seed: 78)
        var inputs = cases
        let pieces = ["K", "J", "WAIT", "CLUSTER", "DELAY", "v", "é", "\u{1}", "\u{2}"]
        for _ in 0..<5_000 { inputs.append((0..<Int.random(in: 0...12, using: &rng)).map { _ in pieces[Int.random(in: 0..<pieces.count, using: &rng)] }.joined()) }
        var taken = 0
        for text in inputs {
            for cluster in ["DefaultCluster", "", "bad\u{1}name"] {
                var props = try Array(text.utf8).withUnsafeBytes { try MessageProperties.decode($0) }
                props["CLUSTER"] = cluster
                props["WAIT"] = nil
                let general = try? props.encoded()
                guard let fast = MessageProperties.rewritten(text, setting: "CLUSTER", to: cluster, removing: "WAIT", unlessPresent: "DELAY") else { continue }
                taken += 1
                #expect(fast == general, "\(Array(text.utf8)) with CLUSTER \(cluster.debugDescription)")
                #expect(props["DELAY"] == nil, "a delayed message takes the general path")
            }
        }
        #expect(taken > 1_000, "the rewrite takes the common forms")
        #expect(MessageProperties.rewritten("UNIQ_KEY\u{1}7F\u{2}WAIT\u{1}true\u{2}TAGS\u{1}a", setting: "CLUSTER", to: "C", removing: "WAIT", unlessPresent: "DELAY")
                == Array("UNIQ_KEY\u{1}7F\u{2}TAGS\u{1}a\u{2}CLUSTER\u{1}C".utf8))
        // Go and C++ clients end with a 0x02: still the fast path, the separator dropped as decoding does.
        #expect(MessageProperties.rewritten("TAGS\u{1}a\u{2}", setting: "CLUSTER", to: "C", removing: "WAIT", unlessPresent: "DELAY")
                == Array("TAGS\u{1}a\u{2}CLUSTER\u{1}C".utf8))
    }

    /// Looking one property up in place answers what decoding them all would: Java's rules for
    /// repeated names, empty values, values holding 0x01, names that are prefixes of others.
    @Test func onePropertyLooksUpAsTheDecodeAnswers() throws {
        let cases = [
            "\u{2}\u{2}X\u{1}\u{2}noseparator\u{2}\u{1}v\u{2}K\u{1}v\u{1}w\u{2}K\u{1}z",
            "K\u{1}v\u{1}w\u{2}KK\u{1}1\u{2}K\u{1}\u{2}",
            "TAGS\u{1}a\u{2}TAGSX\u{1}b\u{2}UNIQ_KEY\u{1}7F00\u{2}",
            "", "K", "K\u{1}", "\u{1}K",
        ]
        var rng = SplitMix64(seed: 77)
        var inputs = cases.map { Array($0.utf8) }
        let alphabet: [UInt8] = [0x01, 0x02, UInt8(ascii: "K"), UInt8(ascii: "v"), UInt8(ascii: "T"), UInt8(ascii: "X")]
        for _ in 0..<2_000 { inputs.append((0..<Int.random(in: 0...24, using: &rng)).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &rng)] }) }
        for raw in inputs {
            let all = try raw.withUnsafeBytes { try MessageProperties.decode($0) }
            for name in ["K", "KK", "X", "TAGS", "TAGSX", "UNIQ_KEY", "T", "v"] {
                let one = raw.withUnsafeBytes { MessageProperties.value(of: name, in: $0) }
                #expect(one == all[name], "\(name) in \(raw)")
            }
        }
    }

    @Test func truncatedRecordsThrowAndRandomBytesNeverTrap() throws {
        let bytes = try guideMessage().encoded()
        for n in 0..<bytes.count {
            let prefix = Array(bytes[0..<n])
            #expect(throws: LogFormatError.self) { try prefix.withUnsafeBytes { try MessageRecord.decode($0) } }
        }
        var rng = SplitMix64(seed: 5)
        for _ in 0..<20_000 {
            var random = bytes
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                random[Int.random(in: 0..<random.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            _ = random.withUnsafeBytes { try? MessageRecord.decode($0) }
            let noise = (0..<Int.random(in: 0...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = noise.withUnsafeBytes { try? MessageRecord.decode($0) }
        }
    }

    @Test func bodyCRCMismatchIsDetected() throws {
        var bytes = try guideMessage().encoded()
        bytes[88] ^= 0x01  // first body byte
        #expect(throws: LogFormatError.self) { try bytes.withUnsafeBytes { try MessageRecord.decode($0) } }
        _ = try bytes.withUnsafeBytes { try MessageRecord.decode($0, verifyBodyCRC: false) }
    }

    @Test func propertiesFollowJavasRules() throws {
        let raw: [UInt8] = Array("A\u{1}1\u{2}B\u{1}2\u{2}".utf8)  // Go/C++ trailing separator
        let p = try raw.withUnsafeBytes { try MessageProperties.decode($0) }
        #expect(p.pairs.map(\.name) == ["A", "B"])
        let odd: [UInt8] = Array("\u{2}\u{2}X\u{1}\u{2}noseparator\u{2}\u{1}v\u{2}K\u{1}v\u{1}w\u{2}K\u{1}z".utf8)
        let q = try odd.withUnsafeBytes { try MessageProperties.decode($0) }
        #expect(q.pairs.count == 1)
        #expect(q["K"] == "z")  // repeated name: last value wins
        #expect(try MessageProperties([("A", "1"), ("B", "2")]).encoded() == Array("A\u{1}1\u{2}B\u{1}2".utf8))  // no trailing separator
        #expect(throws: LogFormatError.self) { try MessageProperties([("A", "x\u{2}y")]).encoded() }
        let invalid: [UInt8] = [0x41, 0x01, 0xFF, 0xFE]
        #expect(throws: LogFormatError.self) { try invalid.withUnsafeBytes { try MessageProperties.decode($0) } }
    }

    @Test func oversizedTopicAndPropertiesAreRejected() {
        var m = guideMessage()
        m.topic = String(repeating: "t", count: 128)
        #expect(throws: LogFormatError.self) { try m.encoded() }
        m.topic = "T"
        m.properties = MessageProperties([("big", String(repeating: "x", count: 40_000))])
        #expect(throws: LogFormatError.self) { try m.encoded() }
    }
}
