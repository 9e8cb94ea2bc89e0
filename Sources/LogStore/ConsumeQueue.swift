import Glibc
import Synchronization

/// One RocketMQ consume queue (rocketmq-protocol.md §4.3): the 20-byte entries of one queue of one
/// topic, big-endian `commitLogOffset` (int64) | `size` (int32) | `tagsCode` (int64), logical offset n at
/// byte n x 20, in files of `fileBytes` named by the byte offset of their first entry (20 digits). A
/// queue whose first file starts at a non-zero logical offset has blank entries before its first
/// entry (offset 0, size Int32.max, tags 0), as RocketMQ writes them.
///
/// Built only from committed log entries, and rebuilt from the log on start: a consume queue is an
/// index, never the truth. Recovery therefore only finds where the entries end (the first all-zero
/// entry or a partial one) and the broker truncates what the log no longer holds
/// (`truncate(fromCommitLogOffset:)`) before dispatching again. That is also why appended entries
/// may wait in memory before they are written (`writeBehindEntries`).
public final class ConsumeQueue: Sendable {
    public struct Entry: Sendable, Equatable {
        public var commitLogOffset: Int64
        public var size: Int32
        public var tagsCode: Int64
        public init(commitLogOffset: Int64, size: Int32, tagsCode: Int64) {
            self.commitLogOffset = commitLogOffset
            self.size = size
            self.tagsCode = tagsCode
        }
        public static let blank = Entry(commitLogOffset: 0, size: Int32.max, tagsCode: 0)
        public var isBlank: Bool { self == .blank }
    }

    public static let entryBytes: UInt64 = 20

    struct State {
        var files: [SegmentFile]
        /// Logical offset of the first real (non-blank) entry.
        var minOffset: UInt64
        /// Logical offset the next entry gets.
        var maxOffset: UInt64
        var dirty: [SegmentFile] = []
        /// The last entries appended, logical offsets [tailStart, maxOffset): the reads that follow a
        /// write (a send's answer, consumers at the end of the queue) are served from memory.
        var tail: [Entry] = []
        var tailStart: UInt64 = 0
        /// Encoded entries appended but not yet written to a file: logical offsets
        /// [pendingStart, maxOffset). Fewer than `writeBehind` (all in `tail`, or blanks).
        var pending: [UInt8] = []
        var pendingStart: UInt64 = 0
        /// Where the files' entries end: everything before it is written to a file.
        var writtenEnd: UInt64 { pending.isEmpty ? maxOffset : pendingStart }
    }

    /// Entries kept in memory at the end of each queue written since open (between this many and
    /// twice as many; 24 bytes each).
    public static let tailEntries = 256

    /// Appended entries are written to the file once this many wait (or at `flush`), in one
    /// `pwrite`: a queue gets a few entries per dispatch, and a system call for each few was 0.3-0.4
    /// `pwrite`s per message on every member. Below `tailEntries`, so every entry not yet written
    /// is also in the tail, where reads find it; a crash loses only entries after the last
    /// checkpoint, which the broker dispatches again from the log anyway.
    public static let writeBehindEntries = 200

    public let directory: String
    public let fileBytes: UInt64
    /// This queue's `writeBehindEntries` (1: every append writes, as tests of failing writes want).
    public let writeBehind: Int
    private let state: Mutex<State>

