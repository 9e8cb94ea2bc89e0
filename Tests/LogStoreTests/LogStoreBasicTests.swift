import Foundation
import LogFormat
import Testing
import TestSupport

@testable import LogStore

@Suite(.ownThreads) struct LogStoreBasicTests {
    @Test func appendsReadsAndRollsSegmentsNamedByStartPosition() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/store"
        var rng = SplitMix64(seed: 1)
        var bodies: [[UInt8]] = []
        do {
            let store = try LogStore.open(smallOptions(dir))
            #expect(store.lastIndex == nil)
            #expect(store.nextIndex == LogIndex(0))
            for i in 0..<60 {
                let body = randomBody(&rng)
                bodies.append(body)
                let r = try await store.append([EntryToAppend(term: Term(1), body: body)])
                #expect(r.firstIndex == LogIndex(UInt64(i)))
                #expect(store.durablePosition >= r.endPosition, "SYNC_FLUSH returned before durable")
            }
            #expect(store.lastIndex == LogIndex(59))
            let entries = try readAll(store)
            #expect(entries.map(\.body) == bodies)
            // Positions are contiguous within a segment, and an entry never spans two segments.
            for (a, b) in zip(entries, entries.dropFirst()) {
                let end = a.position.rawValue + UInt64(a.header.totalByteCount)
                #expect(b.position.rawValue == end || b.position.rawValue % 4096 == 0)
                #expect(b.position.rawValue / 4096 == (b.position.rawValue + UInt64(b.header.totalByteCount) - 1) / 4096)
            }
            try store.close()
        }
        let files = segmentFiles(dir)
        #expect(files.count >= 3)
        for (i, f) in files.enumerated() {
            #expect(f.hasSuffix(String(format: "%020d", i * 4096)))
            if i < files.count - 1 { #expect(fileSize(f) == 4096, "sealed segment keeps its full size") }
        }
        let reopened = try LogStore.open(smallOptions(dir))
        #expect(reopened.recoveryReport.cut == nil)
        #expect(try readAll(reopened).map(\.body) == bodies)
        let r = try await reopened.append([EntryToAppend(term: Term(2), body: [1, 2, 3])])
        #expect(r.firstIndex == LogIndex(60))
        try reopened.close()
    }

    @Test func readRespectsMaxBytesButReturnsAtLeastOneEntry() async throws {
        let tmp = TempDirectory()
        let store = try LogStore.open(smallOptions(tmp.path, segmentBytes: 1 << 20))
        _ = try await store.append((0..<10).map { _ in EntryToAppend(term: Term(1), body: [UInt8](repeating: 7, count: 100)) })
        #expect(try store.read(from: LogIndex(0), maxBytes: 0).count == 1)
        #expect(try store.read(from: LogIndex(0), maxBytes: 148 * 3).count == 3)
        #expect(try store.read(from: LogIndex(8), maxBytes: 1 << 20).count == 2)
        #expect(throws: StorageError.self) { try store.read(from: LogIndex(10), maxBytes: 100) }
        try store.close()
    }

    @Test func patchHookWritesThePhysicalOffsetBeforeChecksums() async throws {
        let tmp = TempDirectory()
        let store = try LogStore.open(smallOptions(tmp.path))
        let message = MessageRecord(
            queueId: 0, bornTimestamp: 1, bornHost: .v4(address: (127, 0, 0, 1), port: 1), storeTimestamp: 2,
            storeHost: .v4(address: (127, 0, 0, 1), port: 30911), body: Array("hi".utf8), topic: "T")
        let bytes = try message.encoded()
        var results: [AppendResult] = []
        for _ in 0..<40 {
            results.append(try await store.append([EntryToAppend(term: Term(3), body: bytes)]) { _, position, body in
                MessageRecord.patch(queueOffset: nil, physicalOffset: Int64(position.rawValue) + 48, in: body, at: 0)
            })
        }
        #expect(bytes == (try message.encoded()), "the caller's body is not patched: the store patches its own copy")
        for r in results {
            let entry = try store.read(from: r.firstIndex, maxBytes: 0)[0]
            let decoded = try entry.body.withUnsafeBytes { try MessageRecord.decode($0) }
            #expect(decoded.physicalOffset == Int64(r.positions[0].rawValue) + 48)
        }
        try store.close()
    }

