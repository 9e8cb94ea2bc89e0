import Foundation
import LogFormat
import Testing
import TestSupport

@testable import LogStore

/// A disk that fills up at any write: for each write the workload makes, a run in which that write
/// and every later one fail with ENOSPC (StoreFaults, scoped to the run's directory). Whatever the
/// store answered as durable must survive a reopen, after a clean close and after a crash, and the
/// reopened store must read its whole log and take more appends across segment rolls.
@Suite(.ownThreads) struct DiskFullTests {
    /// Faults armed on nested directories (a node's, its commitlog's, a segment's): an operation is
    /// counted by the longest prefix it matches, whatever order they were armed in.
    @Test(arguments: [false, true]) func theMostSpecificArmedPrefixCountsAnOperation(reversed: Bool) {
        let root = "/faults-\(UUID().uuidString)"
        let levels = [root + "/", root + "/n0/", root + "/n0/commitlog/", root + "/n0/commitlog/00/", root + "/n0/commitlog/00/seg/"]
        let faults = ScopedCountdown()
        for (k, prefix) in (reversed ? Array(levels.enumerated().reversed()) : Array(levels.enumerated())) {
            faults.arm(prefix, after: 10 * k)  // the deeper, the more writes succeed first
        }
        for (k, prefix) in levels.enumerated() {
            let path = prefix + "file"
            let successes = (0..<60).prefix { _ in !faults.fails(path) }.count
            #expect(successes == 10 * k, "\(path): \(successes) succeeded before the first failure")
        }
    }

    /// The Raft driver's pattern: a few batches written back to back (so SYNC_FLUSH has some waiting
    /// in its write-behind buffer while the next one rolls a segment), then one wait for all of them.
    struct Workload {
        var rng: SplitMix64
        var term = Term(1)
        /// Every body ever handed to the store at each index (a failed write's index is reused).
        var attempted: [UInt64: [[UInt8]]] = [:]
        /// Entries the store answered as durable.
        var acked: [UInt64: [UInt8]] = [:]

        init(seed: UInt64) { rng = SplitMix64(seed: seed) }

        /// Writes `groups` rounds; stops at the first error and returns it.
        mutating func run(_ store: LogStore, groups: Int) async -> (any Error)? {
            for g in 0..<groups {
                if g % 7 == 6 { term = Term(term.rawValue + 1) }
                var written: [(LogIndex, [UInt8])] = []
                var end: LogPosition?
                do {
                    for _ in 0..<Int.random(in: 1...3, using: &rng) {
                        let bodies = (0..<Int.random(in: 1...3, using: &rng)).map { _ in randomBody(&rng, 60...400) }
                        let next = store.lastIndex.map { $0.rawValue + 1 } ?? store.firstIndex.rawValue
                        for (k, b) in bodies.enumerated() { attempted[next + UInt64(k), default: []].append(b) }
                        let r = try store.write(bodies.map { EntryToAppend(term: term, body: $0) })
                        #expect(r.firstIndex.rawValue == next)
                        for (k, b) in bodies.enumerated() { written.append((LogIndex(next + UInt64(k)), b)) }
                        end = r.endPosition
                    }
                    if let end { try await store.waitUntilDurable(end) }
                } catch {
                    return error
                }
                for (i, b) in written { acked[i.rawValue] = b }
            }
            return nil
        }

        /// The reopened log: contiguous, every acknowledged entry in place, nothing never written.
        func check(_ entries: [LogEntry], _ what: String) {
            for (a, b) in zip(entries, entries.dropFirst()) where b.index.rawValue != a.index.rawValue + 1 {
                Issue.record("\(what): index \(b.index) follows \(a.index)")
                return
            }
            let byIndex = Dictionary(entries.map { ($0.index.rawValue, $0.body) }, uniquingKeysWith: { a, _ in a })
            for (i, body) in acked.sorted(by: { $0.key < $1.key }) where byIndex[i] != body {
                Issue.record("\(what): acknowledged entry \(i) is \(byIndex[i] == nil ? "missing" : "different")")
                return
            }
            for e in entries where !(attempted[e.index.rawValue] ?? []).contains(e.body) {
                Issue.record("\(what): entry \(e.index) holds a body never written there")
                return
            }
        }
    }

    /// Reopens `directory`, checks the log, then appends across more rolls and checks again.
    func reopenAndContinue(_ directory: String, _ w: inout Workload, _ what: String) async throws {
        let store = try LogStore.open(smallOptions(directory, flush: .sync, segmentBytes: 4096))
        w.check(try readAll(store), what)
        let more = await w.run(store, groups: 12)
        #expect(more == nil, "\(what): appending after the reopen failed: \(String(describing: more))")
        w.check(try readAll(store), what + ", after more appends")
        try store.close()
        let again = try LogStore.open(smallOptions(directory, flush: .sync, segmentBytes: 4096))
        w.check(try readAll(again), what + ", reopened again")
        try again.close()
    }

    @Test(arguments: [FlushMode.sync, manualFlush])
    func aDiskThatFillsUpAtAnyWriteLosesNothingAcknowledged(flush: FlushMode) async throws {
        var sawFault = false
        for failAt in 0..<400 {
            let tmp = TempDirectory("diskfull-\(failAt)")
            let dir = tmp.path + "/store"
            let store = try LogStore.open(smallOptions(dir, flush: flush, segmentBytes: 4096))
            StoreFaults.fillDisk(under: dir + "/", afterWrites: failAt)
            var w = Workload(seed: 0xD15C + UInt64(failAt))
            let error = await w.run(store, groups: 30)
            guard let error else {
                // The workload made fewer than `failAt` writes: every position has been covered.
                StoreFaults.clearDiskFull(under: dir + "/")
                try store.close()
                #expect(sawFault && failAt > 20, "the workload made only \(failAt) writes")
                return
            }
            sawFault = true
            let what = "ENOSPC at write \(failAt) (\(flush))"
            guard case StorageError.io(_, _, let code) = error as? StorageError ?? .closed, code == ENOSPC else {
                // A store that stopped on the full disk says so on every later call.
                guard case .failed = error as? StorageError else {
                    Issue.record("\(what): unexpected error \(error)")
                    StoreFaults.clearDiskFull(under: dir + "/")
                    return
                }
                StoreFaults.clearDiskFull(under: dir + "/")
                try? store.close()
                try await reopenAndContinue(dir, &w, what + ", stopped")
                continue
            }
            // Still full: refused again, no crash.
            #expect(await w.run(store, groups: 1) != nil, "\(what): a write succeeded on a full disk")
            // Space comes back: a store that stayed usable takes writes again and serves them.
            StoreFaults.clearDiskFull(under: dir + "/")
            if await w.run(store, groups: 8) == nil {
                w.check(try readAll(store), what + ", space back")
                // The index was kept whole: no read had to find an entry by scanning.
                #expect(store.statistics.indexRecordsRepaired == 0, "\(what): index records lost")
            }
            let crashed = tmp.snapshot(dir, to: "crashed")
            var wc = w
            try? store.close()
            try await reopenAndContinue(dir, &w, what + ", closed")
            try await reopenAndContinue(crashed, &wc, what + ", crashed")
        }
        Issue.record("the workload still writes after 400 writes: raise the bound")
    }
}
