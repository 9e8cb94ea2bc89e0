import Foundation
import Glibc
import Synchronization

/// RocketMQ's message key index (rocketmq-protocol.md §4.4): files of a 40-byte header, `slots` 4-byte
/// hash slots and `entries` 20-byte entries, each entry chained to the previous one of its slot. Keys
/// are `topic#UNIQ_KEY` and `topic#<each KEYS token>`, hashed with Java's String.hashCode. Built by
/// dispatch from committed messages only.
///
/// The index holds hashes, not keys: a query returns candidate commitlog offsets, and the caller
/// reads each record and compares its topic and keys (collisions, and entries left by a replay after
/// a restart, are filtered there). A full file is sealed and a new one started, named by the time.
public final class KeyIndex: Sendable {
    static let headerBytes = 40

    /// One index file, mapped shared into memory as RocketMQ maps it: a put is a few stores into the
    /// page cache instead of a read and two writes through the kernel (measured: those three system
    /// calls per key were 11 % of a follower's CPU at 1 KiB sends). A store into a mapped hole of a
    /// full disk would kill the process (SIGBUS), so the blocks under every byte a put may touch are
    /// reserved first: the header and slots when the file is made, the entries 64 KiB ahead of the
    /// next one; a reservation that fails is a put that throws (the disk is full), never a signal.
    final class IndexFile: @unchecked Sendable {
        let path: String
        let fd: Int32
        let slots: Int
        let capacity: Int
        let size: Int
        let base: UnsafeMutableRawPointer
        /// Guarded by the KeyIndex's lock.
        var count: Int32
        var beginTimestamp: Int64
        var endTimestamp: Int64
        var beginPhyOffset: Int64
        var endPhyOffset: Int64
        /// Bytes from the start known to have blocks (fallocate'd here, or written by an earlier run).
        var reserved: Int

        static let reserveAhead = 64 << 10

