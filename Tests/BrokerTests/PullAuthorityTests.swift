import Foundation
import LogFormat
import Logging
import NIOCore
import NIOEmbedded
import RaftCore
import Remoting
import Synchronization
import Testing
@testable import Broker
import TestSupport

/// A writer whose leadership the test decides: whether it leads with its log dispatched, and what
/// a ReadIndex round answers (`confirm`, which may also dispatch more, as a leader catching up does).
final class ScriptedWriter: BrokerWriter, @unchecked Sendable {
    let caughtUp: Bool
    let confirm: @Sendable () -> Bool
    let confirmations = Atomic<Int>(0)
    init(caughtUp: Bool, confirm: @escaping @Sendable () -> Bool) {
        self.caughtUp = caughtUp
        self.confirm = confirm
    }
    var isLeader: Bool { caughtUp }
    var leader: NodeID? { caughtUp ? NodeID(0) : nil }
    var isCaughtUpLeader: Bool { caughtUp }
    func confirmLeadership(timeout: Duration) async -> Bool {
        confirmations.add(1, ordering: .relaxed)
        return confirm()
    }
    var refusal: WriteError { .notLeader(leader: nil) }
    var keepsLocalOffsets: Bool { false }
    var maxEntryBytes: Int { 1 << 20 }
    func append(queue key: QueueKey?, count: Int, timeout: Duration, kind: WritePath.EntryKind,
                body: (Int64, [QueueKey: Int64]) -> [UInt8]) async throws(WriteError) -> Appended { throw .notReady }
    func appendSnapshot(timeout: Duration) async throws(WriteError) { throw .notReady }
}

/// PULL_OFFSET_MOVED rewrites where a consumer reads; only the group's authority may send it. The
/// hour-long chaos run saw a consumer sent back to offset 0 of a queue it had read to 273,506 (and
/// commit that) by a member that answered as a caught-up leader with a shorter queue.
@Suite(.ownThreads) struct PullAuthorityTests {
    static func service(_ f: StoreFixture, _ writer: ScriptedWriter) -> BrokerService {
        let options = BrokerService.Options(clusterName: "C", brokerName: "B", storeHost: "127.0.0.1:30911", maxMessageSize: 1 << 20,
                                            autoCreateTopicEnable: true, defaultTopicQueueNums: 4, clientAddresses: [:])
        return BrokerService(options: options, store: f.store, writes: writer,
                             forwarder: RemotingClient(group: EmbeddedEventLoop(), logger: Logger(label: "test")), logger: Logger(label: "test"))
    }

    static func pull(_ s: BrokerService, offset: Int64) async throws -> RemotingCommand {
        let request = RemotingCommand.request(code: RequestCode.pullMessage, opaque: 1, extFields: [
            "consumerGroup": "g", "topic": "T", "queueId": "0", "queueOffset": "\(offset)", "maxMsgNums": "32", "sysFlag": "4",
            "subscription": "*", "commitOffset": "0", "suspendTimeoutMillis": "0"])
        return try #require(await s.pull(request, RemotingConnection(channel: EmbeddedChannel())))
    }

    /// Three messages in queue T@0, dispatched.
    static func fixture() throws -> StoreFixture {
        let f = try StoreFixture()
        let t = TopicConfig(topicName: "T", readQueueNums: 4, writeQueueNums: 4, perm: 6)
        let i = try f.append([MetadataChange.topicUpsert(t).encoded()] + (0..<3).map { try record("T", offset: Int64($0)) })
        try f.store.dispatch(upTo: i.last!)
        return f
    }

    @Test func aLeaderThatCannotConfirmItLeadsNeverMovesAConsumer() async throws {
        let f = try Self.fixture()
        // Deposed without knowing it: its ReadIndex round finds no majority.
        let stale = ScriptedWriter(caughtUp: true) { false }
        let s = Self.service(f, stale)
        let beyond = try await Self.pull(s, offset: 10)
        #expect(beyond.code == ResponseCode.pullRetryImmediately && beyond.extFields["nextBeginOffset"] == "10",
                "a stale leader answered \(beyond.code) next \(beyond.extFields["nextBeginOffset"] ?? "-")")
        #expect(stale.confirmations.load(ordering: .relaxed) == 1)
        // A follower (not the authority) keeps the offset without asking anyone.
        let follower = ScriptedWriter(caughtUp: false) { Issue.record("a follower ran ReadIndex"); return true }
        let r = try await Self.pull(Self.service(f, follower), offset: 10)
        #expect(r.code == ResponseCode.pullRetryImmediately && r.extFields["nextBeginOffset"] == "10")
        // What is there is served without any round (found, or not yet there at the end).
        let found = try await Self.pull(s, offset: 1)
        #expect(found.code == ResponseCode.success && found.extFields["nextBeginOffset"] == "3")
        let end = try await Self.pull(s, offset: 3)
        #expect(end.code == ResponseCode.pullNotFound && end.extFields["nextBeginOffset"] == "3")
        #expect(stale.confirmations.load(ordering: .relaxed) == 1)
    }

    @Test func aConfirmedLeaderCorrectsOnlyWhatItsQueueStillLacksAfterTheRound() async throws {
        let f = try Self.fixture()
        // Confirmed: past the end of a queue that starts at 0, RocketMQ's rule sends the consumer to 0.
        let leader = ScriptedWriter(caughtUp: true) { true }
        let moved = try await Self.pull(Self.service(f, leader), offset: 10)
        #expect(moved.code == ResponseCode.pullOffsetMoved && moved.extFields["nextBeginOffset"] == "0")
        // A leader whose dispatch reaches the offset during the round serves the messages instead.
        let more = try (3..<12).map { try record("T", offset: Int64($0)) }
        let store = f.store, log = f
        let catchingUp = ScriptedWriter(caughtUp: true) {
            guard let i = try? log.append(more), (try? store.dispatch(upTo: i.last!)) != nil else { return false }
            return true
        }
        let served = try await Self.pull(Self.service(f, catchingUp), offset: 10)
        #expect(served.code == ResponseCode.success && served.extFields["nextBeginOffset"] == "12",
                "answered \(served.code) next \(served.extFields["nextBeginOffset"] ?? "-")")
    }
}
