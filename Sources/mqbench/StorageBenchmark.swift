import ArgumentParser
import Glibc
import LogFormat
import LogStore

/// Append throughput and latency of the commitlog beside the raw limits of the same disk, measured in
/// one run (the machine is shared: compare ratios, not absolute numbers).
struct StorageBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage",
        abstract: "Commitlog append and recovery throughput against the disk's own limits.")

    @Option(help: "Scratch directory (removed afterwards). Must be on the disk to measure.")
    var dir: String = "./.build/mqbench-storage"

    @Option(help: "Body bytes per entry.")
    var entryBytes: Int = 1024

    @Option(help: "Seconds per measurement (split over the rounds).")
    var duration: Double = 6

    @Option(help: "Rounds: each baseline and the store run it is compared with alternate this many times, so slow drift of a shared disk hits both alike.")
    var rounds: Int = 3

    @Option(help: "Concurrent appenders for the SYNC_FLUSH runs, comma-separated.")
    var concurrency: String = "1,16,64"

    @Option(help: "Megabytes written for the recovery scan measurement.")
    var recoveryMegabytes: Int = 512

    @Option(help: "Segment size in bytes.")
    var segmentBytes: UInt64 = 1 << 30

    @Option(help: "Megabytes of zeros the store keeps written ahead of its end (the broker's warmMapedFileEnable keeps 16; 0: segments grow as written).")
    var prepareAheadMegabytes: UInt64 = 16

    @Flag(help: "Print one JSON object with every figure at the end.")
    var json = false

    /// Upper bound on latency samples kept per run (a named limit, not "unlimited").
    static let latencySamplesMax = 4_000_000

    func run() async throws {
        let levels = concurrency.split(separator: ",").compactMap { Int($0) }
        guard !levels.isEmpty, levels.allSatisfy({ $0 > 0 && $0 <= 1024 }) else {
            throw ValidationError("--concurrency takes positive integers up to 1024")
        }
        removeTree(dir)
        try ensureDirectory(dir)
        defer { removeTree(dir) }
        guard (1...20).contains(rounds) else { throw ValidationError("--rounds takes 1...20") }
        var results: [Measurement] = []
        func record(_ m: Measurement) {
            if let i = results.firstIndex(where: { $0.key == m.key }) { results[i].merge(m) } else { results.append(m) }
        }
        let entryTotal = entryBytes + EntryHeader.byteCount
        let slice = duration / Double(rounds)
        let asyncAppenders = levels.max() ?? 1
        for _ in 0..<rounds {
            // Each baseline right before the store run it is compared with: the disk's synchronous
            // write rate for one appender, group commit by hand (N entries per fdatasync) for N.
            for level in levels {
                record(try RawDisk.run(name: level == 1 ? "raw pwrite+fdatasync, 1 entry per sync" : "raw pwrite+fdatasync, \(level) entries per sync", path: dir + "/raw\(level)", writeBytes: entryTotal * level, duration: slice, entriesPerWrite: level))
                record(try await StoreRun.run(name: "LogStore SYNC_FLUSH, \(level) appenders", directory: dir + "/sync\(level)", mode: .sync, appenders: level, entryBytes: entryBytes, segmentBytes: segmentBytes, prepareAheadBytes: prepareAheadMegabytes << 20, duration: slice))
            }
            // The largest group also on a file written with zeros beforehand: every sync is an
            // overwrite with no file metadata to commit, the best this disk does (the store's
            // segments grow like the plain baseline's file; BENCHMARKS.md, "the file's layout").
            record(try RawDisk.run(name: "raw pwrite+fdatasync, \(asyncAppenders) entries per sync, zero-filled file", path: dir + "/rawZeroed", writeBytes: entryTotal * asyncAppenders, duration: slice, entriesPerWrite: asyncAppenders, zeroFilledBytes: min(1 << 30, max(64 << 20, Int(slice * 800e6)) & ~0xFFFFF)))
            record(try await StoreRun.run(name: "LogStore ASYNC_FLUSH, \(asyncAppenders) appenders", directory: dir + "/async", mode: .rocketMQAsyncDefault, appenders: asyncAppenders, entryBytes: entryBytes, segmentBytes: segmentBytes, prepareAheadBytes: prepareAheadMegabytes << 20, duration: slice))
        }
        results.sort { $0.order < $1.order }
        results.append(contentsOf: try await RecoveryRun.run(directory: dir + "/recovery", megabytes: recoveryMegabytes, entryBytes: entryBytes, segmentBytes: segmentBytes))

        print("")
        print(Measurement.tableHeader)
        for r in results { print(r.tableRow) }
        var ratios: [(String, Double)] = []
        for level in levels {
            let raw = results.first { $0.name == (level == 1 ? "raw pwrite+fdatasync, 1 entry per sync" : "raw pwrite+fdatasync, \(level) entries per sync") }
            let store = results.first { $0.name == "LogStore SYNC_FLUSH, \(level) appenders" }
            if let raw, let store, raw.megabytesPerSecond > 0 {
                ratios.append(("sync\(level)_vs_raw", store.megabytesPerSecond / raw.megabytesPerSecond))
            }
        }
        let top = asyncAppenders
        if let zeroed = results.first(where: { $0.key == "rawZeroed\(top)" }), let store = results.first(where: { $0.key == "sync\(top)" }), zeroed.megabytesPerSecond > 0 {
            ratios.append(("sync\(top)_vs_rawZeroed", store.megabytesPerSecond / zeroed.megabytesPerSecond))
        }
        if let raw = results.first(where: { $0.key == "rawReadCold" }), let scan = results.first(where: { $0.key == "recoveryCold" }), raw.megabytesPerSecond > 0 {
            ratios.append(("recoveryCold_vs_rawRead", scan.megabytesPerSecond / raw.megabytesPerSecond))
        }
        print("")
        for (name, value) in ratios { print("ratio \(name): \(format(value, 2))") }
        if json {
            var fields = results.map { "\"\($0.key)\":\($0.json)" }
            fields += ratios.map { "\"\($0.0)\":\(format($0.1, 3))" }
            print("{" + fields.joined(separator: ",") + "}")
        }
    }
}

