import Foundation
import Logging
import Testing
@testable import Broker
import TestSupport

@Suite(.ownThreads) struct KeyIndexTests {
    @Test func keysAreFoundNewestFirstAcrossFullFilesAndAfterReopening() throws {
        let dir = NSTemporaryDirectory() + "raftmq-index-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // One slot: every key collides, so the chain and the hash check do the work. Three entries a file.
        var index: KeyIndex? = try KeyIndex(directory: dir, slots: 1, entries: 4)
        for k in 0..<7 {
            try index!.add(topic: "T", keys: ["key\(k % 2)"], phyOffset: Int64(100 * k), storeTimestamp: 1_000_000 + Int64(k) * 1000)
        }
        #expect(index!.query(topic: "T", key: "key0", maxNum: 10, begin: 0, end: .max) == [600, 400, 200, 0])
        #expect(index!.query(topic: "T", key: "key1", maxNum: 2, begin: 0, end: .max) == [500, 300])
        #expect(index!.query(topic: "U", key: "key1", maxNum: 10, begin: 0, end: .max).isEmpty)
        #expect(index!.query(topic: "T", key: "key0", maxNum: 10, begin: 1_004_000, end: .max) == [600, 400])
        #expect(index!.query(topic: "T", key: "key0", maxNum: 10, begin: .min, end: .max).count == 4, "no overflow at the extremes")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir)
        #expect(files.count == 3, "\(files)")
        try index!.flush()
        index = nil
        let reopened = try KeyIndex(directory: dir, slots: 1, entries: 4)
        #expect(reopened.query(topic: "T", key: "key1", maxNum: 10, begin: 0, end: .max) == [500, 300, 100])
        reopened.deleteFiles(before: 350)
        #expect(reopened.query(topic: "T", key: "key0", maxNum: 10, begin: 0, end: .max) == [600, 400])
        #expect(KeyIndex.hash("polygenelubricants") == 0)
    }

    /// Puts are stores into a shared mapping: the blocks under them are reserved before (a store into
    /// a hole of a full disk would be a SIGBUS, not an error), and what was put is in the file even
    /// when the process goes away without a flush (the page cache has it).
    @Test func putsLandInReservedBlocksAndSurviveWithoutAFlush() throws {
        let dir = NSTemporaryDirectory() + "raftmq-index-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let slots = 1_024, entries = 200_000
        var index: KeyIndex? = try KeyIndex(directory: dir, slots: slots, entries: entries)
        let n = 20_000
        for k in 0..<n {
            try index!.add(topic: "T", keys: ["k\(k)"], phyOffset: Int64(k) * 100, storeTimestamp: 1_700_000_000_000 + Int64(k))
        }
        let name = try #require(try FileManager.default.contentsOfDirectory(atPath: dir).first)
        var st = stat()
        #expect(stat(dir + "/" + name, &st) == 0)
        let allocated = Int(st.st_blocks) * 512
        let used = KeyIndex.headerBytes + slots * 4 + (n + 1) * 20
        #expect(allocated >= used, "blocks under every entry: \(allocated) bytes allocated, \(used) used")
        #expect(allocated < used + 4 * KeyIndex.IndexFile.reserveAhead, "reserved ahead by a little, not the whole file: \(allocated)")
        #expect(Int(st.st_size) == KeyIndex.headerBytes + slots * 4 + entries * 20)
        #expect(index!.query(topic: "T", key: "k12345", maxNum: 4, begin: 0, end: .max) == [1_234_500])
        index = nil  // no flush: unmapped, never synced
        let reopened = try KeyIndex(directory: dir, slots: slots, entries: entries)
        for k in [0, 1, 9_999, n - 1] {
            #expect(reopened.query(topic: "T", key: "k\(k)", maxNum: 4, begin: 0, end: .max) == [Int64(k) * 100], "key k\(k) after a reopen")
        }
        try reopened.add(topic: "T", keys: ["fresh"], phyOffset: 7, storeTimestamp: 1_800_000_000_000)
        #expect(reopened.query(topic: "T", key: "fresh", maxNum: 4, begin: 0, end: .max) == [7], "the reopened file is sealed: a new one takes puts")
        try reopened.flush()
    }

