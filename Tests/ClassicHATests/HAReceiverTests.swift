import ClassicHA
import Foundation
import LogFormat
import LogStore
import Testing
import TestSupport

/// The slave's side of the HA stream against real stores: what it writes is the master's log byte for
/// byte, and a stream that does not continue its own log is refused before anything is written.
@Suite(.ownThreads) struct HAReceiverTests {
    let root = NSTemporaryDirectory() + "raftmq-ha-" + UUID().uuidString

    func open(_ name: String, segmentBytes: UInt64 = 16 << 10) throws -> LogStore {
        try LogStore.open(LogStoreOptions(directory: root + "/" + name, segmentBytes: segmentBytes, indexFileBytes: 32 * 1024,
                                          entryBodyBytesMax: 4 << 10, diskUsage: { _ throws(StorageError) in 0.1 }))
    }

    /// Appends `count` entries of varied sizes with `term`.
    func fill(_ store: LogStore, count: Int, term: UInt64, seed: UInt8 = 0) throws {
        for i in 0..<count {
            let body = [UInt8](repeating: UInt8(truncatingIfNeeded: i) &+ seed, count: 100 + (i * 37) % 3_000)
            _ = try store.write([EntryToAppend(term: Term(term), body: body)])
        }
    }

    /// The master's bytes from `position` to its end, as the master sends them: chunks that never
    /// cross a segment, of at most `chunk` bytes.
    func stream(_ master: LogStore, from position: UInt64, chunk: Int) throws -> [(UInt64, [UInt8])] {
        var out: [(UInt64, [UInt8])] = []
        var next = position
        let end = master.fileEndPosition.rawValue
        while next < end {
            let segmentEnd = try #require(master.segmentEnd(containing: next))
            let n = Int(min(UInt64(chunk), min(end, segmentEnd) - next))
            out.append((next, try master.readBytes(at: next, count: n)))
            next += UInt64(n)
        }
        return out
    }

