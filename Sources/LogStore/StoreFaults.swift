import Glibc
import Synchronization

/// Disk faults injected into the store's file I/O, for the fault-injection suite (`mqbench chaos`).
/// Off unless the process starts with `RAFTMQ_FAULTS` naming a control file; then a thread reads that
/// file every 50 ms. Its lines (`key=value`, a missing file means no fault):
/// - `syncDelayMs=N`: every fdatasync/fsync takes N ms longer (a slow disk);
/// - `diskFull=1`: every write fails with ENOSPC, as on a full disk.
/// Production never sets the variable, and then every check below is one relaxed atomic load.
public enum StoreFaults {
    static let syncDelayMs = Atomic<Int>(0)
    static let diskFull = Atomic<Bool>(false)
    private static let watching = Atomic<Bool>(false)
    /// Tests: writes to files under these prefixes succeed a number of times more, then fail with
    /// ENOSPC (a disk that fills up at a chosen write). Scoped by path so parallel tests are unaffected.
    static let scopedWrites = ScopedCountdown()
    /// Tests: syncs of files under these prefixes succeed a number of times more, then fail with EIO
    /// (a disk whose writeback failed).
    static let scopedSyncs = ScopedCountdown()

    /// Tests: from now on, writes to paths starting with `prefix` (a directory and its slash, or a
    /// file name's start) succeed `successes` more times and then fail with ENOSPC until
    /// `clearDiskFull(under:)`.
    static func fillDisk(under prefix: String, afterWrites successes: Int) { scopedWrites.arm(prefix, after: successes) }
    static func clearDiskFull(under prefix: String) { scopedWrites.clear(prefix) }

    /// Tests: from now on, fdatasync and fsync of paths starting with `prefix` succeed `successes`
    /// more times and then fail with EIO until `clearSyncFailures(under:)`.
    static func failSyncs(under prefix: String, afterSyncs successes: Int) { scopedSyncs.arm(prefix, after: successes) }
    static func clearSyncFailures(under prefix: String) { scopedSyncs.clear(prefix) }

    /// Starts the watcher once per process if `RAFTMQ_FAULTS` is set.
    public static func startIfConfigured() {
        guard let raw = getenv("RAFTMQ_FAULTS") else { return }
        let path = String(cString: raw)
        guard !path.isEmpty, watching.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged else { return }
        load(path)
        startThread {
            while true {
                usleep(50_000)
                load(path)
            }
        }
    }

    static func load(_ path: String) {
        var delay = 0, full = false
        if let bytes = try? FileIO.readFile(path) {
            for line in String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline) {
                let kv = line.split(separator: "=", maxSplits: 1).map { faultTrim($0) }
                guard kv.count == 2 else { continue }
                switch kv[0] {
                case "syncDelayMs": delay = max(0, Int(kv[1]) ?? 0)
                case "diskFull": full = kv[1] == "1" || kv[1] == "true"
                default: continue
                }
            }
        }
        syncDelayMs.store(delay, ordering: .relaxed)
        diskFull.store(full, ordering: .relaxed)
    }

    /// Before a write: fails as a full disk does while `diskFull` is set.
    @inline(__always)
    static func beforeWrite(path: String) throws(StorageError) {
        if diskFull.load(ordering: .relaxed) || scopedWrites.fails(path) { throw .io(operation: "pwrite", path: path, errno: ENOSPC) }
    }

    /// Before a sync: sleeps while `syncDelayMs` is set; fails as a failed writeback does where a
    /// test asked for it.
    @inline(__always)
    static func beforeSync(_ operation: String, path: String) throws(StorageError) {
        let ms = syncDelayMs.load(ordering: .relaxed)
        if ms > 0 { usleep(UInt32(ms) * 1_000) }
        if scopedSyncs.fails(path) { throw .io(operation: operation, path: path, errno: EIO) }
    }
}

/// Tests' faults scoped by path prefix: each prefix lets a number of operations more succeed, then
/// every later one fails until cleared. Where armed prefixes overlap (a node's directory and its
/// commitlog inside it), the longest one that matches counts the operation, so which fault applies
/// never depends on a dictionary's order. One relaxed load while none is armed.
final class ScopedCountdown: Sendable {
    private let left = Mutex<[String: Int]>([:])
    private let armed = Atomic<Bool>(false)

    func arm(_ prefix: String, after successes: Int) {
        left.withLock { $0[prefix] = max(0, successes) }
        armed.store(true, ordering: .relaxed)
    }

    func clear(_ prefix: String) {
        left.withLock {
            $0[prefix] = nil
            armed.store(!$0.isEmpty, ordering: .relaxed)
        }
    }

    /// Whether this operation on `path` fails (counting it down if it does not).
    @inline(__always)
    func fails(_ path: String) -> Bool {
        guard armed.load(ordering: .relaxed) else { return false }
        return left.withLock { m -> Bool in
            guard let key = Self.match(path, in: m.keys), let n = m[key] else { return false }
            if n == 0 { return true }
            m[key] = n - 1
            return false
        }
    }

    /// The longest of `prefixes` that `path` starts with.
    static func match(_ path: String, in prefixes: some Sequence<String>) -> String? {
        prefixes.filter { path.hasPrefix($0) }.max { $0.utf8.count < $1.utf8.count }
    }
}

private func faultTrim(_ s: Substring) -> String {
    String(s.drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
}
