import Foundation
import Testing
@testable import LogStore

@Suite struct ConsumeQueueTests {
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
        #expect(try q.deleteFiles(beforeCommitLogOffset: 2_000) == 2, "files 0-9 and 10-19 point before 2000")
        #expect(q.minOffset == 20 && q.maxOffset == 35)
        #expect(try q.read(from: 20, maxCount: 1) == [entry(20)])
        #expect(try q.deleteFiles(beforeCommitLogOffset: Int64.max) == 1, "never the last file")
        let again = try ConsumeQueue(directory: dir, fileBytes: 20 * 10)
        #expect(again.minOffset == 30 && again.maxOffset == 35)
    }

    @Test func aFileSizeThatIsNotAMultipleOf20IsRefused() {
        let tmp = TempDirectory()
        #expect(throws: StorageError.self) { try ConsumeQueue(directory: tmp.path + "/q", fileBytes: 1_001) }
    }
}