    /// Opens (creating if needed) the queue in `directory`; `fileBytes` is a multiple of 20;
    /// `writeBehind` is between 1 and `writeBehindEntries`.
    public init(directory: String, fileBytes: UInt64, writeBehind: Int = ConsumeQueue.writeBehindEntries) throws(StorageError) {
        guard fileBytes >= Self.entryBytes, fileBytes % Self.entryBytes == 0 else {
            throw .invalidArgument("a consume queue file of \(fileBytes) bytes is not a positive multiple of 20")
        }
        guard (1...Self.writeBehindEntries).contains(writeBehind) else {
            throw .invalidArgument("a consume queue writes behind 1 to \(Self.writeBehindEntries) entries, not \(writeBehind)")
        }
        self.writeBehind = writeBehind
        self.directory = directory
        self.fileBytes = fileBytes
        try FileIO.makeDirectories(directory)
        var files: [SegmentFile] = []
        for name in try FileIO.listDirectory(directory) {
            guard let start = SegmentName.parse(name) else { continue }
            files.append(try SegmentFile(directory: directory, start: start, capacity: fileBytes, create: false))
        }
        files.sort { $0.start < $1.start }
        for (a, b) in zip(files, files.dropFirst()) where b.start != a.end {
            throw .layout("consume queue files \(a.path) and \(b.path) are not contiguous; was mappedFileSizeConsumeQueue changed?")
        }
        var minOffset: UInt64 = 0, maxOffset: UInt64 = 0
        if let first = files.first {
            minOffset = first.start / Self.entryBytes
            maxOffset = minOffset
            // Where the entries end: scan the last file (every earlier one is full).
            let last = files[files.count - 1]
            let ends = try Self.scanEnd(last)
            maxOffset = (last.start + ends) / Self.entryBytes
            // Blank entries before the first real one (they fill the first file's head only), read
            // in chunks: usually the first entry is real.
            let headEnd = min(minOffset + fileBytes / Self.entryBytes, maxOffset)
            while minOffset < headEnd {
                let chunk = try Self.readEntries(files, from: minOffset, count: Int(min(4_096, headEnd - minOffset)))
                if chunk.isEmpty { break }
                if let k = chunk.firstIndex(where: { !$0.isBlank }) {
                    minOffset += UInt64(k)
                    break
                }
                minOffset += UInt64(chunk.count)
            }
        }
        state = Mutex(State(files: files, minOffset: minOffset, maxOffset: maxOffset))
    }

    /// Bytes of whole entries at the start of `file` (before the first all-zero or partial entry).
    private static func scanEnd(_ file: SegmentFile) throws(StorageError) -> UInt64 {
        let size = min(try file.fileSize(), file.capacity)
        var buffer = [UInt8](repeating: 0, count: Int(size))
        let n = try storageCall { try buffer.withUnsafeMutableBytes { try file.read(into: $0, at: file.start) } }
        let step = Int(entryBytes)
        return buffer.withUnsafeBytes { raw -> UInt64 in
            var at = 0
            while at + step <= n {
                // 20 bytes: two 8-byte words and one 4-byte word, unaligned loads.
                let a = raw.loadUnaligned(fromByteOffset: at, as: UInt64.self)
                let b = raw.loadUnaligned(fromByteOffset: at + 8, as: UInt64.self)
                let c = raw.loadUnaligned(fromByteOffset: at + 16, as: UInt32.self)
                if a | b | UInt64(c) == 0 { break }
                at += step
            }
            return UInt64(at)
        }
    }

    public var minOffset: UInt64 { state.withLock { $0.minOffset } }
    public var maxOffset: UInt64 { state.withLock { $0.maxOffset } }

    /// Appends `entries` at logical offset `at`, which must be `maxOffset` (or, for an empty queue,
    /// any offset: the entries before it in its file are written blank). The entries are readable at
    /// once; they reach the file once `writeBehind` wait, or at `flush`. An append that
    /// throws (its write failed) added nothing: the same append may be tried again.
    public func append(_ entries: [Entry], at: UInt64) throws(StorageError) {
        try entries.withUnsafeBufferPointer { (b) throws(StorageError) in try append(b, at: at) }
    }

