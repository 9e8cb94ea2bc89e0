import Foundation
import LogFormat
import LogStore

/// Store recovery over a fuzzed segment file: the store opens (keeping a verified prefix, every entry
/// of which reads back) or refuses with a StorageError; never a crash or a hang.
let root = NSTemporaryDirectory() + "raftmq-fuzz-recovery-\(getpid())"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let fm = FileManager.default
    try? fm.removeItem(atPath: root)
    try! fm.createDirectory(atPath: root + "/data", withIntermediateDirectories: true)
    let segmentBytes = 64 << 10
    var bytes = Array(UnsafeBufferPointer(start: data, count: min(size, segmentBytes)))
    bytes += [UInt8](repeating: 0, count: segmentBytes - bytes.count)
    _ = fm.createFile(atPath: root + "/data/00000000000000000000", contents: Data(bytes))
    let options = LogStoreOptions(directory: root, segmentBytes: UInt64(segmentBytes), indexFileBytes: 32 * 1024,
                                  entryBodyBytesMax: 32 << 10, diskUsage: { _ throws(StorageError) in 0.1 })
    guard let store = try? LogStore.open(options) else { return 0 }
    if let last = store.lastIndex {
        guard let entries = try? store.read(from: store.firstIndex, maxBytes: 1 << 20),
              entries.count == Int(last.rawValue - store.firstIndex.rawValue) + 1 else {
            fatalError("recovery kept entries it cannot read back")
        }
    }
    try? store.close()
    return 0
}
