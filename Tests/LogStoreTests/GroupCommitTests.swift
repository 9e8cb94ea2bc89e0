import Foundation
import LogFormat
import Synchronization
import Testing

@testable import LogStore
import TestSupport

@Suite(.ownThreads) struct GroupCommitTests {
    @Test func concurrentSyncAppendsShareFsyncsAndAllBecomeDurable() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        let store = try LogStore.open(smallOptions(dir, segmentBytes: 1 << 20))
        let tasks = 64
        let perTask = 40
        let results = try await withThrowingTaskGroup(of: [(Int, Int, AppendResult)].self) { group in
            for t in 0..<tasks {
                group.addTask {
                    var mine: [(Int, Int, AppendResult)] = []
                    for i in 0..<perTask {
                        let body = Array("task \(t) entry \(i)".utf8)
                        let r = try await store.append([EntryToAppend(term: Term(1), body: body)])
                        // Acknowledged means durable.
                        #expect(store.durablePosition >= r.endPosition)
                        mine.append((t, i, r))
                    }
                    return mine
                }
            }
            var all: [(Int, Int, AppendResult)] = []
            for try await batch in group { all += batch }
            return all
        }
        #expect(results.count == tasks * perTask)
        #expect(Set(results.map(\.2.firstIndex)).count == tasks * perTask)
        let stats = store.statistics
        #expect(stats.appendCalls == tasks * perTask)
        #expect(stats.dataSyncs < stats.appendCalls / 2, "group commit did not group: \(stats.dataSyncs) syncs for \(stats.appendCalls) appends")
        try store.close()
        let reopened = try LogStore.open(smallOptions(dir, segmentBytes: 1 << 20))
        let entries = try readAll(reopened)
        #expect(entries.count == tasks * perTask)
        for (t, i, r) in results {
            #expect(entries[Int(r.firstIndex.rawValue)].body == Array("task \(t) entry \(i)".utf8))
        }
        try reopened.close()
    }

    @Test func asyncFlushReturnsBeforeDurabilityAndFlushesOnItsInterval() async throws {
        let tmp = TempDirectory()
        let store = try LogStore.open(smallOptions(tmp.path, flush: .async(intervalMs: 20, leastBytes: 0, thoroughIntervalMs: 20), segmentBytes: 1 << 20))
        let before = store.statistics.dataSyncs
        let r = try await store.append([EntryToAppend(term: Term(1), body: [UInt8](repeating: 1, count: 500))])
        let deadline = Date().addingTimeInterval(10)
        while store.durablePosition < r.endPosition && Date() < deadline {
            try await Task.sleep(nanoseconds: 5_000_000)
        }
        #expect(store.durablePosition >= r.endPosition, "the interval flush never ran")
        #expect(store.statistics.dataSyncs > before)
        try store.close()
    }

    /// The Raft driver's way (it owns its thread): `write`, then `syncThrough` on the same thread,
    /// with no flusher in between. One sync for what is not yet durable, none for what is; a
    /// `waitUntilDurable` waiter beside it is answered (by it or by the flusher the waiter woke); a
    /// position past the log's end is refused; so is one a closed store never made durable.
    @Test func syncThroughSyncsOnTheCallingThreadOnlyWhatIsNotYetDurable() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        let store = try LogStore.open(smallOptions(dir, segmentBytes: 1 << 20))
        let first = try store.write([EntryToAppend(term: Term(1), body: Array("one".utf8)), EntryToAppend(term: Term(1), body: Array("two".utf8))])
        #expect(store.durablePosition < first.endPosition)
        let before = store.statistics.dataSyncs
        try store.syncThrough(first.endPosition)
        #expect(store.durablePosition >= first.endPosition)
        #expect(store.statistics.dataSyncs == before + 1)
        try store.syncThrough(first.endPosition)
        try store.syncThrough(first.positions[0])
        #expect(store.statistics.dataSyncs == before + 1, "a durable position needs no sync")

        let second = try store.write([EntryToAppend(term: Term(1), body: Array("three".utf8))])
        let waiter = Task { try await store.waitUntilDurable(second.endPosition) }
        try store.syncThrough(second.endPosition)
        try await waiter.value
        #expect(store.durablePosition >= second.endPosition)
        #expect(throws: StorageError.self) { try store.syncThrough(LogPosition(second.endPosition.rawValue + 100)) }

        try store.close()
        try store.syncThrough(second.endPosition)
        #expect(throws: StorageError.closed) { try store.syncThrough(LogPosition(second.endPosition.rawValue + 100)) }
        let reopened = try LogStore.open(smallOptions(dir, segmentBytes: 1 << 20))
        #expect(try readAll(reopened).map { String(decoding: $0.body, as: UTF8.self) } == ["one", "two", "three"])
        try reopened.close()
    }

    /// Under SYNC_FLUSH a written entry waits in the write-behind buffer until a sync hands it to the
    /// kernel, yet the other members may commit it meanwhile and a consumer pull then reads its
    /// record (`readBytes`): the bytes come from the buffer, not the prepared zeros in the file,
    /// also for a range that starts in the file and ends in the buffer. (A pull that read zeros there
    /// made the consumer skip the record as undecodable: found by `mqbench chaos` with a slow disk.)
    @Test func readBytesReadsWhatWaitsInTheWriteBehindBuffer() async throws {
        let tmp = TempDirectory()
        let store = try LogStore.open(smallOptions(tmp.path + "/s", segmentBytes: 1 << 20))
        let a = try store.write([EntryToAppend(term: Term(1), body: Array("synced body".utf8))])
        try store.syncThrough(a.endPosition)
        let b = try store.write([EntryToAppend(term: Term(1), body: Array("buffered body".utf8))])
        #expect(store.fileEndPosition < b.endPosition, "the second entry waits in the buffer")
        let header = UInt64(EntryHeader.byteCount)
        #expect(try store.readBytes(at: b.positions[0].rawValue + header, count: 13) == Array("buffered body".utf8))
        #expect(try store.readBytes(at: a.positions[0].rawValue + header, count: 11) == Array("synced body".utf8))
        // From the first body's last 4 bytes into the second entry's header.
        let spanning = try store.readBytes(at: b.positions[0].rawValue - 4, count: 8)
        #expect(Array(spanning.prefix(4)) == Array("body".utf8))
        let whole = try store.readBytes(at: b.positions[0].rawValue, count: Int(header) + 13)
        #expect(Array(spanning.suffix(4)) == Array(whole.prefix(4)) && whole.prefix(4) != [0, 0, 0, 0], "the header comes from the buffer too")
        #expect(throws: StorageError.self) { try store.readBytes(at: b.endPosition.rawValue, count: 1) }
        try store.syncThrough(b.endPosition)
        #expect(try store.readBytes(at: b.positions[0].rawValue, count: Int(header) + 13) == whole, "the same bytes once in the file")
        try store.close()
    }

    /// A Raft leader's way (`RaftReplicaOptions.deferLeaderSync`): `write`, then `requestSync`, and go
    /// on; the flusher thread syncs and calls back once, with nil, when the bytes are durable. A
    /// position already durable is answered at once on the caller's thread; a closed store answers
    /// `.closed` for what it never made durable.
    @Test func requestSyncCallsBackOnceTheBytesAreDurable() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        let store = try LogStore.open(smallOptions(dir, segmentBytes: 1 << 20))
        let first = try store.write([EntryToAppend(term: Term(1), body: Array("one".utf8)), EntryToAppend(term: Term(1), body: Array("two".utf8))])
        #expect(store.durablePosition < first.endPosition)
        let before = store.statistics.dataSyncs
        let calls = Mutex(0)
        let outcome: StorageError? = await withCheckedContinuation { c in
            store.requestSync(through: first.endPosition) { error in
                // Durable before it is told.
                #expect(store.durablePosition >= first.endPosition)
                calls.withLock { $0 += 1 }
                c.resume(returning: error)
            }
        }
        #expect(outcome == nil)
        #expect(store.statistics.dataSyncs == before + 1)

        let answeredAtOnce = Mutex(false)
        store.requestSync(through: first.positions[1]) { error in answeredAtOnce.withLock { $0 = error == nil } }
        #expect(answeredAtOnce.withLock { $0 }, "a durable position is answered at once")
        #expect(store.statistics.dataSyncs == before + 1)
        #expect(calls.withLock { $0 } == 1)

        try store.close()
        let closed = Mutex<StorageError?>(nil)
        store.requestSync(through: LogPosition(first.endPosition.rawValue + 100)) { error in closed.withLock { $0 = error } }
        #expect(closed.withLock { $0 } == .closed)
        let reopened = try LogStore.open(smallOptions(dir, segmentBytes: 1 << 20))
        #expect(try readAll(reopened).map { String(decoding: $0.body, as: UTF8.self) } == ["one", "two"])
        try reopened.close()
    }

    @Test func waitUntilDurableForcesAFlushInAsyncMode() async throws {
        let tmp = TempDirectory()
        let store = try LogStore.open(smallOptions(tmp.path, flush: manualFlush))
        let r = try await store.append([EntryToAppend(term: Term(1), body: [1, 2, 3])])
        try await store.waitUntilDurable(r.endPosition)
        #expect(store.durablePosition >= r.endPosition)
        try store.close()
    }
}
