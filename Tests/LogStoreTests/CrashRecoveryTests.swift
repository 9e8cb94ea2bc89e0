import Foundation
import LogFormat
import Testing
import TestSupport

@testable import LogStore

/// Crash tests: a store is copied while running (what a crash leaves: everything the page cache had,
/// part of it durable), then damaged the way crashes and bad disks damage files.
@Suite(.ownThreads) struct CrashRecoveryTests {
    struct Snapshot {
        let directory: String
        /// Every entry of the log at the moment of the copy.
        let entries: [LogEntry]
        /// Everything before this was fdatasync'ed and is in the checkpoint.
        let checkpointEnd: UInt64
        let logEnd: UInt64
    }

    /// 20 durable entries (checkpointed), then 15 more only in the page cache.
    static func makeSnapshot(_ tmp: TempDirectory, seed: UInt64, bodies: ClosedRange<Int> = 1...300) async throws -> Snapshot {
        var rng = SplitMix64(seed: seed)
        let live = tmp.path + "/live"
        let store = try LogStore.open(smallOptions(live, flush: manualFlush))
        for _ in 0..<20 { _ = try store.write([EntryToAppend(term: Term(1), body: randomBody(&rng, bodies))]) }
        try store.checkpointNow()
        let checkpointEnd = store.durablePosition.rawValue
        for _ in 0..<15 { _ = try store.write([EntryToAppend(term: Term(2), body: randomBody(&rng, bodies))]) }
        let entries = try readAll(store)
        let copy = tmp.snapshot(live, to: "golden")
        let logEnd = store.writePosition.rawValue
        try store.close()
        return Snapshot(directory: copy, entries: entries, checkpointEnd: checkpointEnd, logEnd: logEnd)
    }

    static let segment: UInt64 = 4096

    static func corruptLocation(_ error: any Error) -> (String?, UInt64?) {
        guard let e = error as? StorageError, case let .corrupt(file, position, _) = e else { return (nil, nil) }
        return (file, position)
    }

