import Testing
@testable import Broker
import TestSupport

@Suite(.ownThreads) struct MetadataTests {
    @Test func everyKindSurvivesEncodingAndDecoding() {
        var t = TopicConfig(topicName: "TopicTest", readQueueNums: 4, writeQueueNums: 4, perm: 6)
        t.order = true
        var g = SubscriptionGroupConfig(groupName: "g1")
        g.consumeEnable = false
        g.retryMaxTimes = 3
        for change in [MetadataChange.topicUpsert(t), .topicDelete("TopicTest"), .offsets(["TopicTest@g": [0: 12, 3: 7], "X@h": [1: 0]]),
                       .topicCreate(t), .groupUpsert(g), .groupCreate(g), .groupDelete("g1"),
                       .snapshot(MetadataSnapshot(topics: ["TopicTest": t], offsets: [:], queueEnds: ["TopicTest": [0: 3]], groups: ["g1": g]))] {
            #expect(MetadataChange.decode(change.encoded()) == change)
        }
    }

    @Test func malformedEntriesDecodeToNil() {
        var bytes = MetadataChange.topicDelete("T").encoded()
        bytes[9] = 99  // unknown kind
        #expect(MetadataChange.decode(bytes) == nil)
        #expect(MetadataChange.decode(Array(MetadataChange.topicDelete("T").encoded().dropLast())) == nil)
        var bad = MetadataChange.topicDelete("T").encoded()
        bad[12] = UInt8(ascii: "[")
        #expect(MetadataChange.decode(bad) == nil)
        #expect(MetadataChange.decode([1, 2, 3]) == nil)
    }

    @Test func topicNamesFollowRocketMQsRule() {
        #expect(TopicConfig.validName("TopicTest") && TopicConfig.validName("%RETRY%g-1") && TopicConfig.validName("a|b_c"))
        #expect(!TopicConfig.validName("") && !TopicConfig.validName("bad topic") && !TopicConfig.validName("t.x"))
        #expect(!TopicConfig.validName(String(repeating: "a", count: 128)) && TopicConfig.validName(String(repeating: "a", count: 127)))
    }
}
