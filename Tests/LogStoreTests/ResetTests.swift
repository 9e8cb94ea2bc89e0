import Foundation
import LogFormat
import Testing

@testable import LogStore
import TestSupport

/// The log's base (what precedes its first entry) and `reset(to:)`, which a Raft follower behind the
/// leader's retention start uses to continue the leader's log byte for byte.
@Suite(.ownThreads) struct ResetTests {
    /// A store with `count` entries of growing terms (`term = 1 + i / 25`).
    func filled(_ dir: String, count: Int, bodyByte: UInt8 = 7) async throws -> LogStore {
        let store = try LogStore.open(smallOptions(dir))
        for i in 0..<count {
            _ = try await store.append([EntryToAppend(term: Term(UInt64(1 + i / 25)), body: [UInt8](repeating: bodyByte, count: 200))])
        }
        return store
    }

    @Test func aFreshStoresBaseIsTheEmptyPrefix() throws {
        let tmp = TempDirectory()
        let store = try LogStore.open(smallOptions(tmp.path + "/s"))
        #expect(store.base == LogBase(nextIndex: LogIndex(0), position: LogPosition(0), lastTerm: Term(0), lastChainCRC: 0))
        try store.close()
    }

    @Test func deletingAPrefixRecordsTheBaseAndItSurvivesAReopen() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        let store = try await filled(dir, count: 120)
        let before = try store.read(from: LogIndex(0), maxBytes: 1 << 20)
        #expect(try store.deletePrefix(before: LogIndex(60)) > 0)
        let first = store.firstIndex
        #expect(first > LogIndex(0) && first <= LogIndex(60))
        let previous = before[Int(first.rawValue) - 1]
        let expected = LogBase(nextIndex: first, position: before[Int(first.rawValue)].position, lastTerm: previous.term, lastChainCRC: previous.header.chainCRC)
        #expect(store.base == expected)
        try store.close()
        let reopened = try LogStore.open(smallOptions(dir))
        #expect(reopened.firstIndex == first)
        #expect(reopened.base == expected)
        try reopened.close()
    }

    @Test func aResetStoreContinuesTheOtherLogByteForByte() async throws {
        let tmp = TempDirectory()
        let leader = try await filled(tmp.path + "/leader", count: 150)
        _ = try leader.deletePrefix(before: LogIndex(90))
        let base = try #require(leader.base)
        // A follower that fell behind with a log of its own (other bodies, so other CRCs).
        let follower = try await filled(tmp.path + "/follower", count: 30, bodyByte: 9)
        try follower.reset(to: base)
        #expect(follower.firstIndex == base.nextIndex)
        #expect(follower.lastIndex == nil)
        #expect(follower.base == base)
        #expect(follower.writePosition == base.position)

        // Copy the leader's entries: they land at the same positions with the same chain CRCs.
        let entries = try leader.read(from: base.nextIndex, maxBytes: 1 << 20)
        _ = try await follower.append(entries.map { EntryToAppend(kind: $0.kind, term: $0.term, body: $0.body) }, expectingFirstIndex: base.nextIndex)
        let copied = try follower.read(from: base.nextIndex, maxBytes: 1 << 20)
        #expect(copied.map(\.header) == entries.map(\.header))
        try follower.close()

        // Reopened, the follower's store is the leader's suffix, verified by recovery.
        let reopened = try LogStore.open(smallOptions(tmp.path + "/follower"))
        #expect(reopened.firstIndex == base.nextIndex)
        #expect(reopened.lastIndex == leader.lastIndex)
        #expect(reopened.base == base)
        #expect(reopened.recoveryReport.cut == nil)
        #expect(try reopened.read(from: base.nextIndex, maxBytes: 1 << 20).map(\.header) == entries.map(\.header))
        try reopened.close()
        try leader.close()
    }

    @Test func anEmptyResetStoreReopensAtItsBase() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        let store = try await filled(dir, count: 10)
        let base = LogBase(nextIndex: LogIndex(1_000), position: LogPosition(40_960), lastTerm: Term(4), lastChainCRC: 0xDEAD_BEEF)
        try store.reset(to: base)
        try store.close()
        let reopened = try LogStore.open(smallOptions(dir))
        #expect(reopened.firstIndex == LogIndex(1_000))
        #expect(reopened.lastIndex == nil)
        #expect(reopened.base == base)
        #expect(reopened.lastTerm == Term(4))
        let r = try await reopened.append([EntryToAppend(term: Term(5), body: [1, 2, 3])])
        #expect(r.firstIndex == LogIndex(1_000))
        #expect(r.positions.first == LogPosition(40_960))
        try reopened.close()
    }
    @Test func aCrashWhileASegmentIsDeletedLeavesABaseForEitherOutcome() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        let store = try await filled(dir, count: 200)
        _ = try store.deletePrefix(before: LogIndex(40))
        let first = try #require(store.base)
        let crashed = tmp.snapshot(dir, to: "crashed")   // the log starts at first.nextIndex
        _ = try store.deletePrefix(before: LogIndex(120))
        let second = try #require(store.base)
        #expect(second.nextIndex > first.nextIndex)
        try store.close()
        // The second deletion wrote both bases, then the crash kept its victim: the old one is found.
        try FileManager.default.removeItem(atPath: crashed + "/base")
        _ = FileManager.default.createFile(atPath: crashed + "/base", contents: Data(CheckpointFile.encode(second.point) + CheckpointFile.encode(first.point)))
        let reopened = try LogStore.open(smallOptions(crashed))
        #expect(reopened.firstIndex == first.nextIndex)
        #expect(reopened.base == first)
        try reopened.close()
    }
}