    /// Durable entries are gone or damaged: the open refuses at once, or (before the checkpoint)
    /// the verification after it finds them, stops the store, and the next open refuses.
    static func expectRefused(_ dir: String, _ what: String) {
        do {
            let store = try LogStore.open(smallOptions(dir))
            let finding = store.awaitVerification()
            try? store.close()
            guard finding != nil else {
                Issue.record("\(what) was accepted")
                return
            }
            #expect(throws: StorageError.self, "\(what): reopened after the verification found it") { _ = try LogStore.open(smallOptions(dir)) }
        } catch {}
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func cutAtRandomBytePositionsKeepsExactlyTheValidPrefix(seed: UInt64) async throws {
        let tmp = TempDirectory("cut\(seed)")
        let snap = try await Self.makeSnapshot(tmp, seed: seed)
        var rng = SplitMix64(seed: seed * 1000)
        for trial in 0..<40 {
            let dir = tmp.snapshot(snap.directory, to: "trial")
            // Mostly past the checkpoint (torn tails), sometimes before it (durable data lost).
            let x = trial % 5 == 4 ? UInt64.random(in: 0..<snap.checkpointEnd, using: &rng) : UInt64.random(in: snap.checkpointEnd...snap.logEnd, using: &rng)
            let k = Int(x / Self.segment)
            let files = segmentFiles(dir)
            truncateFile(files[k], to: x - UInt64(k) * Self.segment)
            for later in files[(k + 1)...] { try FileManager.default.removeItem(atPath: later) }
            switch trial % 3 {
            case 1:  // preallocated file: zeros after the tear
                truncateFile(files[k], to: Self.segment)
            case 2:  // a torn sector with garbage after the tear
                let h = FileHandle(forWritingAtPath: files[k])!
                try h.seekToEnd()
                let room = Int(Self.segment - (x - UInt64(k) * Self.segment))
                if room > 0 { h.write(Data(randomBody(&rng, 1...200).prefix(room))) }
                try h.close()
            default: break
            }
            let expected = snap.entries.filter { $0.position.rawValue + UInt64($0.header.totalByteCount) <= x }
            if x < snap.checkpointEnd {
                Self.expectRefused(dir, "cut at \(x) below the checkpoint \(snap.checkpointEnd)")
                continue
            }
            let store = try LogStore.open(smallOptions(dir))
            #expect(try readAll(store) == expected, "trial \(trial): cut at \(x)")
            if let cut = store.recoveryReport.cut {
                #expect(cut.position <= x)
                // At the end of the last whole entry, or at the start of the segment after a sealed one.
                let lastEnd = expected.last.map { $0.position.rawValue + UInt64($0.header.totalByteCount) } ?? 0
                #expect(cut.position == lastEnd || (cut.position > lastEnd && cut.position % Self.segment == 0 && cut.position - lastEnd < Self.segment))
            }
            // The recovered store takes new writes and survives another restart.
            let r = try await store.append([EntryToAppend(term: Term(3), body: [7, 7, 7])])
            #expect(r.firstIndex == LogIndex(UInt64(expected.count)))
            try store.close()
            let again = try LogStore.open(smallOptions(dir))
            #expect(try readAll(again).count == expected.count + 1)
            #expect(again.recoveryReport.cut == nil)
            try again.close()
        }
    }

    /// A store in `dir` (manual flush) holding `entries` random entries of term 1.
    static func openWritten(_ dir: String, entries: Int, _ rng: inout SplitMix64) throws -> LogStore {
        let store = try LogStore.open(smallOptions(dir, flush: manualFlush))
        for _ in 0..<entries { _ = try store.write([EntryToAppend(term: Term(1), body: randomBody(&rng))]) }
        return store
    }

    /// A start costs what came after the checkpoint, not the log's size: the scan resumes exactly at
    /// the checkpoint, and the entries before it are verified after the open (they pass here).
    @Test func theOpenResumesAtTheCheckpointAndVerifiesTheRestAfterwards() async throws {
        let tmp = TempDirectory("resume")
        let dir = tmp.path + "/store"
        var rng = SplitMix64(seed: 77)
        var store = try Self.openWritten(dir, entries: 120, &rng)
        let written = try readAll(store)
        #expect(segmentFiles(dir).count >= 6, "a log of several segments")
        try store.close()
        store = try LogStore.open(smallOptions(dir, flush: manualFlush))
        let report = store.recoveryReport
        #expect(report.usedCheckpoint && report.scannedEntries == 0 && report.scanStartPosition == written.last!.position.rawValue + UInt64(written.last!.header.totalByteCount),
                "\(report)")
        #expect(store.awaitVerification() == nil && !store.verification.running)
        // The chain goes on from the checkpoint: new entries chain to the old ones, and a full scan
        // (no checkpoint) accepts the whole log.
        for _ in 0..<10 { _ = try store.write([EntryToAppend(term: Term(2), body: randomBody(&rng))]) }
        let all = try readAll(store)
        #expect(Array(all.prefix(written.count)) == written && all.count == written.count + 10)
        try store.close()
        try FileManager.default.removeItem(atPath: dir + "/checkpoint")
        store = try LogStore.open(smallOptions(dir, flush: manualFlush))
        let rescanned = try readAll(store)
        #expect(!store.recoveryReport.usedCheckpoint && rescanned == all)
        try store.close()
    }

    /// A Raft conflict truncates below the checkpoint while the verification reads: what it reads
    /// past the cut was written after it, and is no finding (found by bench-start.sh: a false
    /// "corrupt" after a kill-all, so no member would start again).
    @Test func aTruncationBelowTheCheckpointIsNoFindingOfTheVerification() async throws {
        let tmp = TempDirectory("verify-cut")
        let dir = tmp.path + "/store"
        var rng = SplitMix64(seed: 78)
        var store = try Self.openWritten(dir, entries: 60, &rng)
        try store.close()
        // The verification as the next open plans it, holding the segment files as they are now.
        let v = try #require(Verification.plan(try Recovery(options: smallOptions(dir, flush: manualFlush)).run()))
        store = try LogStore.open(smallOptions(dir, flush: manualFlush))
        let keep = LogIndex(store.lastIndex!.rawValue - 12)
        let cut = try store.read(from: keep.next, maxBytes: 0)[0].position.rawValue
        try store.truncateSuffix(after: keep)
        for _ in 0..<20 { _ = try store.write([EntryToAppend(term: Term(2), body: randomBody(&rng))]) }
        #expect(store.awaitVerification() == nil, "the store's own verification reported the truncation")
        try store.close()
        // Read without the limit, the rewritten part is a mismatch; with the cut as the limit, none.
        #expect(try v.run(stop: { false }) != nil, "the rewritten part should not verify as the old log")
        #expect(try v.run(stop: { false }, limit: { cut }) == nil)
        _ = try LogStore.open(smallOptions(dir, flush: manualFlush)).close()
    }