/// One measured configuration.
struct Measurement {
    var name: String
    var key: String
    var operations: Int
    var bytes: UInt64
    var seconds: Double
    var latenciesMs: [Double]
    var syncs: Int?

    /// Adds another round of the same measurement.
    mutating func merge(_ other: Measurement) {
        precondition(other.key == key, "merging different measurements")
        operations += other.operations
        bytes += other.bytes
        seconds += other.seconds
        latenciesMs += other.latenciesMs
        if let s = other.syncs { syncs = (syncs ?? 0) + s }
    }

    /// Table order: baselines, then SYNC_FLUSH, then ASYNC_FLUSH, each by concurrency.
    var order: Int {
        let digits = Int(key.filter(\.isNumber)) ?? 0
        let group = key.hasPrefix("raw") ? 0 : key.hasPrefix("sync") ? 1 : 2
        let variant = key.contains("Zeroed") ? 1 : 0
        return group * 100_000 + digits * 2 + variant
    }

    var operationsPerSecond: Double { Double(operations) / seconds }
    var megabytesPerSecond: Double { Double(bytes) / seconds / 1_000_000 }

    func percentile(_ p: Double) -> Double? {
        guard !latenciesMs.isEmpty else { return nil }
        let sorted = latenciesMs.sorted()
        return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
    }

    static let tableHeader = "| run | ops/s | MB/s | p50 ms | p99 ms | p99.9 ms | max ms | entries/sync |\n|---|---:|---:|---:|---:|---:|---:|---:|"

    var tableRow: String {
        func ms(_ v: Double?) -> String { v.map { format($0, 3) } ?? "-" }
        let perSync = syncs.map { $0 > 0 ? format(Double(operations) / Double($0), 1) : "-" } ?? "-"
        return "| \(name) | \(format(operationsPerSecond, 0)) | \(format(megabytesPerSecond, 1)) | \(ms(percentile(0.5))) | \(ms(percentile(0.99))) | \(ms(percentile(0.999))) | \(ms(latenciesMs.max())) | \(perSync) |"
    }

    var json: String {
        func j(_ v: Double?) -> String { v.map { format($0, 4) } ?? "null" }
        return "{\"opsPerSec\":\(format(operationsPerSecond, 1)),\"mbPerSec\":\(format(megabytesPerSecond, 2)),\"p50Ms\":\(j(percentile(0.5))),\"p99Ms\":\(j(percentile(0.99))),\"p999Ms\":\(j(percentile(0.999))),\"maxMs\":\(j(latenciesMs.max()))}"
    }
}

func format(_ v: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let r = (v * scale).rounded() / scale
    var s = String(r)
    if decimals == 0, s.hasSuffix(".0") { s.removeLast(2) }
    return s
}

/// Monotonic seconds.
func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

func ensureDirectory(_ path: String) throws {
    var current = path.hasPrefix("/") ? "" : "."
    for c in path.split(separator: "/") {
        current += "/" + c
        if mkdir(current, 0o755) != 0 && errno != EEXIST { throw ValidationError("cannot create \(current): errno \(errno)") }
    }
}

func removeTree(_ path: String) {
    guard let d = opendir(path) else { _ = unlink(path); return }
    while let e = readdir(d) {
        let name = withUnsafePointer(to: e.pointee.d_name) { $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) } }
        if name == "." || name == ".." { continue }
        let child = path + "/" + name
        var st = stat()
        if lstat(child, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR { removeTree(child) } else { _ = unlink(child) }
    }
    closedir(d)
    _ = rmdir(path)
}
