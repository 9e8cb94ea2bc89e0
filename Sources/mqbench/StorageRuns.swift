import ArgumentParser
import Glibc
import LogFormat
import LogStore

/// The baseline: pwrite at the end of a growing file, then fdatasync, in a loop, one thread. With
/// `entriesPerWrite` > 1 this is group commit done by hand with no overhead at all.
enum RawDisk {
    /// `zeroFilledBytes` > 0: the file is first written with that many zeros and synced (not
    /// timed), and the loop stops at its end.
    static func run(name: String, path: String, writeBytes: Int, duration: Double, entriesPerWrite: Int = 1, zeroFilledBytes: Int = 0) throws -> Measurement {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ValidationError("open \(path): errno \(errno)") }
        defer { close(fd); unlink(path) }
        if zeroFilledBytes > 0 {
            let zeros = [UInt8](repeating: 0, count: 1 << 20)
            for at in stride(from: 0, to: zeroFilledBytes, by: zeros.count) {
                guard zeros.withUnsafeBytes({ pwrite(fd, $0.baseAddress, $0.count, off_t(at)) }) == zeros.count else { throw ValidationError("pwrite: errno \(errno)") }
            }
            guard fsync(fd) == 0 else { throw ValidationError("fsync: errno \(errno)") }
        }
        let buffer = [UInt8](repeating: 0x5A, count: writeBytes)
        var offset: off_t = 0
        var latencies: [Double] = []
        var writes = 0
        let start = now()
        var t = start
        while t - start < duration && latencies.count < StorageBenchmark.latencySamplesMax && (zeroFilledBytes == 0 || Int(offset) + writeBytes <= zeroFilledBytes) {
            let n = buffer.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, offset) }
            guard n == writeBytes else { throw ValidationError("pwrite: errno \(errno)") }
            guard fdatasync(fd) == 0 else { throw ValidationError("fdatasync: errno \(errno)") }
            offset += off_t(n)
            writes += 1
            let t2 = now()
            latencies.append((t2 - t) * 1000)
            t = t2
        }
        progress(name)
        return Measurement(
            name: name, key: (zeroFilledBytes > 0 ? "rawZeroed" : "raw") + "\(entriesPerWrite)", operations: writes * entriesPerWrite, bytes: UInt64(offset),
            seconds: t - start, latenciesMs: latencies, syncs: writes)
    }
}

/// Concurrent appenders against a LogStore, each appending one entry at a time and waiting for it.
enum StoreRun {
    static func run(name: String, directory: String, mode: FlushMode, appenders: Int, entryBytes: Int, segmentBytes: UInt64, prepareAheadBytes: UInt64, duration: Double) async throws -> Measurement {
        var options = LogStoreOptions(directory: directory, segmentBytes: segmentBytes, flushMode: mode, entryBodyBytesMax: max(entryBytes, 1024), diskMaxUsedSpaceRatio: 99)
        options.prepareAheadBytes = prepareAheadBytes
        let store = try LogStore.open(options)
        let body = [UInt8](repeating: 0xA5, count: entryBytes)
        let syncsBefore = store.statistics.dataSyncs
        let start = now()
        let deadline = start + duration
        let perTaskSamplesMax = StorageBenchmark.latencySamplesMax / appenders
        let all = try await withThrowingTaskGroup(of: [Double].self) { group in
            for _ in 0..<appenders {
                group.addTask {
                    let batch = [EntryToAppend(term: Term(1), body: body)]
                    var latencies: [Double] = []
                    latencies.reserveCapacity(min(perTaskSamplesMax, 1 << 16))
                    var t = now()
                    while t < deadline && latencies.count < perTaskSamplesMax {
                        _ = try await store.append(batch)
                        let t2 = now()
                        latencies.append((t2 - t) * 1000)
                        t = t2
                    }
                    return latencies
                }
            }
            var merged: [Double] = []
            for try await part in group { merged += part }
            return merged
        }
        let seconds = now() - start
        let stats = store.statistics
        let syncs = stats.dataSyncs - syncsBefore
        if mode == .sync && syncs > 0 {
            let per = { (ns: UInt64) in format(Double(ns) / Double(syncs) / 1000, 1) }
            progress("\(name): per group commit: fdatasync \(per(stats.syncNanoseconds)) us, waiting for the group \(per(stats.groupWaitNanoseconds)) us, resuming appenders \(per(stats.resumeNanoseconds)) us")
        }
        try store.close()
        removeTree(directory)
        progress(name)
        let key = (mode == .sync ? "sync" : "async") + String(appenders)
        return Measurement(
            name: name, key: key, operations: all.count, bytes: UInt64(all.count * (entryBytes + EntryHeader.byteCount)),
            seconds: seconds, latenciesMs: all, syncs: mode == .sync ? syncs : nil)
    }
}

