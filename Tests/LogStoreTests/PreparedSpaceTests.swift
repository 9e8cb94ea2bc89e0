import Foundation
import LogFormat
import Testing
import TestSupport

@testable import LogStore

/// Zeros written ahead of the log (`prepareAheadBytes`, the broker's warmMapedFileEnable): they
/// never land over entries, recovery reads them as the log's end (no cut), and truncation, rolls and
/// reopening work across them.
@Suite(.ownThreads) struct PreparedSpaceTests {
    func prepared(_ dir: String, flush: FlushMode, segmentBytes: UInt64, ahead: UInt64) -> LogStoreOptions {
        var o = smallOptions(dir, flush: flush, segmentBytes: segmentBytes)
        o.entryBodyBytesMax = 2048
        o.prepareAheadBytes = ahead
        return o
    }

    /// Waits until the preparer has written at least `bytes` in all.
    func waitPrepared(_ store: LogStore, atLeast bytes: UInt64) async throws {
        for _ in 0..<500 where store.statistics.preparedBytes < bytes { try await Task.sleep(for: .milliseconds(10)) }
        #expect(store.statistics.preparedBytes >= bytes, "the preparer wrote \(store.statistics.preparedBytes) bytes")
    }

    /// Appends `count` entries of random bodies in `term`, one per call; returns the bodies.
    func appendRandom(_ store: LogStore, _ count: Int, term: UInt64, _ rng: inout SplitMix64) async throws -> [[UInt8]] {
        var bodies: [[UInt8]] = []
        for _ in 0..<count {
            let body = randomBody(&rng)
            _ = try await store.append([EntryToAppend(term: Term(term), body: body)])
            bodies.append(body)
        }
        return bodies
    }

