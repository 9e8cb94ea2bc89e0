import Foundation
import Testing
import TestSupport
@testable import LogStore

@Suite(.ownThreads) struct ConsumeQueueTests {
    func entry(_ k: Int) -> ConsumeQueue.Entry {
        ConsumeQueue.Entry(commitLogOffset: Int64(k) * 100, size: Int32(50 + k % 7), tagsCode: Int64(k % 3) - 1)
    }

    @Test func entriesRoundTripAcrossFilesAndSurviveAReopen() throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/TopicTest/0"
        let q = try ConsumeQueue(directory: dir, fileBytes: 20 * 16)
        try q.append((0..<40).map(entry), at: 0)
        try q.append((40..<45).map(entry), at: 40)
        #expect(q.minOffset == 0 && q.maxOffset == 45)
        #expect(try q.read(from: 10, maxCount: 20) == (10..<30).map(entry), "a read across a file boundary")
        #expect(try q.read(from: 40, maxCount: 100) == (40..<45).map(entry))
        #expect(throws: StorageError.self) { try q.append([entry(99)], at: 47) }
        try q.flush()
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(files == ["00000000000000000000", "00000000000000000320", "00000000000000000640"])
        let again = try ConsumeQueue(directory: dir, fileBytes: 20 * 16)
        #expect(again.minOffset == 0 && again.maxOffset == 45)
        #expect(try again.read(from: 0, maxCount: 45) == (0..<45).map(entry))
    }

    @Test func aTornTailIsNotAnEntry() throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/q"
        let q = try ConsumeQueue(directory: dir, fileBytes: 20 * 100)
        try q.append((0..<7).map(entry), at: 0)
        try q.flush()
        // Half an entry after the seventh, as a crash mid-write leaves it.
        let h = try #require(FileHandle(forWritingAtPath: dir + "/00000000000000000000"))
        h.seek(toFileOffset: 7 * 20)
        h.write(Data([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
        try h.close()
        let again = try ConsumeQueue(directory: dir, fileBytes: 20 * 100)
        #expect(again.maxOffset == 7)
        try again.append([entry(7)], at: 7)
        #expect(try again.read(from: 7, maxCount: 1) == [entry(7)], "the torn bytes are overwritten")
    }

    @Test func aQueueStartingLateHasBlanksBeforeItsFirstEntry() throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/q"
        let q = try ConsumeQueue(directory: dir, fileBytes: 20 * 10)
        try q.append([entry(25), entry(26)], at: 25)
        #expect(q.minOffset == 25 && q.maxOffset == 27)
        try q.flush()
        let again = try ConsumeQueue(directory: dir, fileBytes: 20 * 10)
        #expect(again.minOffset == 25 && again.maxOffset == 27)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["00000000000000000400"])
        #expect(throws: StorageError.self) { try again.read(from: 24, maxCount: 1) }
    }

    @Test func truncationByLogicalAndByCommitLogOffset() throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/q"
        let q = try ConsumeQueue(directory: dir, fileBytes: 20 * 8)
        try q.append((0..<30).map(entry), at: 0)
        try q.flush()
        try q.truncate(fromCommitLogOffset: 2_050)   // entries 21... point at 2100 and later
        #expect(q.maxOffset == 21)
        try q.truncate(from: 16)                     // a file boundary
        #expect(q.maxOffset == 16)
        let again = try ConsumeQueue(directory: dir, fileBytes: 20 * 8)
        #expect(again.maxOffset == 16)
        try again.append([entry(16)], at: 16)
        #expect(try again.read(from: 15, maxCount: 5) == [entry(15), entry(16)])
    }

    @Test func retentionDeletesWholeFilesBehindTheCommitLog() throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/q"
        let q = try ConsumeQueue(directory: dir, fileBytes: 20 * 10)
        try q.append((0..<35).map(entry), at: 0)
        try q.flush()
        #expect(try q.deleteFiles(beforeCommitLogOffset: 2_000) == 2, "files 0-9 and 10-19 point before 2000")
        #expect(q.minOffset == 20 && q.maxOffset == 35)
        #expect(try q.read(from: 20, maxCount: 1) == [entry(20)])
        #expect(try q.deleteFiles(beforeCommitLogOffset: Int64.max) == 1, "never the last file")
        let again = try ConsumeQueue(directory: dir, fileBytes: 20 * 10)
        #expect(again.minOffset == 30 && again.maxOffset == 35)
    }

    @Test func theLastEntriesAreReadFromMemory() throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/q"
        let n = ConsumeQueue.tailEntries * 3
        let q = try ConsumeQueue(directory: dir, fileBytes: 20 * UInt64(n))
        try q.append((0..<n).map(entry), at: 0)
        // The file's bytes overwritten behind the queue's back: only reads from the file see it.
        let h = try #require(FileHandle(forWritingAtPath: dir + "/00000000000000000000"))
        try h.write(contentsOf: Data(repeating: 0xAB, count: n * 20))
        try h.close()
        #expect(try q.read(from: UInt64(n - 5), maxCount: 10) == (n - 5..<n).map(entry), "the tail, from memory")
        #expect(try q.read(from: UInt64(n - ConsumeQueue.tailEntries), maxCount: 1) == [entry(n - ConsumeQueue.tailEntries)])
        #expect(try q.read(from: 0, maxCount: 1) != [entry(0)], "older entries come from the file")
    }

    @Test func theTailInMemoryAgreesWithTheFilesThroughAppendsTruncationsAndRetention() throws {
        var rng = SplitMix64(seed: 7)
        for round in 0..<20 {
            let tmp = TempDirectory()
            let dir = tmp.path + "/q"
            let fileEntries = 50
            var q = try ConsumeQueue(directory: dir, fileBytes: 20 * UInt64(fileEntries))
            var model: [ConsumeQueue.Entry] = []   // logical offset k at model[k]
            var k = 0
            for _ in 0..<60 {
                switch rng.next() % 10 {
                case 0...5:
                    let count = 1 + Int(rng.next() % 700)
                    let add = (k..<k + count).map(entry)
                    try q.append(add, at: UInt64(model.count))
                    model += add
                    k += count
                case 6, 7:
                    let cut = Int(rng.next() % UInt64(model.count + 1))
                    let keep = max(cut, Int(q.minOffset))
                    try q.truncate(from: UInt64(keep))
                    model.removeLast(model.count - Int(q.maxOffset))
                case 8:
                    if let e = model.last { try q.deleteFiles(beforeCommitLogOffset: e.commitLogOffset / 2) }
                default:
                    // A clean reopen (flushed), or a crash: the entries not yet written are lost,
                    // fewer than writeBehindEntries, and what survives is a prefix.
                    let clean = rng.next() % 2 == 0
                    if clean { try q.flush() }
                    q = try ConsumeQueue(directory: dir, fileBytes: 20 * UInt64(fileEntries))
                    let survived = Int(q.maxOffset)
                    #expect(survived <= model.count && (clean ? survived == model.count : model.count - survived < ConsumeQueue.writeBehindEntries),
                            "round \(round): \(survived) of \(model.count) entries after a \(clean ? "clean reopen" : "crash")")
                    model.removeLast(model.count - min(survived, model.count))
                }
                #expect(Int(q.maxOffset) == model.count, "round \(round)")
                let lo = Int(q.minOffset)
                guard lo < model.count else { continue }
                for _ in 0..<5 {
                    let from = lo + Int(rng.next() % UInt64(model.count - lo))
                    let count = 1 + Int(rng.next() % 600)
                    #expect(try q.read(from: UInt64(from), maxCount: count) == Array(model[from..<min(model.count, from + count)]),
                            "round \(round): read \(count) from \(from) of [\(lo), \(model.count))")
                }
            }
        }
    }

    /// Entries are written to the file only once `writeBehindEntries` wait, or at `flush`; until
    /// then reads find them in memory, also reads that start in the file and run into them.
    @Test func entriesAreWrittenBehindAndReadableBeforeTheyAre() throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/q"
        let behind = ConsumeQueue.writeBehindEntries
        let q = try ConsumeQueue(directory: dir, fileBytes: 20 * 1_000)
        try q.append((0..<behind - 1).map(entry), at: 0)
        #expect(try ConsumeQueue(directory: dir, fileBytes: 20 * 1_000).maxOffset == 0, "nothing written below the threshold")
        #expect(try q.read(from: 0, maxCount: 1_000) == (0..<behind - 1).map(entry))
        try q.append([entry(behind - 1)], at: UInt64(behind - 1))
        #expect(try ConsumeQueue(directory: dir, fileBytes: 20 * 1_000).maxOffset == UInt64(behind), "written at the threshold, in one go")
        // Enough that the oldest entries leave the tail, then a few that wait.
        var n = behind
        while n < 3 * ConsumeQueue.tailEntries {
            try q.append((n..<n + 150).map(entry), at: UInt64(n))
            n += 150
        }
        try q.flush()
        try q.append((n..<n + 50).map(entry), at: UInt64(n))
        n += 50
        #expect(try ConsumeQueue(directory: dir, fileBytes: 20 * 1_000).maxOffset == UInt64(n - 50))
        #expect(try q.read(from: 10, maxCount: 10_000) == (10..<n).map(entry), "from the file into the entries not yet written")
        #expect(try q.read(from: UInt64(n - 60), maxCount: 20) == (n - 60..<n - 40).map(entry))
        // Truncation inside the unwritten entries, then before them.
        try q.truncate(from: UInt64(n - 20))
        #expect(try q.maxOffset == UInt64(n - 20) && q.read(from: UInt64(n - 25), maxCount: 100) == (n - 25..<n - 20).map(entry))
        try q.truncate(from: UInt64(n - 100))
        #expect(q.maxOffset == UInt64(n - 100))
        try q.append([entry(7_777)], at: UInt64(n - 100))
        try q.flush()
        let again = try ConsumeQueue(directory: dir, fileBytes: 20 * 1_000)
        #expect(again.maxOffset == UInt64(n - 99))
        #expect(try again.read(from: UInt64(n - 102), maxCount: 10) == [entry(n - 102), entry(n - 101), entry(7_777)])
    }

    /// A write that fails (a full disk) fails the append that triggered it, and changes nothing:
    /// neither the queue's end nor the entries still waiting.
    @Test func anAppendWhoseWriteFailsChangesNothing() throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/q"
        let q = try ConsumeQueue(directory: dir, fileBytes: 20 * 1_000)
        try q.append((0..<10).map(entry), at: 0)
        StoreFaults.fillDisk(under: dir, afterWrites: 0)
        #expect(throws: StorageError.self) { try q.append((10..<10 + ConsumeQueue.writeBehindEntries).map(entry), at: 10) }
        #expect(try q.maxOffset == 10 && q.read(from: 0, maxCount: 100) == (0..<10).map(entry))
        #expect(throws: StorageError.self) { try q.flush() }
        StoreFaults.clearDiskFull(under: dir)
        try q.append((10..<20).map(entry), at: 10)
        try q.flush()
        #expect(try ConsumeQueue(directory: dir, fileBytes: 20 * 1_000).read(from: 0, maxCount: 100) == (0..<20).map(entry))
    }

    /// A write that fails part of the way (the first file written, the next one created, its write
    /// refused) and the first write of a queue that starts late can both be tried again.
    @Test func aWriteThatFailedPartOfTheWayCanBeTriedAgain() throws {
        let tmp = TempDirectory()
        let dir = tmp.path + "/q"
        let behind = ConsumeQueue.writeBehindEntries
        let q = try ConsumeQueue(directory: dir, fileBytes: 20 * UInt64(behind - 50))
        try q.append((0..<behind - 20).map(entry), at: 0)
        StoreFaults.fillDisk(under: dir, afterWrites: 1)
        #expect(throws: StorageError.self) { try q.append((behind - 20..<behind + 20).map(entry), at: UInt64(behind - 20)) }
        #expect(q.maxOffset == UInt64(behind - 20))
        StoreFaults.clearDiskFull(under: dir)
        try q.append((behind - 20..<behind + 20).map(entry), at: UInt64(behind - 20))
        try q.flush()
        #expect(try ConsumeQueue(directory: dir, fileBytes: 20 * UInt64(behind - 50)).read(from: 0, maxCount: 1_000) == (0..<behind + 20).map(entry))

        let late = tmp.path + "/late"
        let l = try ConsumeQueue(directory: late, fileBytes: 20 * 1_000)
        StoreFaults.fillDisk(under: late, afterWrites: 0)
        #expect(throws: StorageError.self) { try l.append([entry(7)], at: UInt64(behind + 300)) }
        StoreFaults.clearDiskFull(under: late)
        try l.append([entry(7)], at: UInt64(behind + 300))
        #expect(l.minOffset == UInt64(behind + 300) && l.maxOffset == UInt64(behind + 301))
        try l.flush()
        let again = try ConsumeQueue(directory: late, fileBytes: 20 * 1_000)
        #expect(try again.minOffset == UInt64(behind + 300) && again.read(from: UInt64(behind + 300), maxCount: 5) == [entry(7)])
    }

    @Test func oneEntryByOffsetFromTheTailTheFileOrNowhere() throws {
        let tmp = TempDirectory()
        let q = try ConsumeQueue(directory: tmp.path + "/q", fileBytes: 20 * 100)
        #expect(try q.entry(at: 0) == nil, "an empty queue")
        let n = 3 * ConsumeQueue.tailEntries
        try q.append((0..<n).map(entry), at: 0)
        try q.append((n..<n + 5).map(entry), at: UInt64(n))   // waiting to be written
        for k in [0, 1, 99, 100, n - 1, n, n + 4] {
            #expect(try q.entry(at: UInt64(k)) == entry(k), "entry \(k)")
        }
        #expect(try q.entry(at: UInt64(n + 5)) == nil, "past the end")
    }

    @Test func aFileSizeThatIsNotAMultipleOf20IsRefused() {
        let tmp = TempDirectory()
        #expect(throws: StorageError.self) { try ConsumeQueue(directory: tmp.path + "/q", fileBytes: 1_001) }
        #expect(throws: StorageError.self) { try ConsumeQueue(directory: tmp.path + "/q", fileBytes: 2_000, writeBehind: 0) }
        #expect(throws: StorageError.self) { try ConsumeQueue(directory: tmp.path + "/q", fileBytes: 2_000, writeBehind: ConsumeQueue.writeBehindEntries + 1) }
    }
}