/// Recovery speed: write a log, drop the checkpoint so recovery verifies every entry of every
/// segment, and time `open`, first with the files in the page cache, then evicted from it.
enum RecoveryRun {
    static func run(directory: String, megabytes: Int, entryBytes: Int, segmentBytes: UInt64) async throws -> [Measurement] {
        let options = LogStoreOptions(directory: directory, segmentBytes: segmentBytes, flushMode: .rocketMQAsyncDefault, entryBodyBytesMax: max(entryBytes, 1024), diskMaxUsedSpaceRatio: 99)
        let store = try LogStore.open(options)
        let body = [UInt8](repeating: 0x3C, count: entryBytes)
        let entries = megabytes * 1_000_000 / (entryBytes + EntryHeader.byteCount)
        let batch = 256
        var written = 0
        while written < entries {
            let n = min(batch, entries - written)
            _ = try store.write(Array(repeating: EntryToAppend(term: Term(1), body: body), count: n))
            written += n
        }
        try store.close()
        var out: [Measurement] = []
        // The disk's own sequential read speed over the same files, cold.
        evictFromPageCache(directory + "/data")
        out.append(rawRead(directory + "/data"))
        for cold in [false, true] {
            unlink(directory + "/checkpoint")
            if cold { evictFromPageCache(directory + "/data") }
            let t = now()
            let reopened = try LogStore.open(options)
            let seconds = now() - t
            let report = reopened.recoveryReport
            precondition(report.scannedEntries == entries, "recovery scanned \(report.scannedEntries) of \(entries) entries")
            try reopened.close()
            let name = "recovery full scan, \(cold ? "cold (evicted from page cache)" : "warm page cache")"
            progress(name)
            out.append(Measurement(name: name, key: cold ? "recoveryCold" : "recoveryWarm", operations: report.scannedEntries, bytes: report.scannedBytes, seconds: seconds, latenciesMs: [], syncs: nil))
        }
        removeTree(directory)
        return out
    }

    /// Reads every file of `dir` with 4 MiB preads, nothing else.
    static func rawRead(_ dir: String) -> Measurement {
        var buffer = [UInt8](repeating: 0, count: 4 << 20)
        var total: UInt64 = 0
        let t = now()
        if let d = opendir(dir) {
            while let e = readdir(d) {
                let name = withUnsafePointer(to: e.pointee.d_name) { $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) } }
                if name.hasPrefix(".") { continue }
                let fd = open(dir + "/" + name, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { continue }
                var offset: off_t = 0
                while true {
                    let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
                    if n <= 0 { break }
                    offset += off_t(n)
                    total += UInt64(n)
                }
                close(fd)
            }
            closedir(d)
        }
        let name = "raw sequential read, cold (evicted from page cache)"
        progress(name)
        return Measurement(name: name, key: "rawReadCold", operations: 0, bytes: total, seconds: now() - t, latenciesMs: [], syncs: nil)
    }

    /// Asks the kernel to drop the files' cached pages (needs no privileges, unlike drop_caches).
    static func evictFromPageCache(_ dir: String) {
        guard let d = opendir(dir) else { return }
        defer { closedir(d) }
        while let e = readdir(d) {
            let name = withUnsafePointer(to: e.pointee.d_name) { $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) } }
            if name.hasPrefix(".") { continue }
            let fd = open(dir + "/" + name, O_RDONLY | O_CLOEXEC)
            if fd >= 0 {
                fdatasync(fd)
                posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
                close(fd)
            }
        }
    }
}

func progress(_ name: String) {
    var err = "done: \(name)\n"
    err.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
