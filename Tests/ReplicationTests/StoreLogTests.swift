import Foundation
import LogStore
import RaftCore
import Testing
@testable import Replication
import TestSupport

@Suite(.ownThreads) struct StoreLogTests {
    /// The term runs found by bisection at open equal the terms written, for runs of every length
    /// (1 entry, many entries) at the start, in the middle and at the end, after a reopen; also when
    /// index records lie about terms (the bisection reads them first and must check what it found).
    @Test(arguments: [false, true]) func termsAreFoundByBisectionAfterAReopen(lyingIndexRecords: Bool) throws {
        let dir = NSTemporaryDirectory() + "raftmq-storelog-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let options = LogStoreOptions(directory: dir, segmentBytes: 1 << 16, indexFileBytes: 32 * 4096, flushMode: .rocketMQAsyncDefault, entryBodyBytesMax: 4 << 10)
        var rng = SystemRandomNumberGenerator()
        var terms: [UInt64] = []
        var term: UInt64 = 1
        for _ in 0..<2_000 {
            if Int.random(in: 0..<10, using: &rng) == 0 { term += UInt64.random(in: 1...3, using: &rng) }
            terms.append(term)
        }
        terms[1] = terms[0] + 1  // a run of one entry at the start
        for k in 2..<terms.count { terms[k] = max(terms[k], terms[1]) }
        terms[terms.count - 1] = terms[terms.count - 2] + 1  // and one at the end
        do {
            let store = try LogStore.open(options)
            let log = try StoreLog(store: store, storeIndexOfEmptyLog: 0)
            var entries: [RaftCore.Entry] = []
            for (k, t) in terms.enumerated() { entries.append(Entry(term: Term(t), index: LogIndex(UInt64(k + 1)), data: Array("e\(k)".utf8))) }
            for chunk in stride(from: 0, to: entries.count, by: 100) {
                _ = try log.write(truncateAfter: nil, entries: Array(entries[chunk..<min(entries.count, chunk + 100)]))
            }
            try store.close()
        }
        if lyingIndexRecords {
            // Wrong terms in the records of a run's first entry, of the entry before a run and of
            // entries inside runs (the term field is the record's last 8 bytes).
            let starts = (1..<terms.count).filter { terms[$0] != terms[$0 - 1] }
            for k in [starts[0], starts[3] - 1, starts[5], 700, 1_500, terms.count - 1] {
                let offset = UInt64(k) * 32
                let capacity: UInt64 = 32 * 4096
                let file = dir + "/index/" + String(format: "%020llu", offset - offset % capacity)
                let handle = try #require(FileHandle(forUpdatingAtPath: file), "no index file \(file)")
                try handle.seek(toOffset: offset % capacity + 24)
                let lie = terms[k] + 1 + UInt64(k % 3)
                try handle.write(contentsOf: withUnsafeBytes(of: lie.bigEndian) { Data($0) })
                try handle.close()
            }
        }
        let store = try LogStore.open(options)
        defer { try? store.close() }
        let log = try StoreLog(store: store, storeIndexOfEmptyLog: 0)
        #expect(log.lastIndex == LogIndex(UInt64(terms.count)))
        for (k, t) in terms.enumerated() {
            let got = log.term(at: LogIndex(UInt64(k + 1)))
            if got != Term(t) { Issue.record("index \(k + 1): term \(String(describing: got)), written \(t)"); break }
        }
        #expect(log.term(at: LogIndex(UInt64(terms.count + 1))) == nil)
    }