    /// The same from memory the caller holds (dispatch's run of a batch, no array of its own).
    public func append(_ entries: UnsafeBufferPointer<Entry>, at: UInt64) throws(StorageError) {
        guard !entries.isEmpty else { return }
        try state.withLock { (s) throws(StorageError) in
            if s.files.isEmpty && s.pending.isEmpty && s.minOffset == s.maxOffset {
                // An empty queue starts at `at`, its first file at the file boundary before it. Kept
                // even if this append's write fails, so that trying it again is accepted.
                s.minOffset = at
                s.maxOffset = at - at % (fileBytes / Self.entryBytes)
            }
            guard at == s.maxOffset || (s.maxOffset < at && s.minOffset == at) else {
                throw .invalidArgument("consume queue \(directory): append at \(at), but the queue ends at \(s.maxOffset)")
            }
            let start = s.pending.isEmpty ? s.maxOffset : s.pendingStart
            // The waiting bytes, taken out of the state (no copy) and put back if the write fails.
            var bytes: [UInt8] = []
            swap(&bytes, &s.pending)
            let waiting = bytes.count
            // Grown by doubling, up to a whole write-behind run: reserving only what this append
            // needs reallocated (and copied) the waiting bytes on every append, and a whole run at
            // once would hold 4 KiB for every queue with a few entries waiting.
            let needed = waiting + Int(at - s.maxOffset + UInt64(entries.count)) * Int(Self.entryBytes)
            if bytes.capacity < needed {
                bytes.reserveCapacity(max(needed, min(2 * bytes.capacity, writeBehind * Int(Self.entryBytes)), 16 * Int(Self.entryBytes)))
            }
            for _ in s.maxOffset..<at { Self.encode(.blank, into: &bytes) }
            for e in entries { Self.encode(e, into: &bytes) }
            if bytes.count / Int(Self.entryBytes) >= writeBehind {
                do throws(StorageError) {
                    try write(bytes, at: start, &s)
                } catch {
                    bytes.removeLast(bytes.count - waiting)
                    s.pending = bytes
                    throw error
                }
            } else {
                s.pending = bytes
                s.pendingStart = start
            }
            s.maxOffset = at + UInt64(entries.count)
            // The in-memory tail: continued from the old end, or started again at the append.
            if s.tail.isEmpty || s.tailStart + UInt64(s.tail.count) != at {
                s.tail = []
                s.tailStart = at
            }
            s.tail.append(contentsOf: entries)
            if s.tail.count > 2 * Self.tailEntries {
                let drop = s.tail.count - Self.tailEntries
                s.tail.removeFirst(drop)
                s.tailStart += UInt64(drop)
            }
        }
    }

    /// Writes encoded entries from logical offset `offset` on, creating files as needed. A write that
    /// failed part of the way may be repeated from the same offset: it finds the files it made.
    private func write(_ bytes: [UInt8], at offset: UInt64, _ s: inout State) throws(StorageError) {
        var at = 0
        var offset = offset
        while at < bytes.count {
            let byte = offset * Self.entryBytes
            let file: SegmentFile
            if let known = s.files.last(where: { $0.contains(byte) }) {
                file = known
            } else {
                let start = byte - byte % fileBytes
                // A file an earlier, failed write created (its entries were never counted).
                let exists = access(directory + "/" + SegmentName.name(start), F_OK) == 0
                file = try SegmentFile(directory: directory, start: start, capacity: fileBytes, create: !exists)
                s.files.append(file)
                s.files.sort { $0.start < $1.start }
                try FileIO.fsyncDirectory(directory)
            }
            let n = min(bytes.count - at, Int(file.end - byte))
            try storageCall { try bytes.withUnsafeBytes { try file.write(UnsafeRawBufferPointer(rebasing: $0[at..<at + n]), at: byte) } }
            if !s.dirty.contains(where: { $0 === file }) { s.dirty.append(file) }
            at += n
            offset += UInt64(n) / Self.entryBytes
        }
    }

