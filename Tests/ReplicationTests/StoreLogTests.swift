import Foundation
import LogStore
import RaftCore
import Testing
@testable import Replication

@Suite struct StoreLogTests {
    /// The term runs found by bisection at open equal the terms written, for runs of every length
    /// (1 entry, many entries) at the start, in the middle and at the end, after a reopen.
    @Test func termsAreFoundByBisectionAfterAReopen() throws {
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
}
