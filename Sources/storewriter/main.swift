// storewriter: appends to a LogStore from many tasks and prints each acknowledged entry's index and
// body checksum, one line each, flushed at once. The crash tests run it, SIGKILL it at a random
// moment, and check that every entry it printed is in the store after reopening. Not installed.
import Glibc
import LogFormat
import LogStore

/// One whole line per write(2), so a SIGKILL can cut the output only between lines or inside one.
func emit(_ line: String, to fd: Int32 = 1) {
    var text = line + "\n"
    text.withUTF8 { _ = write(fd, $0.baseAddress, $0.count) }
}

let arguments = CommandLine.arguments
guard arguments.count == 4, let appenders = Int(arguments[3]), appenders > 0 else {
    emit("usage: storewriter DIR sync|async APPENDERS", to: 2)
    exit(2)
}
let mode: FlushMode = arguments[2] == "sync" ? .sync : .async(intervalMs: 20, leastBytes: 4096, thoroughIntervalMs: 100)
let store = try LogStore.open(LogStoreOptions(directory: arguments[1], segmentBytes: 1 << 20, indexFileBytes: 32 * 1024, flushMode: mode, entryBodyBytesMax: 2048, diskMaxUsedSpaceRatio: 99))
emit("recovered \(store.lastIndex.map { String($0.rawValue) } ?? "none")")
try await withThrowingTaskGroup(of: Void.self) { group in
    for task in 0..<appenders {
        group.addTask {
            var i = 0
            while true {
                let body = Array("task \(task) entry \(i) ".utf8) + [UInt8](repeating: UInt8(truncatingIfNeeded: i), count: (i * 37) % 1500)
                let r = try await store.append([EntryToAppend(term: Term(1), body: body)])
                emit("ack \(r.firstIndex.rawValue) \(CRC32C.checksum(body))")
                i += 1
            }
        }
    }
    try await group.waitForAll()
}