    @Test func queriesReadTheRecordsAndCompareTheirKeys() throws {
        let f = try StoreFixture()
        let index = try KeyIndex(directory: f.root + "/index", slots: 1, entries: 100)
        var options = MessageStore.Options(rootDirectory: f.root, initialTopics: f.topics)
        options.keyIndex = index
        let store = try MessageStore(options: options, log: f.log, logger: Logger(label: "test"))
        func keyed(_ topic: String, _ offset: Int64, _ keys: String) throws -> [UInt8] {
            var r = try record(topic, offset: offset)
            // Re-encode with KEYS (the helper sets TAGS and UNIQ_KEY).
            var decoded = try r.withUnsafeBytes { try LogFormatRecord.decode($0) }
            decoded.properties["KEYS"] = keys
            r = try decoded.encoded()
            return r
        }
        // Dispatch hashes "topic#key" from the record's bytes: ASCII, other UTF-8, runs of spaces.
        let i = try f.append([try keyed("T", 0, "order-1 shared"), try keyed("T", 1, "order-2  shared 订单-é "), try keyed("U", 0, "order-1")])
        try store.dispatch(upTo: i.last!)
        #expect(store.queryByKey(topic: "T", key: "order-1", maxNum: 10, begin: 0, end: .max).count == 1)
        #expect(store.queryByKey(topic: "T", key: "shared", maxNum: 10, begin: 0, end: .max).count == 2)
        #expect(store.queryByKey(topic: "T", key: "shared", maxNum: 1, begin: 0, end: .max).count == 1)
        #expect(store.queryByKey(topic: "T", key: "ID-T-0-1", maxNum: 10, begin: 0, end: .max).count == 1, "by UNIQ_KEY")
        #expect(store.queryByKey(topic: "T", key: "nothing", maxNum: 10, begin: 0, end: .max).isEmpty)
        #expect(store.queryByKey(topic: "T", key: "订单-é", maxNum: 10, begin: 0, end: .max).count == 1, "a key that is not ASCII")
        #expect(store.queryByKey(topic: "U", key: "订单-é", maxNum: 10, begin: 0, end: .max).isEmpty)
    }

    /// A key index that cannot take a put (here: no new file can be made once the first is full)
    /// loses only keys: dispatch goes on, every message reaches its consume queue, the puts that
    /// fit are kept, and the messages that lost a key are counted, each once.
    @Test func aKeyIndexThatCannotGrowLosesKeysNotMessages() throws {
        let f = try StoreFixture()
        let dir = f.root + "/index"
        // Entries count from 1 in a file (0 is an empty slot's link): five make room for four puts.
        let index = try KeyIndex(directory: dir, slots: 1, entries: 5)
        var options = MessageStore.Options(rootDirectory: f.root, initialTopics: f.topics)
        options.keyIndex = index
        let store = try MessageStore(options: options, log: f.log, logger: Logger(label: "test"))
        // The first file made, with room for three more puts; then the index's directory becomes a
        // plain file, so no second file can be made (ENOTDIR, whoever the test runs as).
        try index.add(topic: "T", keys: ["warm"], phyOffset: 0, storeTimestamp: 1_700_000_000_000)
        try FileManager.default.moveItem(atPath: dir, toPath: dir + ".moved")
        #expect(FileManager.default.createFile(atPath: dir, contents: Data()))
        func keyed(_ offset: Int64, _ keys: String) throws -> [UInt8] {
            var decoded = try record("T", offset: offset).withUnsafeBytes { try LogFormatRecord.decode($0) }
            decoded.properties["KEYS"] = keys
            return try decoded.encoded()
        }
        // Three keys each (UNIQ_KEY and two KEYS): the first message's fit, the others' do not.
        let i = try f.append([try keyed(0, "a b"), try keyed(1, "c d"), try keyed(2, "e f")])
        try store.dispatch(upTo: i.last!)
        #expect(store.maxOffset(QueueKey("T", 0)) == 3, "every message dispatched")
        #expect(store.keyIndexFailures == 2, "each message that lost a key, once")
        for key in ["ID-T-0-0", "a", "b"] {
            #expect(store.queryByKey(topic: "T", key: key, maxNum: 4, begin: 0, end: .max).count == 1, "\(key) was put before the index filled")
        }
        for key in ["ID-T-0-1", "c", "f"] {
            #expect(store.queryByKey(topic: "T", key: key, maxNum: 4, begin: 0, end: .max).isEmpty, "\(key) had no room")
        }
    }
}