    /// Reads served from the entries written last agree with the store, whatever came between:
    /// truncations (a Raft conflict), writes that do not follow on, ranges that start before the
    /// cached part, byte limits; a reopened log (nothing cached) reads the same.
    @Test func recentEntriesAnswerAsTheStoreDoes() throws {
        let dir = NSTemporaryDirectory() + "raftmq-storelog-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let options = LogStoreOptions(directory: dir, segmentBytes: 1 << 20, indexFileBytes: 32 * 4096, flushMode: .rocketMQAsyncDefault, entryBodyBytesMax: 64 << 10)
        func entry(_ i: UInt64, _ t: UInt64, _ tag: String, _ size: Int = 16) -> RaftCore.Entry {
            Entry(term: Term(t), index: LogIndex(i), data: Array("\(tag)-\(i)-".utf8) + [UInt8](repeating: UInt8(i % 251), count: size))
        }
        var expected: [RaftCore.Entry] = []
        let store = try LogStore.open(options)
        let log = try StoreLog(store: store, storeIndexOfEmptyLog: 0)
        // Larger than the cache's byte limit in all, so its start moves on.
        for chunk in 0..<12 {
            let batch = (1...100).map { entry(UInt64(chunk * 100 + $0), 1, "a", 4_000) }
            _ = try log.write(truncateAfter: nil, entries: batch)
            expected += batch
        }
        // A conflict: the tail from 1,150 on is replaced by a later term's entries.
        _ = try log.write(truncateAfter: LogIndex(1_149), entries: (1_150...1_260).map { entry(UInt64($0), 2, "b") })
        expected = Array(expected[0..<1_149]) + (1_150...1_260).map { entry(UInt64($0), 2, "b") }
        func check(_ log: StoreLog, _ what: String) {
            for (lo, hi, maxBytes) in [(1, 5, 1 << 20), (100, 1_260, 1 << 30), (1_100, 1_200, 1 << 30), (1_149, 1_151, 1 << 30), (1_250, 1_260, 100), (1_260, 1_260, 1)] {
                let got = log.entries(in: LogIndex(UInt64(lo))...LogIndex(UInt64(hi)), maxBytes: maxBytes)
                let want = Array(expected[(lo - 1)..<hi])
                #expect(!got.isEmpty, "\(what): \(lo)...\(hi) read nothing")
                #expect(got.count <= want.count && zip(got, want).allSatisfy { $0.index == $1.index && $0.term == $1.term && $0.data == $1.data },
                        "\(what): \(lo)...\(hi) differs from what was written")
                if maxBytes >= 1 << 30 { #expect(got.count == want.count, "\(what): \(lo)...\(hi) is short: \(got.count) of \(want.count)") }
            }
        }
        check(log, "after the writes")
        try store.close()
        let reopened = try LogStore.open(options)
        defer { try? reopened.close() }
        check(try StoreLog(store: reopened, storeIndexOfEmptyLog: 0), "after a reopen")
    }

    /// The entries kept in memory after a write hold at most their byte limit (and one entry) of
    /// bodies: those dropped from the front are released at once, not when their slots are
    /// compacted away. Entries of many messages (a turn's sends in one entry, 10-100 KiB) held about
    /// 90 MB on every member until they were.
    @Test func entriesDroppedFromMemoryAreReleasedAtOnce() throws {
        let dir = NSTemporaryDirectory() + "raftmq-storelog-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let options = LogStoreOptions(directory: dir, segmentBytes: 16 << 20, indexFileBytes: 32 * 4096, flushMode: .rocketMQAsyncDefault, entryBodyBytesMax: 64 << 10)
        let store = try LogStore.open(options)
        defer { try? store.close() }
        let log = try StoreLog(store: store, storeIndexOfEmptyLog: 0)
        let size = 8 << 10
        var index: UInt64 = 0
        for _ in 0..<40 {
            let batch = (0..<50).map { _ in
                index += 1
                return Entry(term: Term(1), index: LogIndex(index), data: [UInt8](repeating: UInt8(index % 251), count: size))
            }
            _ = try log.write(truncateAfter: nil, entries: batch)
            #expect(log.recentRetainedBytes <= StoreLog.recentMaxBytes + size, "after \(index) entries: \(log.recentRetainedBytes) bytes held")
        }
        // The newest are still served from memory and agree with what was written.
        let got = log.entries(in: LogIndex(index - 9)...LogIndex(index), maxBytes: 1 << 20)
        #expect(got.count == 10 && got.allSatisfy { $0.data == [UInt8](repeating: UInt8($0.index.rawValue % 251), count: size) })
    }
}