    @Test func rejectsWhatTheLogCannotHold() async throws {
        let tmp = TempDirectory()
        let store = try LogStore.open(smallOptions(tmp.path))
        await #expect(throws: StorageError.self) { try await store.append([EntryToAppend(term: Term(1), body: [UInt8](repeating: 0, count: 1025))]) }
        _ = try await store.append([EntryToAppend(term: Term(5), body: [1])])
        await #expect(throws: StorageError.self) { try await store.append([EntryToAppend(term: Term(4), body: [1])]) }
        await #expect(throws: StorageError.self) { try await store.append([EntryToAppend(term: Term(5), body: [1])], expectingFirstIndex: LogIndex(7)) }
        _ = try await store.append([EntryToAppend(term: Term(5), body: [1])], expectingFirstIndex: LogIndex(1))
        #expect(throws: StorageError.self) { _ = try LogStore.open(smallOptions(tmp.path)) }  // locked by this process's open store
        try store.close()
    }

    @Test func truncateSuffixRemovesEntriesDurablyAcrossSegments() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        var rng = SplitMix64(seed: 3)
        let store = try LogStore.open(smallOptions(dir))
        var bodies: [[UInt8]] = []
        for _ in 0..<50 {
            let b = randomBody(&rng)
            bodies.append(b)
            _ = try await store.append([EntryToAppend(term: Term(1), body: b)])
        }
        let segmentsBefore = segmentFiles(dir).count
        try store.truncateSuffix(after: LogIndex(9))
        #expect(store.lastIndex == LogIndex(9))
        #expect(segmentFiles(dir).count < segmentsBefore)
        #expect(throws: StorageError.self) { try store.read(from: LogIndex(10), maxBytes: 10) }
        var newBodies = Array(bodies[0..<10])
        for _ in 0..<5 {
            let b = randomBody(&rng)
            newBodies.append(b)
            _ = try await store.append([EntryToAppend(term: Term(2), body: b)], expectingFirstIndex: store.nextIndex)
        }
        #expect(try readAll(store).map(\.body) == newBodies)
        try store.close()
        let reopened = try LogStore.open(smallOptions(dir))
        #expect(try readAll(reopened).map(\.body) == newBodies)
        #expect(try readAll(reopened).map(\.term.rawValue) == Array(repeating: 1, count: 10) + Array(repeating: 2, count: 5))
        // Emptying the log keeps its next index, across a reopen too.
        try reopened.truncateSuffix(after: nil)
        #expect(reopened.lastIndex == nil)
        #expect(reopened.nextIndex == LogIndex(0))
        try reopened.close()
        let empty = try LogStore.open(smallOptions(dir))
        #expect(empty.lastIndex == nil)
        _ = try await empty.append([EntryToAppend(term: Term(3), body: [9])], expectingFirstIndex: LogIndex(0))
        try empty.close()
    }

    @Test func truncateFailsWaitersWhoseEntriesItRemoved() async throws {
        let tmp = TempDirectory()
        let store = try LogStore.open(smallOptions(tmp.path, flush: manualFlush))
        _ = try store.write([EntryToAppend(term: Term(1), body: [1])])
        let second = try store.write([EntryToAppend(term: Term(1), body: [2])])
        // Hold the flusher off so the waiter stays pending until the truncation.
        store.lock.lock()
        let waiter = Task { try await store.waitUntilDurable(second.endPosition) }
        store.lock.unlock()
        while store.lock.withLock({ store.state.waiters.isEmpty && store.state.durable.endPosition < second.endPosition.rawValue }) {
            try await Task.sleep(nanoseconds: 1_000_000)
        }
        try store.truncateSuffix(after: LogIndex(0))
        do {
            try await waiter.value
            // The flusher may have made it durable before the truncation; then the wait was honest.
            #expect(store.statistics.dataSyncs > 0)
        } catch let error as StorageError {
            #expect(error == .truncatedBeforeDurable(position: second.positions[0].rawValue))
        }
        #expect(store.lastIndex == LogIndex(0))
        try store.close()
    }

    @Test func deletePrefixRemovesWholeSegmentsOnly() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        let store = try LogStore.open(smallOptions(dir))
        for _ in 0..<100 { _ = try await store.append([EntryToAppend(term: Term(1), body: [UInt8](repeating: 1, count: 200))]) }
        let removed = try store.deletePrefix(before: LogIndex(50))
        #expect(removed > 0)
        let first = store.firstIndex
        #expect(first <= LogIndex(50))
        #expect(first > LogIndex(0))
        #expect(throws: StorageError.self) { try store.read(from: LogIndex(first.rawValue - 1), maxBytes: 10) }
        #expect(try store.read(from: first, maxBytes: 0).count == 1)
        #expect(segmentFiles(dir).first!.hasSuffix(String(format: "%020d", Int(try store.read(from: first, maxBytes: 0)[0].position.rawValue))))
        try store.close()
        let reopened = try LogStore.open(smallOptions(dir))
        #expect(reopened.firstIndex == first)
        #expect(reopened.lastIndex == LogIndex(99))
        #expect(try readAll(reopened).count == 100 - Int(first.rawValue))
        // Emptied after a prefix deletion, the log still knows its next index after a restart.
        try reopened.truncateSuffix(after: LogIndex(first.rawValue - 1))
        #expect(reopened.lastIndex == nil)
        try reopened.close()
        let emptied = try LogStore.open(smallOptions(dir))
        #expect(emptied.nextIndex == first)
        #expect(emptied.lastIndex == nil)
        let r = try await emptied.append([EntryToAppend(term: Term(2), body: [1])], expectingFirstIndex: first)
        #expect(r.firstIndex == first)
        try emptied.close()
    }

    @Test func diskAboveMaxUsedRatioRefusesWritesButServesReads() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        do {
            let store = try LogStore.open(smallOptions(dir))
            _ = try await store.append([EntryToAppend(term: Term(1), body: [1, 2, 3])])
            try store.close()
        }
        let full = try LogStore.open(smallOptions(dir, diskUsage: 0.80))
        do {
            _ = try await full.append([EntryToAppend(term: Term(1), body: [4])])
            Issue.record("append succeeded on a full disk")
        } catch let error as StorageError {
            guard case let .diskFull(_, used, limit) = error else { Issue.record("wrong error \(error)"); return }
            #expect(used == 80)
            #expect(limit == 75)
            #expect(error.description.contains("diskMaxUsedSpaceRatio=75"))
        }
        #expect(try full.read(from: LogIndex(0), maxBytes: 100)[0].body == [1, 2, 3])
        try full.close()
    }

    @Test func hardStateIsWrittenAtomicallyAndNeverSilentlyReset() throws {
        let tmp = TempDirectory()
        let file = HardStateFile(path: tmp.path + "/hardstate")
        #expect(try file.load() == nil)
        let state = HardState(term: Term(7), votedFor: "n1", commitIndex: LogIndex(1234))
        try file.save(state)
        #expect(try file.load() == state)
        try file.save(HardState(term: Term(8), votedFor: nil))
        #expect(try file.load() == HardState(term: Term(8), votedFor: nil, commitIndex: nil))
        #expect(!FileManager.default.fileExists(atPath: tmp.path + "/hardstate.tmp"))
        let bytes = try Data(contentsOf: URL(fileURLWithPath: tmp.path + "/hardstate"))
        for i in 0..<bytes.count {
            var damaged = bytes
            damaged[i] ^= 0x04
            try damaged.write(to: URL(fileURLWithPath: tmp.path + "/hardstate"))
            #expect(throws: StorageError.self, "byte \(i) damaged went unnoticed") { try file.load() }
        }
    }
}