    /// Up to `maxCount` entries from logical offset `from` (within [minOffset, maxOffset)).
    public func read(from: UInt64, maxCount: Int) throws(StorageError) -> [Entry] {
        typealias Plan = (files: [SegmentFile], lo: UInt64, hi: UInt64, written: UInt64, cached: [Entry]?, unwritten: [Entry])
        let plan = state.withLock { s -> Plan in
            guard s.minOffset <= from, from < s.maxOffset, from >= s.tailStart, !s.tail.isEmpty, maxCount > 0 else {
                // Before the tail: the files hold everything up to `writtenEnd`; the entries after it
                // are all in the tail.
                var unwritten: [Entry] = []
                if !s.pending.isEmpty, from < s.writtenEnd, maxCount > 0, s.writtenEnd - from < UInt64(maxCount),
                   s.writtenEnd >= s.tailStart, s.writtenEnd - s.tailStart < UInt64(s.tail.count) {
                    unwritten = Array(s.tail[Int(s.writtenEnd - s.tailStart)...])
                }
                return (s.files, s.minOffset, s.maxOffset, s.writtenEnd, nil, unwritten)
            }
            let at = Int(from - s.tailStart)
            return ([], s.minOffset, s.maxOffset, s.writtenEnd, Array(s.tail[at..<min(s.tail.count, at + maxCount)]), [])
        }
        if let cached = plan.cached { return cached }
        guard from >= plan.lo, from < plan.hi else { throw .outOfRange(requested: from, first: plan.lo, last: plan.hi > plan.lo ? plan.hi - 1 : nil) }
        let fromFiles = Int(min(UInt64(maxCount), max(plan.written, from) - from))
        var out = try Self.readEntries(plan.files, from: from, count: fromFiles)
        if out.count == fromFiles && out.count < maxCount { out += plan.unwritten.prefix(maxCount - out.count) }
        return out
    }

    /// The entry at logical offset `offset` (nil outside [minOffset, maxOffset)): from the tail in
    /// memory without an allocation, which is where a send's answer finds its own entry.
    public func entry(at offset: UInt64) throws(StorageError) -> Entry? {
        let cached = state.withLock { s -> Entry?? in
            guard offset >= s.minOffset, offset < s.maxOffset else { return .some(nil) }
            guard offset >= s.tailStart, offset - s.tailStart < UInt64(s.tail.count) else { return nil }
            return .some(s.tail[Int(offset - s.tailStart)])
        }
        if let cached { return cached }
        return try read(from: offset, maxCount: 1).first
    }

    private static func readEntries(_ files: [SegmentFile], from: UInt64, count: Int) throws(StorageError) -> [Entry] {
        var out: [Entry] = []
        var offset = from
        while out.count < count {
            let byte = offset * entryBytes
            guard let file = files.first(where: { $0.contains(byte) }) else { break }
            let n = min(count - out.count, Int((file.end - byte) / entryBytes))
            var buffer = [UInt8](repeating: 0, count: n * Int(entryBytes))
            let got = try storageCall { try buffer.withUnsafeMutableBytes { try file.read(into: $0, at: byte) } }
            let whole = got / Int(entryBytes)
            for k in 0..<whole { out.append(decode(buffer, at: k * Int(entryBytes))) }
            if whole < n { break }
            offset += UInt64(whole)
        }
        return out
    }

    /// Removes every entry at or after logical offset `from`.
    public func truncate(from: UInt64) throws(StorageError) {
        try state.withLock { (s) throws(StorageError) in
            guard from < s.maxOffset else { return }
            if !s.pending.isEmpty && from >= s.pendingStart {
                // Only entries not yet written go: nothing on disk changes.
                s.pending.removeLast(Int(s.maxOffset - from) * Int(Self.entryBytes))
                s.maxOffset = from
                s.minOffset = min(s.minOffset, s.maxOffset)
                Self.trimTail(&s)
                return
            }
            let byte = max(from, s.files.first.map { $0.start / Self.entryBytes } ?? 0) * Self.entryBytes
            while let last = s.files.last, last.start > byte || (last.start == byte && s.files.count > 1) {
                try FileIO.unlink(last.path)
                s.files.removeLast()
                s.dirty.removeAll { $0 === last }
            }
            if let last = s.files.last {
                // Zeros mark the end: overwrite the tail of the last file.
                let zeros = [UInt8](repeating: 0, count: Int(last.end - byte))
                try storageCall { try zeros.withUnsafeBytes { try last.write($0, at: byte) } }
                try last.sync()
            }
            try FileIO.fsyncDirectory(directory)
            s.pending = []
            s.maxOffset = byte / Self.entryBytes
            s.minOffset = min(s.minOffset, s.maxOffset)
            Self.trimTail(&s)
        }
    }

