import Foundation
import Logging
import Testing
@testable import Broker

@Suite struct KeyIndexTests {
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
        let i = try f.append([try keyed("T", 0, "order-1 shared"), try keyed("T", 1, "order-2 shared"), try keyed("U", 0, "order-1")])
        try store.dispatch(upTo: i.last!)
        #expect(store.queryByKey(topic: "T", key: "order-1", maxNum: 10, begin: 0, end: .max).count == 1)
        #expect(store.queryByKey(topic: "T", key: "shared", maxNum: 10, begin: 0, end: .max).count == 2)
        #expect(store.queryByKey(topic: "T", key: "shared", maxNum: 1, begin: 0, end: .max).count == 1)
        #expect(store.queryByKey(topic: "T", key: "ID-T-0-1", maxNum: 10, begin: 0, end: .max).count == 1, "by UNIQ_KEY")
        #expect(store.queryByKey(topic: "T", key: "nothing", maxNum: 10, begin: 0, end: .max).isEmpty)
    }
}