        init(path: String, slots: Int, capacity: Int, create: Bool) throws {
            self.path = path
            let fd = open(path, O_RDWR | (create ? O_CREAT : 0), 0o644)
            guard fd >= 0 else { throw KeyIndexError("cannot open \(path): \(String(cString: strerror(errno)))", layout: false) }
            var st = stat()
            var fileSize = fstat(fd, &st) == 0 ? Int(st.st_size) : 0
            var layout = (slots: slots, capacity: capacity)
            var reserved = 0
            if create {
                fileSize = KeyIndex.headerBytes + slots * 4 + capacity * 20
                let head = KeyIndex.headerBytes + slots * 4
                let r1 = ftruncate(fd, off_t(fileSize))
                let r2 = r1 == 0 ? posix_fallocate(fd, 0, off_t(min(fileSize, head + Self.reserveAhead))) : errno
                guard r1 == 0 && r2 == 0 else {
                    close(fd)
                    unlink(path)
                    throw KeyIndexError("cannot size \(path): \(String(cString: strerror(r2)))", layout: false)
                }
                reserved = min(fileSize, head + Self.reserveAhead)
            } else {
                // An existing file keeps the layout it was written with (the configuration may have
                // changed since): slots from its header, entries from its size. It takes no new
                // entries (it is sealed), so nothing is stored past what it holds.
                var header = [UInt8](repeating: 0, count: KeyIndex.headerBytes)
                let n = header.withUnsafeMutableBytes { pread(fd, $0.baseAddress, KeyIndex.headerBytes, 0) }
                let headerSlots = n == KeyIndex.headerBytes ? Int(header.readBE(32, bytes: 4)) : 0
                let usedSlots = headerSlots > 0 ? headerSlots : slots
                guard usedSlots > 0, fileSize > KeyIndex.headerBytes + usedSlots * 4 else {
                    close(fd)
                    throw KeyIndexError("\(path) is not an index file of \(usedSlots) slots (\(fileSize) bytes)", layout: true)
                }
                layout = (usedSlots, (fileSize - KeyIndex.headerBytes - usedSlots * 4) / 20)
                reserved = fileSize
            }
            let mapping = mmap(nil, fileSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
            guard let mapped = mapping, mapped != UnsafeMutableRawPointer(bitPattern: -1) else {
                let why = String(cString: strerror(errno))
                close(fd)
                throw KeyIndexError("cannot map \(path) (\(fileSize) bytes): \(why)", layout: false)
            }
            self.fd = fd
            self.size = fileSize
            self.base = mapped
            self.slots = layout.slots
            self.capacity = layout.capacity
            self.reserved = reserved
            beginTimestamp = 0
            endTimestamp = 0
            beginPhyOffset = 0
            endPhyOffset = 0
            count = 1
            beginTimestamp = Int64(bitPattern: load(0, 8))
            endTimestamp = Int64(bitPattern: load(8, 8))
            beginPhyOffset = Int64(bitPattern: load(16, 8))
            endPhyOffset = Int64(bitPattern: load(24, 8))
            count = max(1, Int32(bitPattern: UInt32(truncatingIfNeeded: load(36, 4))))
        }

        deinit {
            munmap(base, size)
            close(fd)
        }

        /// No more entries go here (full, or reopened after a run whose header may be stale).
        var sealed = false
        var isFull: Bool { sealed || Int(count) >= capacity }

        /// A big-endian unsigned integer of `bytes` (4 or 8) at `at`; 0 outside the file.
        func load(_ at: Int, _ bytes: Int) -> UInt64 {
            guard at >= 0, at + bytes <= size else { return 0 }
            if bytes == 8 { return UInt64(bigEndian: base.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
            return UInt64(UInt32(bigEndian: base.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
        }

        func store32(_ v: UInt32, at: Int) { base.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt32.self) }
        func store64(_ v: UInt64, at: Int) { base.storeBytes(of: v.bigEndian, toByteOffset: at, as: UInt64.self) }

        func put(hash: Int32, phyOffset: Int64, storeTimestamp: Int64) throws {
            let entryAt = KeyIndex.headerBytes + slots * 4 + Int(count) * 20
            if entryAt + 20 > reserved {
                let upTo = min(size, entryAt + 20 + Self.reserveAhead)
                let r = posix_fallocate(fd, off_t(reserved), off_t(upTo - reserved))
                guard r == 0 else { throw KeyIndexError("cannot extend \(path): \(String(cString: strerror(r)))", layout: false) }
                reserved = upTo
            }
            if count == 1 { beginTimestamp = storeTimestamp; beginPhyOffset = phyOffset }
            let slotAt = KeyIndex.headerBytes + (Int(hash) % slots) * 4
            let previous = UInt32(truncatingIfNeeded: load(slotAt, 4))
            let diff = max(0, min(Int64(Int32.max), (storeTimestamp - beginTimestamp) / 1000))
            // The entry before the slot that points to it (a concurrent lookup never follows a link
            // to an entry not yet written).
            store32(UInt32(bitPattern: hash), at: entryAt)
            store64(UInt64(bitPattern: phyOffset), at: entryAt + 4)
            store32(UInt32(diff), at: entryAt + 12)
            store32(previous, at: entryAt + 16)
            store32(UInt32(bitPattern: count), at: slotAt)
            count += 1
            endTimestamp = storeTimestamp
            endPhyOffset = phyOffset
            // The header follows every put, as RocketMQ's does (a few stores into a mapped page), so
            // the file in the page cache is whole even if the process dies before a flush.
            writeHeader()
        }

        func writeHeader() {
            store64(UInt64(bitPattern: beginTimestamp), at: 0)
            store64(UInt64(bitPattern: endTimestamp), at: 8)
            store64(UInt64(bitPattern: beginPhyOffset), at: 16)
            store64(UInt64(bitPattern: endPhyOffset), at: 24)
            store32(UInt32(slots), at: 32)
            store32(UInt32(bitPattern: count), at: 36)
        }

        /// Writes the mapped pages back and waits for them; then lets the kernel take the pages out
        /// of this process (they stay in the page cache), so the touched slots do not count in the
        /// broker's resident memory.
        func sync() throws {
            guard msync(base, size, MS_SYNC) == 0 else { throw KeyIndexError("syncing \(path) failed: \(String(cString: strerror(errno)))", layout: false) }
            _ = madvise(base, size, MADV_DONTNEED)
        }

        /// Candidate offsets for a hash, newest first, within [begin, end] ms; `count` is the number of
        /// entries written when the caller looked (entries past it are not trusted). Stops at the first
        /// entry older than `begin` (chains run newest first) and after `maxSteps` entries.
        func lookup(hash: Int32, begin: Int64, end: Int64, max: Int, count: Int32, beginTimestamp: Int64, maxSteps: Int) -> [Int64] {
            var out: [Int64] = []
            var n = Int32(bitPattern: UInt32(truncatingIfNeeded: load(KeyIndex.headerBytes + (Int(hash) % slots) * 4, 4)))
            var steps = 0
            let lower = begin < Int64.min + 1000 ? Int64.min : begin - 1000
            let upper = end > Int64.max - 1000 ? Int64.max : end + 1000
            // A put writes its entry before its slot, so links past `count` are safe to follow; only
            // entries before `count` (written when the caller looked) are collected.
            while n > 0 && Int(n) < capacity && out.count < max && steps < maxSteps {
                steps += 1
                let at = KeyIndex.headerBytes + slots * 4 + Int(n) * 20
                let h = Int32(bitPattern: UInt32(truncatingIfNeeded: load(at, 4)))
                let phy = Int64(bitPattern: load(at + 4, 8))
                // Times are kept in whole seconds from the file's first: a second of slack each side.
                let (t, overflow) = beginTimestamp.addingReportingOverflow(Int64(load(at + 12, 4)).multipliedReportingOverflow(by: 1000).partialValue)
                let previous = Int32(bitPattern: UInt32(truncatingIfNeeded: load(at + 16, 4)))
                if !overflow && n < count {
                    if t < lower { break }
                    if h == hash && t <= upper { out.append(phy) }
                }
                guard previous < n else { break }
                n = previous
            }
            return out
        }
    }

    public let directory: String
    let slots: Int
    let capacity: Int
    private let files: Mutex<[IndexFile]>

    public init(directory: String, slots: Int = 5_000_000, entries: Int = 20_000_000) throws {
        self.directory = directory
        self.slots = max(1, slots)
        self.capacity = max(2, entries)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { Int64($0) != nil }.sorted { Int64($0)! < Int64($1)! }
        var opened: [IndexFile] = []
        for name in names {
            do {
                opened.append(try IndexFile(path: directory + "/" + name, slots: max(1, slots), capacity: max(2, entries), create: false))
            } catch let e as KeyIndexError where e.layout {
                // An index is a cache: a file that is not one is dropped, not fatal.
                unlink(directory + "/" + name)
            }
        }
        // The newest file may have been written after its last header flush: new entries go to a
        // fresh file rather than over entries its slots may point to.
        opened.last?.sealed = true
        files = Mutex(opened)
    }

    /// abs(hashCode), negatives (Integer.MIN_VALUE) to 0, as RocketMQ's IndexFile.indexKeyHashMethod.
    static func hash(_ key: String) -> Int32 { slotHash(javaHashCode(key)) }

    /// RocketMQ's index hash from a Java hash code: its absolute value (0 for Int32.min).
    static func slotHash(_ h: Int32) -> Int32 { h == Int32.min ? 0 : abs(h) }

    /// Indexes one message under every key it has.
    public func add(topic: String, keys: [String], phyOffset: Int64, storeTimestamp: Int64) throws {
        try add(keyHashes: keys.filter { !$0.isEmpty }.map { javaHashCode(topic + "#" + $0) }, phyOffset: phyOffset, storeTimestamp: storeTimestamp)
    }

    /// Indexes one message under keys given by the Java hash codes of their "topic#key" texts
    /// (dispatch puts a whole batch's at once, `add(_:)`).
    func add(keyHashes: [Int32], phyOffset: Int64, storeTimestamp: Int64) throws {
        if let error = add(keyHashes.map { Put(keyHash: $0, phyOffset: phyOffset, storeTimestamp: storeTimestamp) }).error { throw error }
    }

    /// One key of one message: the Java hash code of "topic#key", where the message lies, when it was stored.
    struct Put {
        var keyHash: Int32
        var phyOffset: Int64
        var storeTimestamp: Int64
    }

    /// Puts the keys of a dispatch batch, in order, under one lock. A put that fails (no space for
    /// a new index file) does not stop the others, as when each message's keys were put on their
    /// own: returns how many messages (distinct `phyOffset`s) lost a key, and the first error.
    func add(_ puts: [Put]) -> (failedMessages: Int, error: (any Error)?) {
        guard !puts.isEmpty else { return (0, nil) }
        return files.withLock { f in
            var failed = 0
            var lastFailed: Int64?
            var first: (any Error)?
            for put in puts {
                do {
                    if f.last == nil || f.last!.isFull {
                        f.last?.writeHeader()
                        var name = String(Int64(Date().timeIntervalSince1970 * 1000))
                        while FileManager.default.fileExists(atPath: directory + "/" + name) { name = String((Int64(name) ?? 0) + 1) }
                        f.append(try IndexFile(path: directory + "/" + name, slots: slots, capacity: capacity, create: true))
                    }
                    try f.last!.put(hash: Self.slotHash(put.keyHash), phyOffset: put.phyOffset, storeTimestamp: put.storeTimestamp)
                } catch {
                    // A message's keys are consecutive: count each message once.
                    if lastFailed != put.phyOffset { failed += 1 }
                    lastFailed = put.phyOffset
                    if first == nil { first = error }
                }
            }
            return (failed, first)
        }
    }

    /// Writes the headers (with the checkpoint) and syncs.
    public func flush() throws {
        // The sync runs outside the lock: dispatch keeps putting meanwhile (the files stay mapped
        // while this holds them).
        let all = files.withLock { f -> [IndexFile] in
            for file in f { file.writeHeader() }
            return f
        }
        for file in all { try file.sync() }
    }

    /// Candidate commitlog offsets of messages with `key` in `topic`, newest first, deduplicated. Reads
    /// without holding the lock dispatch appends under (a long walk must not stall the Raft driver).
    public func query(topic: String, key: String, maxNum: Int, begin: Int64, end: Int64) -> [Int64] {
        let hash = Self.hash(topic + "#" + key)
        let views = files.withLock { f in f.map { ($0, $0.count, $0.beginTimestamp, $0.endTimestamp) } }
        var out: [Int64] = []
        var seen = Set<Int64>()
        for (file, count, first, last) in views.reversed() where out.count < maxNum {
            guard last == 0 || last >= begin, first <= end else { continue }
            for o in file.lookup(hash: hash, begin: begin, end: end, max: maxNum * 4, count: count, beginTimestamp: first,
                                 maxSteps: 100_000) where seen.insert(o).inserted {
                out.append(o)
            }
        }
        return out
    }

    /// Drops every file (the consume queues are rebuilt from the log, and the index with them).
    public func removeAll() {
        files.withLock { f in
            for file in f { unlink(file.path) }
            f.removeAll()
        }
    }

    /// Deletes the files whose entries all point before `offset` (retention), never the newest.
    public func deleteFiles(before offset: Int64) {
        files.withLock { f in
            while f.count > 1, let first = f.first, first.endPhyOffset < offset {
                unlink(first.path)
                f.removeFirst()
            }
        }
    }

    /// The newest entry's time and offset (QUERY_MESSAGE's response header).
    public var lastUpdate: (timestamp: Int64, phyOffset: Int64) {
        files.withLock { f in (f.last?.endTimestamp ?? 0, f.last?.endPhyOffset ?? 0) }
    }
}

struct KeyIndexError: Error, CustomStringConvertible {
    var description: String
    /// The file is not an index file (as opposed to an I/O failure).
    var layout: Bool
    init(_ d: String, layout: Bool) {
        description = d
        self.layout = layout
    }
}