    func files(_ name: String) throws -> [String: Data] {
        let dir = root + "/" + name + "/data"
        var out: [String: Data] = [:]
        for f in try FileManager.default.contentsOfDirectory(atPath: dir) { out[f] = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + f)) }
        return out
    }

    @Test(arguments: [1, 7, 48, 1_000, 32 << 10])
    func aSlaveFedInAnyChunkSizeEndsWithTheMastersSegmentsByteForByte(chunk: Int) throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let master = try open("master"), slave = try open("slave")
        try fill(master, count: 120, term: 3)
        let receiver = HAReceiver(store: slave, onReset: { _ in })
        var last: LogIndex?
        for (p, bytes) in try stream(master, from: 0, chunk: chunk) {
            if let w = try receiver.receive(position: p, bytes) { last = w.lastIndex }
        }
        #expect(last == master.lastIndex)
        #expect(slave.writePosition == master.writePosition && slave.lastChainCRC == master.lastChainCRC)
        let m = try files("master")
        #expect(m.count >= 3, "the test wants several segments (and their blank ends)")
        #expect(m == (try files("slave")))
        // More entries later continue the same stream.
        let from = master.fileEndPosition.rawValue
        try fill(master, count: 10, term: 4)
        for (p, bytes) in try stream(master, from: from, chunk: chunk) { _ = try receiver.receive(position: p, bytes) }
        let (m2, s2) = (try files("master"), try files("slave"))
        #expect(m2 == s2)
    }

    @Test func aStreamFromADifferentHistoryIsRefusedAndNothingIsWritten() throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let master = try open("master"), slave = try open("slave")
        try fill(master, count: 20, term: 2)
        try fill(slave, count: 10, term: 2, seed: 9)  // same sizes, other bytes
        let before = try files("slave")
        let receiver = HAReceiver(store: slave, onReset: { _ in })
        let end = slave.writePosition.rawValue
        var refused: HAError?
        do {
            for (p, bytes) in try stream(master, from: end, chunk: 4_096) { _ = try receiver.receive(position: p, bytes) }
        } catch { refused = error as? HAError }
        guard case .diverged(let why) = refused else { Issue.record("not refused: \(String(describing: refused))"); return }
        #expect(why.contains("chain"), "\(why)")
        let after = try files("slave")
        #expect(slave.lastIndex == LogIndex(9) && after == before)
    }

    @Test func aStreamThatSkipsOrRepeatsBytesIsRefused() throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let master = try open("master"), slave = try open("slave")
        try fill(master, count: 5, term: 1)
        let receiver = HAReceiver(store: slave, onReset: { _ in })
        #expect(throws: HAError.self) { _ = try receiver.receive(position: 48, [1, 2, 3]) }
        let chunks = try stream(master, from: 0, chunk: 100_000)
        _ = try receiver.receive(position: chunks[0].0, chunks[0].1)
        #expect(throws: HAError.self) { _ = try receiver.receive(position: 0, chunks[0].1) }
    }

    @Test func anEmptySlaveStartsFromTheMastersBaseAndANonEmptyOneRefusesIt() throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let master = try open("master")
        try fill(master, count: 60, term: 5)
        #expect(try master.deletePrefix(before: LogIndex(40)) >= 1)
        let base = try #require(master.base)
        #expect(HAWire.decodeBase(HAWire.encodeBase(base)) == base)

        let slave = try open("slave")
        var resetTo: LogBase?
        let receiver = HAReceiver(store: slave, onReset: { resetTo = $0 })
        try receiver.receiveBase(base)
        #expect(resetTo == base)
        for (p, bytes) in try stream(master, from: base.position.rawValue, chunk: 5_000) { _ = try receiver.receive(position: p, bytes) }
        #expect(slave.firstIndex == master.firstIndex && slave.lastIndex == master.lastIndex && slave.lastChainCRC == master.lastChainCRC)
        let (m, s) = (try files("master"), try files("slave"))
        #expect(m == s)

        let other = try open("other")
        try fill(other, count: 3, term: 1)
        #expect(throws: HAError.self) { try HAReceiver(store: other, onReset: { _ in }).receiveBase(base) }
        #expect(other.lastIndex == LogIndex(2))
    }

    @Test func aSlaveWithAnotherSegmentSizeRefusesTheStreamAndKeepsItsLog() throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let master = try open("master"), slave = try open("slave", segmentBytes: 24 << 10)
        try fill(master, count: 40, term: 1)
        let receiver = HAReceiver(store: slave, onReset: { _ in })
        var refused: HAError?
        do {
            for (p, bytes) in try stream(master, from: 0, chunk: 32 << 10) { _ = try receiver.receive(position: p, bytes) }
        } catch { refused = error as? HAError }
        guard case .diverged(let why) = refused else { Issue.record("not refused: \(String(describing: refused))"); return }
        #expect(why.contains("mappedFileSizeCommitLog"), "\(why)")
        // Only entries the master placed where this slave places them remain.
        let kept = try #require(slave.lastIndex)
        #expect(try slave.read(from: LogIndex(0), maxBytes: 1 << 20).count == Int(kept.rawValue) + 1)
        #expect(try slave.term(at: kept) == Term(1))
    }

    /// Fuzz finding (FuzzHAStream): an entry that does not chain, sent to an empty slave, trapped on
    /// an arithmetic underflow while the refusal was being worded. Now it is refused like any other.
    @Test func aNonChainingFirstEntryToAnEmptySlaveIsRefusedNotATrap() throws {
        defer { try? FileManager.default.removeItem(atPath: root) }
        let slave = try open("slave")
        var entry = LogEntryCodec.encode(index: LogIndex(0), term: Term(1), position: LogPosition(0), body: [1, 2, 3], previousChainCRC: 0)
        entry[36] ^= 0xFF  // the chain CRC
        var refused: HAError?
        do { _ = try HAReceiver(store: slave, onReset: { _ in }).receive(position: 0, entry) } catch { refused = error }
        guard case .diverged(let why) = refused else { Issue.record("not refused: \(String(describing: refused))"); return }
        #expect(why.contains("does not chain"))
        #expect(slave.lastIndex == nil)
    }
}