    @Test func zerosAheadAreKeptAcrossReopenWithoutACut() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        let options = prepared(dir, flush: .sync, segmentBytes: 4 << 20, ahead: 2 << 20)
        var expected: [[UInt8]] = []
        var rng = SplitMix64(seed: 7)
        do {
            let store = try LogStore.open(options)
            expected += try await appendRandom(store, 100, term: 1, &rng)
            try await waitPrepared(store, atLeast: 2 << 20)
            let end = store.writePosition.rawValue
            #expect(fileSize(segmentFiles(dir)[0]) >= end + (1 << 20), "zeros reach past the log's end")
            try store.close()
        }
        let sizeBefore = fileSize(segmentFiles(dir)[0])
        do {
            // Reopened without a preparer, so that the file's size is recovery's doing alone.
            let store = try LogStore.open(prepared(dir, flush: .sync, segmentBytes: 4 << 20, ahead: 0))
            #expect(store.recoveryReport.cut == nil, "prepared zeros are no torn tail")
            #expect(fileSize(segmentFiles(dir)[0]) == sizeBefore, "recovery keeps the prepared zeros")
            #expect(try readAll(store).map(\.body) == expected)
            expected += try await appendRandom(store, 50, term: 2, &rng)
            try store.close()
        }
        // And once more after appending into the prepared space.
        let store = try LogStore.open(options)
        #expect(try readAll(store).map(\.body) == expected)
        #expect(store.recoveryReport.cut == nil)
        try store.close()
    }

    /// Appenders write into the chunk the preparer is zeroing, across many segment rolls (the
    /// preparer's chunk covers the rest of each small segment): every entry reads back as written,
    /// now and after a reopen.
    @Test(arguments: [FlushMode.sync, manualFlush])
    func appendersRacingThePreparerLoseNothing(flush: FlushMode) async throws {
        let tmp = TempDirectory("race\(flush == .sync ? "sync" : "async")")
        let dir = tmp.path + "/s"
        var options = prepared(dir, flush: flush, segmentBytes: 64 << 10, ahead: 8 << 20)
        // The preparer holds each claimed chunk (the rest of a new segment) for 2 ms before writing
        // its zeros: appenders reach it meanwhile and must wait for the zeros, not be overwritten.
        options.prepareClaimDelayMicroseconds = 2_000
        let store = try LogStore.open(options)
        let tasks = 16
        let perTask = 150
        let results = try await withThrowingTaskGroup(of: [(LogIndex, [UInt8])].self) { group in
            for t in 0..<tasks {
                group.addTask {
                    var rng = SplitMix64(seed: UInt64(t))
                    var mine: [(LogIndex, [UInt8])] = []
                    for _ in 0..<perTask {
                        let body = randomBody(&rng, 1...1500)
                        let r = try await store.append([EntryToAppend(term: Term(1), body: body)])
                        mine.append((r.firstIndex, body))
                    }
                    return mine
                }
            }
            var all: [(LogIndex, [UInt8])] = []
            for try await batch in group { all += batch }
            return all.sorted { $0.0 < $1.0 }
        }
        #expect(segmentFiles(dir).count > 20, "the log rolled across many segments")
        #expect(store.statistics.preparedBytes > 0)
        #expect(try readAll(store).map(\.body) == results.map(\.1))
        try store.syncNow()
        let crashed = tmp.snapshot(dir, to: "crash")
        try store.close()
        for d in [dir, crashed] {
            let reopened = try LogStore.open(prepared(d, flush: flush, segmentBytes: 64 << 10, ahead: 8 << 20))
            #expect(reopened.recoveryReport.cut == nil)
            #expect(try readAll(reopened).map(\.body) == results.map(\.1))
            try reopened.close()
        }
    }

    /// The preparer's fdatasync covers the log's own bytes in that file, so its failure stops the
    /// store as the flusher's does: every later call says why (naming the sync and the file), and a
    /// reopen serves what was durable. (Only the preparer syncs here: the flush is manual.)
    @Test func aFailedPreparerSyncStopsTheStore() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        let store = try LogStore.open(prepared(dir, flush: manualFlush, segmentBytes: 4 << 20, ahead: 1 << 20))
        var rng = SplitMix64(seed: 11)
        let durable = try await appendRandom(store, 20, term: 1, &rng)
        try await waitPrepared(store, atLeast: 1 << 20)
        try store.syncNow()
        let segment = segmentFiles(dir)[0]
        let syncsBefore = store.statistics.prepareSyncs
        StoreFaults.failSyncs(under: segment, afterSyncs: 0)
        defer { StoreFaults.clearSyncFailures(under: segment) }
        // Past a chunk of log: the preparer wakes for the next chunk and syncs it.
        // (An append may meet the failure already: it must then say so.)
        for _ in 0..<200 where store.failureDescription == nil {
            do { _ = try await store.append([EntryToAppend(term: Term(1), body: randomBody(&rng, 1500...2000))]) }
            catch { #expect("\(error)".contains("fdatasync"), "\(error)"); break }
        }
        for _ in 0..<500 where store.failureDescription == nil { try await Task.sleep(for: .milliseconds(10)) }
        let failure = try #require(store.failureDescription, "the preparer's failed sync went unnoticed")
        #expect(failure.contains("fdatasync") && failure.contains(segment), "\(failure)")
        #expect(store.statistics.prepareSyncs == syncsBefore)
        for call in ["append", "syncNow"] {
            do {
                if call == "append" { _ = try await store.append([EntryToAppend(term: Term(1), body: [1, 2, 3])]) } else { try store.syncNow() }
                Issue.record("\(call) succeeded on a store whose sync failed")
            } catch {
                #expect("\(error)".contains("fdatasync") && "\(error)".contains(segment), "\(call): \(error)")
            }
        }
        StoreFaults.clearSyncFailures(under: segment)
        try? store.close()
        let reopened = try LogStore.open(prepared(dir, flush: manualFlush, segmentBytes: 4 << 20, ahead: 0))
        #expect(Array(try readAll(reopened).map(\.body).prefix(durable.count)) == durable)
        try reopened.close()
    }

    @Test func truncationCutsPreparedSpaceAndTheLogGoesOn() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        let options = prepared(dir, flush: manualFlush, segmentBytes: 4 << 20, ahead: 2 << 20)
        let store = try LogStore.open(options)
        var expected: [[UInt8]] = []
        var rng = SplitMix64(seed: 11)
        expected += try await appendRandom(store, 60, term: 1, &rng)
        try await waitPrepared(store, atLeast: 2 << 20)
        try store.truncateSuffix(after: LogIndex(19))
        expected = Array(expected.prefix(20))
        // What follows the cut is gone: the file ends there, or the preparer's fresh zeros follow.
        let h = FileHandle(forReadingAtPath: segmentFiles(dir)[0])!
        try h.seek(toOffset: store.writePosition.rawValue)
        let after = h.readData(ofLength: 4096)
        try h.close()
        #expect(after.allSatisfy { $0 == 0 }, "no removed entry's bytes after the cut")
        expected += try await appendRandom(store, 30, term: 2, &rng)
        // The preparer zeroes ahead of the new end again.
        try await waitPrepared(store, atLeast: 3 << 20)
        #expect(try readAll(store).map(\.body) == expected)
        try store.close()
        let reopened = try LogStore.open(options)
        #expect(reopened.recoveryReport.cut == nil)
        #expect(try readAll(reopened).map(\.body) == expected)
        try reopened.close()
    }

    /// A header lost to zeros with older bytes after it (a crash that wrote later pages of the file
    /// but not the header's; their index records lost too): the stop is cut, not kept as prepared
    /// space, so the stale bytes cannot resurface behind the entries written next.
    @Test func zerosFollowedByOtherBytesAreCut() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        let options = prepared(dir, flush: manualFlush, segmentBytes: 4 << 20, ahead: 1 << 20)
        let store = try LogStore.open(options)
        let body = [UInt8](repeating: 0x5A, count: 200)
        for _ in 0..<40 { _ = try await store.append([EntryToAppend(term: Term(1), body: body)]) }
        let victim = try store.read(from: LogIndex(30), maxBytes: 0)[0]
        try store.syncNow()
        let crashed = tmp.snapshot(dir, to: "crash")
        try store.close()
        let h = FileHandle(forUpdatingAtPath: segmentFiles(crashed)[0])!
        try h.seek(toOffset: victim.position.rawValue)
        h.write(Data(count: EntryHeader.byteCount))
        try h.close()
        let indexFiles = try FileManager.default.contentsOfDirectory(atPath: crashed + "/index").sorted()
        truncateFile(crashed + "/index/" + indexFiles[0], to: 30 * UInt64(IndexRecord.byteCount))
        let crashedOptions = options.with(directory: crashed)
        do {
            let reopened = try LogStore.open(crashedOptions)
            #expect(reopened.recoveryReport.cut?.position == victim.position.rawValue)
            #expect(try readAll(reopened).count == 30)
            // Same-sized entries in a new term land where the stale ones began.
            for _ in 0..<10 { _ = try await reopened.append([EntryToAppend(term: Term(2), body: body)]) }
            try reopened.close()
        }
        let again = try LogStore.open(crashedOptions)
        #expect(again.recoveryReport.cut == nil)
        let entries = try readAll(again)
        #expect(entries.count == 40 && entries.suffix(10).allSatisfy { $0.term == Term(2) })
        try again.close()
    }

    @Test func aPrepareAheadBelowOneChunkIsRefused() {
        let tmp = TempDirectory()
        var o = smallOptions(tmp.path + "/s")
        o.prepareAheadBytes = 4096
        #expect(throws: StorageError.self) { _ = try LogStore.open(o) }
    }

    /// Zeros where an entry should be, with valid entries after it, are damage, not prepared space.
    @Test func zeroedEntryInTheMiddleIsRefused() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        let options = prepared(dir, flush: manualFlush, segmentBytes: 4 << 20, ahead: 1 << 20)
        let store = try LogStore.open(options)
        var rng = SplitMix64(seed: 3)
        for _ in 0..<40 { _ = try await store.append([EntryToAppend(term: Term(1), body: randomBody(&rng))]) }
        let victim = try store.read(from: LogIndex(25), maxBytes: 0)[0]
        try store.syncNow()
        let crashed = tmp.snapshot(dir, to: "crash")
        try store.close()
        let h = FileHandle(forUpdatingAtPath: segmentFiles(crashed)[0])!
        try h.seek(toOffset: victim.position.rawValue)
        h.write(Data(count: victim.header.totalByteCount))
        try h.close()
        #expect(throws: StorageError.self) { _ = try LogStore.open(options.with(directory: crashed)) }
    }
}

extension LogStoreOptions {
    func with(directory: String) -> LogStoreOptions {
        var o = self
        o.directory = directory
        return o
    }
}