    @Test(arguments: [11, 12, 13] as [UInt64])
    func flippedBitsAreAlwaysDetected(seed: UInt64) async throws {
        let tmp = TempDirectory("flip\(seed)")
        let snap = try await Self.makeSnapshot(tmp, seed: seed, bodies: 1...150)
        #expect(segmentFiles(snap.directory).count <= 3, "the whole log must be in the recovery scan")
        // Every byte that means something: entries, and the blank records that end sealed segments.
        var regions: [(start: UInt64, count: UInt64, entry: Int?)] = snap.entries.enumerated().map {
            ($0.element.position.rawValue, UInt64($0.element.header.totalByteCount), $0.offset)
        }
        for (a, b) in zip(snap.entries, snap.entries.dropFirst()) where b.position.rawValue % Self.segment == 0 {
            regions.append((a.position.rawValue + UInt64(a.header.totalByteCount), 8, nil))
        }
        var rng = SplitMix64(seed: seed)
        for trial in 0..<60 {
            let region = regions.randomElement(using: &rng)!
            let x = region.start + UInt64.random(in: 0..<region.count, using: &rng)
            let dir = tmp.snapshot(snap.directory, to: "trial")
            let file = segmentFiles(dir)[Int(x / Self.segment)]
            flipBit(file, at: x % Self.segment, bit: Int.random(in: 0..<8, using: &rng))
            if region.entry == snap.entries.count - 1 {
                // The tail entry, never synced: a torn write. It is cut, the rest kept.
                let store = try LogStore.open(smallOptions(dir))
                #expect(try readAll(store) == Array(snap.entries.dropLast()), "trial \(trial) flip at \(x)")
                #expect(store.recoveryReport.cut?.position == region.start)
                try store.close()
            } else {
                // After the checkpoint the open finds it; before it, the verification that follows
                // the open does, stops the store, and the next open refuses. Either way the error
                // names the file and the position of the damaged entry.
                do {
                    let store = try LogStore.open(smallOptions(dir))
                    let finding = store.awaitVerification()
                    try? store.close()
                    guard let finding else {
                        Issue.record("trial \(trial): flip at \(x) (entry \(region.entry.map(String.init) ?? "blank")) went unnoticed")
                        continue
                    }
                    #expect(finding.contains(file) && finding.contains("position \(region.start)"), "trial \(trial): flip at \(x): \(finding)")
                    _ = try LogStore.open(smallOptions(dir))
                    Issue.record("trial \(trial): reopened after the verification found \(finding)")
                } catch {
                    let (corruptFile, position) = Self.corruptLocation(error)
                    #expect(corruptFile == file, "trial \(trial): \(error)")
                    #expect(position == region.start, "trial \(trial): flip at \(x): \(error)")
                }
            }
        }
    }

    @Test func theIndexIsRebuiltFromTheData() async throws {
        let tmp = TempDirectory()
        let snap = try await Self.makeSnapshot(tmp, seed: 21)
        let dir = tmp.snapshot(snap.directory, to: "noindex")
        for f in try FileManager.default.contentsOfDirectory(atPath: dir + "/index") { try FileManager.default.removeItem(atPath: dir + "/index/" + f) }
        try FileManager.default.removeItem(atPath: dir + "/checkpoint")
        let store = try LogStore.open(smallOptions(dir))
        #expect(store.recoveryReport.indexRecordsRewritten == snap.entries.count)
        #expect(!store.recoveryReport.usedCheckpoint)
        #expect(try readAll(store) == snap.entries)
        try store.close()
        let again = try LogStore.open(smallOptions(dir))
        #expect(again.recoveryReport.indexRecordsRewritten == 0)
        #expect(again.recoveryReport.usedCheckpoint)
        try again.close()
    }

    @Test func aReadNeverServesACorruptEntry() async throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/s"
        var rng = SplitMix64(seed: 8)
        // Eight segments: the first ones are outside the recovery scan, so only the read can notice.
        do {
            let store = try LogStore.open(smallOptions(dir))
            for _ in 0..<200 { _ = try await store.append([EntryToAppend(term: Term(1), body: randomBody(&rng, 100...200))]) }
            try store.close()
        }
        #expect(segmentFiles(dir).count > 5)
        let peek = try LogStore.open(smallOptions(dir))
        let victim = try peek.read(from: LogIndex(3), maxBytes: 0)[0]
        try peek.close()
        flipBit(segmentFiles(dir)[0], at: victim.position.rawValue + 60, bit: 2)
        let store = try LogStore.open(smallOptions(dir))
        #expect(throws: StorageError.self) { try store.read(from: LogIndex(0), maxBytes: 1 << 20) }
        // The store stops serving after a storage error.
        #expect(throws: StorageError.self) { try store.read(from: LogIndex(100), maxBytes: 100) }
        try store.close()
    }
}

