import Foundation
import LogFormat
import TestSupport

@testable import LogStore

/// A scratch directory removed when the test ends.
final class TempDirectory {
    let path: String
    init(_ name: String = #function) {
        let base = FileManager.default.temporaryDirectory.path + "/raftmq-test-" + name.filter { $0.isLetter || $0.isNumber } + "-" + UUID().uuidString.prefix(8)
        try! FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        path = base
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }

    /// A copy of the store directory as it is on disk right now: what a crash would leave behind.
    func snapshot(_ store: String, to name: String) -> String {
        let dest = path + "/" + name
        try? FileManager.default.removeItem(atPath: dest)
        try! FileManager.default.copyItem(atPath: store, toPath: dest)
        try? FileManager.default.removeItem(atPath: dest + "/lock")
        return dest
    }
}


func smallOptions(_ dir: String, flush: FlushMode = .sync, segmentBytes: UInt64 = 4096, diskUsage: Double = 0.1) -> LogStoreOptions {
    LogStoreOptions(
        directory: dir, segmentBytes: segmentBytes, indexFileBytes: 32 * 64, flushMode: flush, entryBodyBytesMax: 1024,
        checkpointIntervalMs: 3_600_000, diskMaxUsedSpaceRatio: 75, firstIndexOfEmptyStore: LogIndex(0),
        diskUsage: { _ in diskUsage })
}

/// ASYNC_FLUSH with intervals long enough that nothing is flushed unless the test asks.
let manualFlush = FlushMode.async(intervalMs: 3_600_000, leastBytes: Int.max / 2, thoroughIntervalMs: 3_600_000)

func randomBody(_ rng: inout SplitMix64, _ range: ClosedRange<Int> = 1...300) -> [UInt8] {
    (0..<Int.random(in: range, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
}

func readAll(_ store: LogStore) throws -> [LogEntry] {
    guard let last = store.lastIndex else { return [] }
    var out: [LogEntry] = []
    var next = store.firstIndex
    while next <= last {
        let batch = try store.read(from: next, maxBytes: 1500)
        precondition(!batch.isEmpty, "read returned nothing")
        out += batch
        next = LogIndex(batch.last!.index.rawValue + 1)
    }
    return out
}

func fileSize(_ path: String) -> UInt64 {
    (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? UInt64) ?? 0
}

func segmentFiles(_ dir: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/data")) ?? []).sorted().map { dir + "/data/" + $0 }
}

func truncateFile(_ path: String, to size: UInt64) {
    let h = FileHandle(forWritingAtPath: path)!
    try! h.truncate(atOffset: size)
    try! h.close()
}

func flipBit(_ path: String, at offset: UInt64, bit: Int) {
    let h = FileHandle(forUpdatingAtPath: path)!
    try! h.seek(toOffset: offset)
    var byte = h.readData(ofLength: 1)
    byte[0] ^= UInt8(1 << bit)
    try! h.seek(toOffset: offset)
    h.write(byte)
    try! h.close()
}
