import Foundation
import LogFormat
import Testing
@testable import Broker
@testable import LogStore
import TestSupport

/// A disk that fills up while committed entries are dispatched: the consume queue write fails
/// half-way through a batch or a checkpoint's flush (some queues written, others not), the node
/// stops, and it starts again
/// from its last checkpoint. Whatever write failed, the consume queues after the restart and the
/// replay must be exactly those of a member that never saw a full disk, and so must the offsets.
@Suite(.ownThreads) struct DispatchDiskFullTests {
    /// Entries of three queues of two topics and consumer offsets, interleaved, in batches.
    static func workload() throws -> [[[UInt8]]] {
        var next: [QueueKey: Int64] = [:]
        var batches: [[[UInt8]]] = []
        var n = 0
        for b in 0..<12 {
            var entries: [[UInt8]] = []
            for k in 0..<6 {
                let key = [QueueKey("A", 0), QueueKey("A", 1), QueueKey("B", 0)][(b + k) % 3]
                let count = 1 + (b * 7 + k) % 3
                var body: [UInt8] = []
                for _ in 0..<count {
                    let o = next[key, default: 0]
                    next[key] = o + 1
                    body += try record(key.topic, queue: key.queueId, offset: o, body: "m\(n)", tags: n % 2 == 0 ? "TagA" : "TagB")
                    n += 1
                }
                entries.append(body)
            }
            entries.append(MetadataChange.offsets(["A@g": [0: Int64(b), 1: Int64(b * 2)]]).encoded())
            batches.append(entries)
        }
        return batches
    }

    static func queues(_ s: MessageStore) throws -> [QueueKey: [ConsumeQueue.Entry]] {
        var out: [QueueKey: [ConsumeQueue.Entry]] = [:]
        for key in s.queueKeys {
            guard let q = s.queue(key), q.maxOffset > q.minOffset else { out[key] = []; continue }
            out[key] = try q.read(from: q.minOffset, maxCount: Int(q.maxOffset - q.minOffset))
        }
        return out
    }

    /// Write-behind 1: every dispatch writes its queues, so the disk fills half-way through a batch;
    /// the default: queues write at the checkpoint's flush, where the disk fills instead.
    @Test(arguments: [false, true], [1, 200])
    func aFullDiskDuringDispatchLeavesNoShortOrDoubledQueueAfterARestart(checkpointAfterFailure: Bool, writeBehind: Int) throws {
        #expect(writeBehind == 1 || writeBehind == ConsumeQueue.writeBehindEntries, "the arguments: every write, or the default")
        let batches = try Self.workload()
        let reference = try StoreFixture()
        for b in batches { try reference.store.dispatch(upTo: try reference.append(b).last!) }
        let expected = try Self.queues(reference.store)
        #expect(expected.values.map(\.count).reduce(0, +) > 40)

        var failedAt: [Int] = []
        var failedInDispatch = 0
        for successes in 0..<40 {
            let f = try StoreFixture(writeBehind: writeBehind)
            // The first half dispatched and checkpointed, then the disk fills during the rest.
            for b in batches.prefix(4) { try f.store.dispatch(upTo: try f.append(b).last!) }
            try f.store.checkpoint()
            let prefix = f.root + "/consumequeue/"
            StoreFaults.fillDisk(under: prefix, afterWrites: successes)
            var failed = false
            for b in batches.dropFirst(4) {
                let last = try f.append(b).last!
                if failed { continue }
                do { try f.store.dispatch(upTo: last) } catch { failed = true; failedInDispatch += 1 }
                if checkpointAfterFailure || !failed {
                    do { try f.store.checkpoint() } catch { failed = true }
                }
            }
            StoreFaults.clearDiskFull(under: prefix)
            if failed { failedAt.append(successes) }
            try f.reopen()
            try f.store.dispatch(upTo: Int64(f.log.lastIndex!.rawValue))
            let got = try Self.queues(f.store)
            #expect(got == expected, "full after \(successes) consume-queue writes (dispatch failed: \(failed))")
            for key in expected.keys {
                #expect(f.store.maxOffset(key) == reference.store.maxOffset(key) && f.store.minOffset(key) == 0, "\(key) after \(successes) writes")
            }
            #expect(f.store.consumerOffsets(group: "g") == reference.store.consumerOffsets(group: "g"))
            #expect(f.store.dispatchedIndex == reference.store.dispatchedIndex)
        }
        #expect(failedAt.count >= 10, "the disk filled during dispatch or a checkpoint only \(failedAt.count) times")
        if writeBehind == 1 { #expect(failedInDispatch >= 10, "the disk filled during dispatch only \(failedInDispatch) times") }
    }

    /// A pull while the log cannot be read (a store that stopped on a failed write, or closed while
    /// the node stops) must not step over the messages it could not read: the hour-long chaos run
    /// lost one acknowledged message to a consumer that was told to go on past it.
    @Test func aMessageThatCannotBeReadIsNeverSteppedOver() throws {
        let f = try StoreFixture()
        let i = try f.append((0..<3).map { try record("T", offset: Int64($0)) })
        try f.store.dispatch(upTo: i.last!)
        let key = QueueKey("T", 0)
        #expect(f.store.getMessages(key, offset: 1, maxCount: 32, matches: { _ in true }).count == 2)
        // The log's checkpoint cannot be written: the store stops and refuses reads from then on.
        let full = f.root + "/commitlog/checkpoint"
        StoreFaults.fillDisk(under: full, afterWrites: 0)
        defer { StoreFaults.clearDiskFull(under: full) }
        let deadline = Date().addingTimeInterval(20)
        var n: Int64 = 3
        while (try? f.log.readBytes(at: 0, count: 1)) != nil && Date() < deadline {
            _ = try? f.append([try record("T", offset: n)])
            n += 1
            Thread.sleep(forTimeInterval: 0.05)
        }
        try #require(throws: (any Error).self, "the store never stopped") { try f.log.readBytes(at: 0, count: 1) }
        for offset: Int64 in [0, 1, 2] {
            let r = f.store.getMessages(key, offset: offset, maxCount: 32, matches: { _ in true })
            #expect(r.count == 0 && r.nextBeginOffset == offset && r.status == .offsetFoundNull,
                    "at \(offset): \(r.status) next \(r.nextBeginOffset)")
        }
        // Filtered-out messages are still stepped over: that needs no read.
        let none = f.store.getMessages(key, offset: 0, maxCount: 32, matches: { _ in false })
        #expect(none.status == .noMatchedMessage && none.nextBeginOffset == 3)
    }
}
