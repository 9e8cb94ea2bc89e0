import ClassicHA
import Foundation
import LogFormat
import LogStore

/// A slave taking a fuzzed HA stream: the input is cut into transfers (a 2-byte length before each);
/// each is written or refused with an HAError, and what the slave holds always reads back.
let root = NSTemporaryDirectory() + "raftmq-fuzz-ha-\(getpid())"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let fm = FileManager.default
    try? fm.removeItem(atPath: root)
    let options = LogStoreOptions(directory: root, segmentBytes: 16 << 10, indexFileBytes: 32 * 1024,
                                  entryBodyBytesMax: 4 << 10, diskUsage: { _ throws(StorageError) in 0.1 })
    guard let store = try? LogStore.open(options) else { fatalError("cannot open an empty store") }
    let receiver = HAReceiver(store: store, onReset: { _ in })
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    var at = 0
    while at + 2 <= input.count {
        let n = min(Int(input[at]) << 8 | Int(input[at + 1]), input.count - at - 2)
        let chunk = Array(input[(at + 2)..<(at + 2 + n)])
        at += 2 + n
        do { _ = try receiver.receive(position: receiver.streamEnd, chunk) } catch { break }
    }
    if let last = store.lastIndex {
        guard let entries = try? store.read(from: store.firstIndex, maxBytes: 1 << 20), entries.last?.index == last else {
            fatalError("the slave wrote entries it cannot read back")
        }
    }
    try? store.close()
    return 0
}