    private static func trimTail(_ s: inout State) {
        if s.maxOffset <= s.tailStart {
            s.tail = []
        } else if s.tailStart + UInt64(s.tail.count) > s.maxOffset {
            s.tail.removeLast(Int(s.tailStart + UInt64(s.tail.count) - s.maxOffset))
        }
    }

    /// Removes the entries that point at or past `offset` of the commitlog (the log was truncated
    /// there, or lost an unsynced tail): they are dispatched again once the log holds them.
    public func truncate(fromCommitLogOffset offset: Int64) throws(StorageError) {
        var lo = minOffset, hi = maxOffset
        // The first entry pointing at or past `offset` (entries are in commitlog order).
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            let e = try read(from: mid, maxCount: 1)[0]
            if e.commitLogOffset >= offset { hi = mid } else { lo = mid + 1 }
        }
        try truncate(from: lo)
    }

    /// Retention: deletes the whole files whose entries all point before `offset` of the commitlog
    /// (deleted there); never the last file. Returns how many went.
    @discardableResult
    public func deleteFiles(beforeCommitLogOffset offset: Int64) throws(StorageError) -> Int {
        var removed = 0
        while true {
            let (files, hi) = state.withLock { ($0.files, $0.writtenEnd) }
            guard files.count >= 2 else { break }
            let lastOfFirst = files[0].end / Self.entryBytes - 1
            guard lastOfFirst < hi, let e = try Self.readEntries(files, from: lastOfFirst, count: 1).first,
                  e.isBlank || e.commitLogOffset < offset else { break }
            try FileIO.unlink(files[0].path)
            state.withLock { s in
                s.files.removeFirst()
                s.dirty.removeAll { $0 === files[0] }
                s.minOffset = max(s.minOffset, files[0].end / Self.entryBytes)
            }
            removed += 1
        }
        if removed > 0 { try FileIO.fsyncDirectory(directory) }
        return removed
    }

    /// Writes the entries not yet written and makes every appended entry durable (RocketMQ flushes
    /// consume queues on an interval; a crash loses at most what the log re-dispatches).
    public func flush() throws(StorageError) {
        let dirty = try state.withLock { (s) throws(StorageError) -> [SegmentFile] in
            if !s.pending.isEmpty {
                try write(s.pending, at: s.pendingStart, &s)
                s.pending = []
            }
            defer { s.dirty.removeAll() }
            return s.dirty
        }
        for (k, f) in dirty.enumerated() {
            do throws(StorageError) {
                try f.sync()
            } catch {
                // The files not synced stay dirty for the next flush.
                state.withLock { s in
                    for g in dirty[k...] where !s.dirty.contains(where: { $0 === g }) { s.dirty.append(g) }
                }
                throw error
            }
        }
    }

    static func encode(_ e: Entry, into out: inout [UInt8]) {
        withUnsafeBytes(of: e.commitLogOffset.bigEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: e.size.bigEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: e.tagsCode.bigEndian) { out.append(contentsOf: $0) }
    }

    static func decode(_ b: [UInt8], at k: Int) -> Entry {
        b.withUnsafeBytes { raw in
            Entry(commitLogOffset: Int64(bigEndian: raw.loadUnaligned(fromByteOffset: k, as: Int64.self)),
                  size: Int32(bigEndian: raw.loadUnaligned(fromByteOffset: k + 8, as: Int32.self)),
                  tagsCode: Int64(bigEndian: raw.loadUnaligned(fromByteOffset: k + 12, as: Int64.self)))
        }
    }
}
