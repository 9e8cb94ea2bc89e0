import Foundation
import LogFormat
import Logging
import NIOPosix
import Remoting
import Testing
@testable import Client
import TestSupport

@Suite(.ownThreads) struct ClientTests {
    @Test func uniqueKeysFollowJavasLayout() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let remoting = RemotingClient(group: group, logger: Logger(label: "test"))
        let producer = Producer(nameServers: [], remoting: remoting, logger: Logger(label: "test"))
        let a = producer.nextUniqueKey(), b = producer.nextUniqueKey()
        #expect(a.count == 32 && b.count == 32 && a != b && a.hasPrefix("7F000001"))
        #expect(a.allSatisfy { "0123456789ABCDEF".contains($0) })
        // Hex digits 20-28: milliseconds since the start of this month (what Java's tools read back).
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone.current
        let monthStart = calendar.date(from: calendar.dateComponents([.year, .month], from: Date()))!
        let ms = try #require(UInt32(a.dropFirst(20).prefix(8), radix: 16))
        #expect(abs(Double(ms) / 1000 - Date().timeIntervalSince(monthStart)) < 60)
        #expect(UInt32(b.suffix(4), radix: 16)! == UInt32(a.suffix(4), radix: 16)! + 1, "the counter")
        await remoting.close()
        try await group.shutdownGracefully()
    }

    @Test func bodiesSurviveDeflateAndInflate() {
        let body = Array(String(repeating: "RaftMQ compresses what Java compresses. ", count: 300).utf8)
        let packed = Zlib.deflate(body)!
        #expect(packed.count < body.count / 5)
        #expect(Zlib.inflate(packed) == .inflated(body))
        #expect(Zlib.inflate(Array(packed.dropLast(4))) != .inflated(body), "a cut stream is not a message")
    }

    @Test func routesParseWithQuotedNumericKeys() throws {
        let body = #"{"brokerDatas":[{"brokerAddrs":{"0":"127.0.0.1:30911","2":"127.0.0.2:30911"},"brokerName":"RaftNode00","cluster":"RaftCluster"}],"queueDatas":[{"brokerName":"RaftNode00","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":2}]}"#
        let r = try #require(TopicRoute.parse(Array(body.utf8)))
        #expect(r.masterAddress("RaftNode00") == "127.0.0.1:30911" && r.addresses("RaftNode00") == ["127.0.0.1:30911", "127.0.0.2:30911"])
        #expect(r.writeQueues("T").count == 2 && r.readQueues("T").count == 4)
        #expect(TopicRoute.parse(Array("nonsense".utf8)) == nil)
    }

    @Test func aPullBodyDecodesUntilARecordDoesNot() throws {
        func record(_ offset: Int64, _ body: String) throws -> [UInt8] {
            try MessageRecord(queueId: 0, queueOffset: offset, bornTimestamp: 1, bornHost: .v4(address: (127, 0, 0, 1), port: 1), storeTimestamp: 2,
                              storeHost: .v4(address: (127, 0, 0, 1), port: 30911), body: Array(body.utf8), topic: "T",
                              properties: MessageProperties([("TAGS", "A"), ("UNIQ_KEY", "K\(offset)")])).encoded()
        }
        let q = MessageQueue(topic: "T", brokerName: "B", queueId: 0)
        let good = try record(0, "a") + record(1, "b")
        var (messages, complete) = Consumer.decode(good, queue: q)
        #expect(complete && messages.map(\.msgId) == ["K0", "K1"] && messages[1].tags == "A")
        var bad = try record(2, "c")
        bad[88] ^= 0x55  // the body's byte (after 84 bytes of fields and its 4-byte length): its CRC no longer matches
        (messages, complete) = Consumer.decode(good + bad + (try record(3, "d")), queue: q)
        #expect(!complete && messages.count == 2, "stops at the record that does not decode")
    }

    /// A record that does not decode is pulled again, up to five pulls in all, then skipped; a pull
    /// at another offset, or one that decodes whole, starts the count again, and so does the next
    /// bad record after a skip.
    @Test func anUndecodableRecordIsPulledFiveTimesThenSkipped() {
        var u = Consumer.UndecodableRecord()
        #expect((1...4).map { _ in u.failed(at: 7) } == (1...4).map { .pullAgain(pulls: $0) })
        #expect(u.failed(at: 7) == .skip(pulls: 5))
        #expect(u.offset == -1 && u.pulls == 0, "nothing owed after a skip")
        #expect(u.failed(at: 8) == .pullAgain(pulls: 1), "the next offset's own count")
        #expect(u.failed(at: 8) == .pullAgain(pulls: 2))
        // Another offset in between (a pull that got past the bad one's predecessors): its own count.
        #expect(u.failed(at: 9) == .pullAgain(pulls: 1))
        #expect(u.failed(at: 8) == .pullAgain(pulls: 1))
        // A pull that decodes whole (the record was finished after all) forgets the count.
        u.reset()
        #expect((1...4).map { _ in u.failed(at: 8) } == (1...4).map { .pullAgain(pulls: $0) })
        #expect(u.failed(at: 8) == .skip(pulls: 5))
        #expect(Consumer.UndecodableRecord.tries == 5)
    }
}
