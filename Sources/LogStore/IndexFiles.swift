import LogFormat

/// The index files: DLedger's 32-byte record for entry i at byte i * 32, spread over files of
/// `capacity` bytes named by their first byte's offset. Everything here can be rebuilt from the data.
struct IndexFiles {
    let directory: String
    let capacity: UInt64
    private(set) var files: [SegmentFile]

    init(directory: String, capacity: UInt64, files: [SegmentFile]) {
        self.directory = directory
        self.capacity = capacity
        self.files = files.sorted { $0.start < $1.start }
    }

    /// The largest entry index whose record lies below 2^63 bytes, so offsets and file ends never overflow.
    static let maxIndex: UInt64 = (UInt64.max >> 1) / UInt64(IndexRecord.byteCount)

    /// Where entry `index`'s record is. Past `maxIndex` (no such entry can be stored) it saturates,
    /// where no file is, so a read finds nothing instead of overflowing.
    static func offset(of index: LogIndex) -> UInt64 {
        index.rawValue <= maxIndex ? index.rawValue * UInt64(IndexRecord.byteCount) : UInt64.max >> 1
    }

    /// The file holding byte `offset`, created (and its directory entry made durable) if asked.
    mutating func file(containing offset: UInt64, create: Bool) throws(StorageError) -> SegmentFile? {
        if let f = files.last(where: { $0.contains(offset) }) { return f }
        guard create else { return nil }
        let f = try SegmentFile(directory: directory, start: offset - offset % capacity, capacity: capacity, create: true)
        try FileIO.fsyncDirectory(directory)
        files.append(f)
        files.sort { $0.start < $1.start }
        return f
    }

    /// Writes records starting at entry `index`; returns the files touched.
    @discardableResult
    mutating func write(_ bytes: [UInt8], firstIndex index: LogIndex) throws(StorageError) -> [SegmentFile] {
        var offset = Self.offset(of: index)
        var done = 0
        var touched: [SegmentFile] = []
        while done < bytes.count {
            let file = try file(containing: offset, create: true)!
            let n = min(bytes.count - done, Int(file.end - offset))
            try storageCall {
                try bytes.withUnsafeBytes { b in try file.write(UnsafeRawBufferPointer(rebasing: b[done..<(done + n)]), at: offset) }
            }
            touched.append(file)
            done += n
            offset += UInt64(n)
        }
        return touched
    }

    /// Reads `count` records from entry `index`; fewer if files end or are missing.
    func read(firstIndex index: LogIndex, count: Int) throws(StorageError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count * IndexRecord.byteCount)
        var offset = Self.offset(of: index)
        var done = 0
        while done < out.count {
            guard let file = files.last(where: { $0.contains(offset) }) else { break }
            let want = min(out.count - done, Int(file.end - offset))
            let n = try storageCall {
                try out.withUnsafeMutableBytes { b in try file.read(into: UnsafeMutableRawBufferPointer(rebasing: b[done..<(done + want)]), at: offset) }
            }
            done += n
            offset += UInt64(n)
            if n < want { break }
        }
        out.removeLast(out.count - (done - done % IndexRecord.byteCount))
        return out
    }

    func record(_ index: LogIndex) throws(StorageError) -> IndexRecord? {
        let bytes = try read(firstIndex: index, count: 1)
        guard bytes.count == IndexRecord.byteCount else { return nil }
        return try? bytes.withUnsafeBytes { (b) throws(LogFormatError) in try IndexRecord.decode(b) }
    }

    /// Whether records for `[first, end)` are all inside existing files.
    func covers(_ first: LogIndex, _ end: LogIndex) -> Bool {
        var offset = Self.offset(of: first)
        let stop = Self.offset(of: end)
        while offset < stop {
            guard let f = files.last(where: { $0.contains(offset) }) else { return false }
            offset = f.end
        }
        return true
    }

    /// Removes every record from entry `index` on: the file holding it is cut, later files deleted.
    mutating func truncate(from index: LogIndex) throws(StorageError) {
        let offset = Self.offset(of: index)
        let doomed = files.filter { $0.start >= offset }
        for f in doomed { try FileIO.unlink(f.path) }
        files.removeAll { $0.start >= offset }
        let removed = !doomed.isEmpty
        if let f = files.last(where: { $0.contains(offset) }) {
            try f.truncate(toLocal: offset - f.start)
            try f.sync()
        }
        if removed { try FileIO.fsyncDirectory(directory) }
    }

    /// Deletes files whose records all belong to entries before `index`.
    mutating func deleteBefore(_ index: LogIndex) throws(StorageError) {
        let offset = Self.offset(of: index)
        let doomed = files.filter { $0.end <= offset }
        guard !doomed.isEmpty else { return }
        for f in doomed { try FileIO.unlink(f.path) }
        files.removeAll { $0.end <= offset }
        try FileIO.fsyncDirectory(directory)
    }

    mutating func removeAll() throws(StorageError) {
        for f in files { try FileIO.unlink(f.path) }
        files.removeAll()
        try FileIO.fsyncDirectory(directory)
    }
}