@Suite(.ownThreads) struct IndexRepairTests {
    @Test func aDamagedIndexRecordIsFoundAgainByScanningAndRewritten() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        var rng = SplitMix64(seed: 77)
        var bodies: [[UInt8]] = []
        do {
            let store = try LogStore.open(smallOptions(dir))
            for _ in 0..<200 {
                let b = randomBody(&rng, 100...200)
                bodies.append(b)
                _ = try await store.append([EntryToAppend(term: Term(1), body: b)])
            }
            try store.close()
        }
        // Entry 5 is far before the recovery scan: recovery trusts its index record.
        let indexFile = dir + "/index/" + String(format: "%020d", 0)
        flipBit(indexFile, at: 5 * 32 + 9, bit: 3)  // its position field
        let store = try LogStore.open(smallOptions(dir))
        #expect(store.recoveryReport.indexRecordsRewritten == 0)
        #expect(try store.read(from: LogIndex(5), maxBytes: 0).map(\.body) == [bodies[5]])
        #expect(store.statistics.indexRecordsRepaired == 1)
        #expect(try store.read(from: LogIndex(5), maxBytes: 0).map(\.body) == [bodies[5]])
        #expect(store.statistics.indexRecordsRepaired == 1, "the record was rewritten, no second scan")
        #expect(try readAll(store).map(\.body) == bodies)
        try store.close()
    }
}
