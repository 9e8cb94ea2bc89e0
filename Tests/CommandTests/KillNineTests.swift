import Foundation
import LogFormat
import LogStore
import Testing
import TestSupport

/// `kill -9` at any moment loses nothing that was acknowledged and never leaves a store that fails
/// to start: a real process appends from 16 tasks and is SIGKILLed mid-stream, repeatedly, on the same
/// store.
@Suite(.ownThreads) struct KillNineTests {
    @Test(arguments: ["sync", "async"])
    func acknowledgedEntriesSurviveSIGKILL(mode: String) throws {
        let dir = NSTemporaryDirectory() + "raftmq-kill9-\(mode)-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var acknowledged: [UInt64: UInt32] = [:]
        for round in 0..<4 {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Executable("storewriter").path)
            process.arguments = [dir, mode, "16"]
            let out = Pipe()
            process.standardOutput = out
            process.standardError = FileHandle.nullDevice
            try process.run()
            // Read acknowledgements until a round-dependent count, then kill without warning.
            let target = 500 + round * 1500
            var buffer = Data()
            var lines = 0
            let deadline = Date().addingTimeInterval(30)
            while lines < target && Date() < deadline {
                let chunk = out.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                buffer.append(chunk)
                lines = buffer.reduce(0) { $0 + ($1 == 10 ? 1 : 0) }
            }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            buffer.append(out.fileHandleForReading.readDataToEndOfFile())
            for line in String(decoding: buffer, as: UTF8.self).split(separator: "\n") where line.hasPrefix("ack ") {
                let parts = line.split(separator: " ")
                // A line cut by the kill has no checksum yet; it does not count as acknowledged.
                guard parts.count == 3, let index = UInt64(parts[1]), let crc = UInt32(parts[2]) else { continue }
                acknowledged[index] = crc
            }
            #expect(lines >= target, "round \(round): the writer acknowledged only \(lines) entries")
        }
        let store = try LogStore.open(LogStoreOptions(directory: dir, segmentBytes: 1 << 20, indexFileBytes: 32 * 1024, entryBodyBytesMax: 2048, diskMaxUsedSpaceRatio: 99))
        defer { try? store.close() }
        let last = try #require(store.lastIndex)
        #expect(acknowledged.count >= 300)
        var next = store.firstIndex
        var found: [UInt64: UInt32] = [:]
        while next <= last {
            let batch = try store.read(from: next, maxBytes: 1 << 20)
            for e in batch { found[e.index.rawValue] = CRC32C.checksum(e.body) }
            next = LogIndex(batch.last!.index.rawValue + 1)
        }
        for (index, crc) in acknowledged {
            #expect(found[index] == crc, "acknowledged entry \(index) lost or changed after SIGKILL")
        }
    }
}
