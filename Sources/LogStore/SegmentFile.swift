import Glibc

/// One open data or index file. The descriptor is closed when the last reference goes away, so a
/// flusher or reader holding a reference can finish even if the segment was removed meanwhile.
final class SegmentFile: @unchecked Sendable {
    /// Absolute position (data) or byte offset (index) of the file's first byte; also its name.
    let start: UInt64
    /// Bytes the file covers: the configured segment size.
    let capacity: UInt64
    let path: String
    let fd: Int32

    init(directory: String, start: UInt64, capacity: UInt64, create: Bool) throws(StorageError) {
        self.start = start
        self.capacity = capacity
        self.path = directory + "/" + SegmentName.name(start)
        self.fd = try FileIO.open(path, flags: create ? (O_RDWR | O_CREAT | O_EXCL) : O_RDWR)
    }

    deinit { _ = close(fd) }

    var end: UInt64 { start + capacity }

    func contains(_ position: UInt64) -> Bool { position >= start && position < end }

    func write(_ bytes: UnsafeRawBufferPointer, at position: UInt64) throws(StorageError) {
        precondition(position >= start, "write before the segment's start")
        precondition(position + UInt64(bytes.count) <= end, "write past the segment's end")
        try FileIO.pwriteAll(fd, bytes, at: position - start, path: path)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at position: UInt64) throws(StorageError) -> Int {
        precondition(position >= start && position <= end, "read outside the segment")
        let count = min(buffer.count, Int(end - position))
        return try FileIO.pread(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]), at: position - start, path: path)
    }

    /// Whether every byte from `position` to the file's end is zero, and at least one is there.
    /// Reads the whole rest of the file (after the log's end: at most the prepared space).
    func holdsOnlyZeros(from position: UInt64) throws(StorageError) -> Bool {
        let end = start + (try fileSize())
        guard position < end else { return false }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var at = position
        while at < end {
            let n = try storageCall { try buffer.withUnsafeMutableBytes { b in try read(into: b, at: at) } }
            if n == 0 { break }
            if !buffer[0..<n].allSatisfy({ $0 == 0 }) { return false }
            at += UInt64(n)
        }
        return true
    }

    func sync() throws(StorageError) { try FileIO.fdatasync(fd, path: path) }

    /// Tells the kernel the file will be read front to back (bigger readahead for recovery scans).
    func adviseSequential() { _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_SEQUENTIAL)) }

    func truncate(toLocal size: UInt64) throws(StorageError) { try FileIO.ftruncate(fd, to: size, path: path) }

    func fileSize() throws(StorageError) -> UInt64 { try FileIO.fileSize(fd, path: path) }
}