@Suite(.ownThreads) struct RandomDamageTests {
    /// Whatever happens to the files (data, index, checkpoint), opening either works or throws a
    /// StorageError, and reading never returns an entry that differs from what was written.
    @Test(arguments: [31, 32, 33, 34] as [UInt64])
    func randomDamageNeverCrashesAndNeverServesWrongData(seed: UInt64) async throws {
        let tmp = TempDirectory("damage\(seed)")
        let snap = try await CrashRecoveryTests.makeSnapshot(tmp, seed: seed)
        let byIndex = Dictionary(uniqueKeysWithValues: snap.entries.map { ($0.index, $0) })
        var rng = SplitMix64(seed: seed)
        var opened = 0
        var entriesServed = 0
        for trial in 0..<25 {
            let dir = tmp.snapshot(snap.directory, to: "trial")
            var files = segmentFiles(dir)
            files += ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/index")) ?? []).map { dir + "/index/" + $0 }
            files.append(dir + "/checkpoint")
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                let file = files.randomElement(using: &rng)!
                let size = fileSize(file)
                guard size > 0 else { continue }
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: flipBit(file, at: UInt64.random(in: 0..<size, using: &rng), bit: Int.random(in: 0..<8, using: &rng))
                case 1: truncateFile(file, to: UInt64.random(in: 0..<size, using: &rng))
                default:
                    let h = FileHandle(forUpdatingAtPath: file)!
                    try h.seek(toOffset: UInt64.random(in: 0..<size, using: &rng))
                    h.write(Data(randomBody(&rng, 1...64)))
                    try h.close()
                }
            }
            // Refusing to open (a typed StorageError) is a fine outcome; trapping is not.
            guard let store = try? LogStore.open(smallOptions(dir)) else { continue }
            opened += 1
            defer { try? store.close() }
            guard let last = store.lastIndex else { continue }
            var next = store.firstIndex
            while next <= last {
                guard let batch = try? store.read(from: next, maxBytes: 1 << 16), !batch.isEmpty else { break }
                for e in batch {
                    #expect(byIndex[e.index] == e, "trial \(trial): entry \(e.index) served with different content")
                }
                entriesServed += batch.count
                next = LogIndex(batch.last!.index.rawValue + 1)
            }
        }
        // The damage must leave some stores that open and serve, or the check above checked nothing.
        #expect(opened > 0)
        #expect(entriesServed > 0)
    }
}

@Suite(.ownThreads) struct TruncationCrashTests {
    /// truncateSuffix moves the checkpoint down, then unlinks later segments, then cuts: a crash after
    /// any step leaves a store that opens (holding the removed entries or not), never one that refuses.
    @Test func aCrashInsideTruncateSuffixLeavesAStoreThatOpens() async throws {
        let tmp = TempDirectory()
        let live = tmp.path + "/live"
        var rng = SplitMix64(seed: 5)
        let store = try LogStore.open(smallOptions(live))
        for _ in 0..<60 { _ = try await store.append([EntryToAppend(term: Term(1), body: randomBody(&rng, 100...250))]) }
        try store.checkpointNow()
        let all = try readAll(store)
        try store.close()
        let keep = all[9]
        let cut = all[10].position.rawValue
        let point = DurablePoint(endPosition: cut, nextIndex: LogIndex(10), lastTerm: keep.term, lastChainCRC: keep.header.chainCRC)
        let k = Int(cut / 4096)

        // After step 1: checkpoint moved down, files untouched.
        let a = tmp.snapshot(live, to: "a")
        try Data(CheckpointFile.encode(point)).write(to: URL(fileURLWithPath: a + "/checkpoint"))
        let sa = try LogStore.open(smallOptions(a))
        #expect(try readAll(sa) == all)
        try sa.close()

        // After step 2: later segments gone too; the cut segment is whole and sealed.
        let b = tmp.snapshot(live, to: "b")
        try Data(CheckpointFile.encode(point)).write(to: URL(fileURLWithPath: b + "/checkpoint"))
        for f in segmentFiles(b)[(k + 1)...] { try FileManager.default.removeItem(atPath: f) }
        let sb = try LogStore.open(smallOptions(b))
        let kept = try readAll(sb)
        #expect(kept == Array(all.prefix(kept.count)))
        #expect(kept.count >= 10)
        #expect(kept.last.map { $0.position.rawValue / 4096 } == UInt64(k))
        try sb.close()
    }
}
