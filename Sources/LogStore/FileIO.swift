import Glibc
import LogFormat

/// Thin, checked wrappers over the POSIX calls the store uses. Every failure becomes a
/// `StorageError.io` naming the operation and the path.
enum FileIO {
    static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(StorageError) -> Int32 {
        let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
        guard fd >= 0 else { throw .io(operation: "open", path: path, errno: errno) }
        return fd
    }

    /// Writes all of `bytes` at `offset`, retrying short writes and EINTR.
    static func pwriteAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, path: String) throws(StorageError) {
        try StoreFaults.beforeWrite(path: path)
        var done = 0
        while done < bytes.count {
            let n = Glibc.pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "pwrite", path: path, errno: errno)
            }
            precondition(n > 0 || bytes.count == done, "pwrite returned 0 for a non-empty write")
            done += n
        }
    }

    /// Reads up to `count` bytes at `offset`; fewer only at end of file.
    static func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, path: String) throws(StorageError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = Glibc.pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(operation: "pread", path: path, errno: errno)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    static func readFile(_ path: String) throws(StorageError) -> [UInt8]? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw .io(operation: "open", path: path, errno: errno)
        }
        defer { _ = Glibc.close(fd) }
        let size = try fileSize(fd, path: path)
        var out = [UInt8](repeating: 0, count: Int(size))
        let n = try storageCall { try out.withUnsafeMutableBytes { b in try pread(fd, into: b, at: 0, path: path) } }
        out.removeLast(out.count - n)
        return out
    }

    static func fdatasync(_ fd: Int32, path: String) throws(StorageError) {
        try StoreFaults.beforeSync("fdatasync", path: path)
        while Glibc.fdatasync(fd) != 0 {
            if errno == EINTR { continue }
            throw .io(operation: "fdatasync", path: path, errno: errno)
        }
    }

    static func fsync(_ fd: Int32, path: String) throws(StorageError) {
        try StoreFaults.beforeSync("fsync", path: path)
        while Glibc.fsync(fd) != 0 {
            if errno == EINTR { continue }
            throw .io(operation: "fsync", path: path, errno: errno)
        }
    }

    /// Makes a directory entry change (create, rename, unlink) durable.
    static func fsyncDirectory(_ path: String) throws(StorageError) {
        let fd = try open(path, flags: O_RDONLY | O_DIRECTORY)
        defer { _ = Glibc.close(fd) }
        try fsync(fd, path: path)
    }

    static func ftruncate(_ fd: Int32, to size: UInt64, path: String) throws(StorageError) {
        while Glibc.ftruncate(fd, off_t(size)) != 0 {
            if errno == EINTR { continue }
            throw .io(operation: "ftruncate", path: path, errno: errno)
        }
    }

    static func fileSize(_ fd: Int32, path: String) throws(StorageError) -> UInt64 {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(operation: "fstat", path: path, errno: errno) }
        return UInt64(st.st_size)
    }

    /// Last modification time in seconds since the epoch.
    static func modificationTime(_ path: String) throws(StorageError) -> Int64 {
        var st = stat()
        guard stat(path, &st) == 0 else { throw .io(operation: "stat", path: path, errno: errno) }
        return Int64(st.st_mtim.tv_sec)
    }

    static func unlink(_ path: String) throws(StorageError) {
        guard Glibc.unlink(path) == 0 || errno == ENOENT else { throw .io(operation: "unlink", path: path, errno: errno) }
    }

    static func rename(_ from: String, _ to: String) throws(StorageError) {
        guard Glibc.rename(from, to) == 0 else { throw .io(operation: "rename", path: "\(from) -> \(to)", errno: errno) }
    }

    /// Creates `path` and its missing parents.
    static func makeDirectories(_ path: String) throws(StorageError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/" + component
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw .io(operation: "mkdir", path: current, errno: errno)
            }
        }
    }

    static func listDirectory(_ path: String) throws(StorageError) -> [String] {
        guard let dir = opendir(path) else { throw .io(operation: "opendir", path: path, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Fraction of the filesystem holding `path` that is in use (0...1), as `df` counts it.
    static func diskUsedRatio(_ path: String) throws(StorageError) -> Double {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { throw .io(operation: "statvfs", path: path, errno: errno) }
        let total = Double(s.f_blocks)
        guard total > 0 else { return 0 }
        let used = total - Double(s.f_bfree)
        let available = Double(s.f_bavail)
        return used / (used + available)
    }

    /// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws(StorageError) {
        let temp = path + ".tmp"
        let fd = try open(temp, flags: O_WRONLY | O_CREAT | O_TRUNC)
        do {
            try storageCall { try bytes.withUnsafeBytes { b in try pwriteAll(fd, b, at: 0, path: temp) } }
            try fsync(fd, path: temp)
        } catch {
            _ = Glibc.close(fd)
            throw error
        }
        _ = Glibc.close(fd)
        try rename(temp, path)
        try fsyncDirectory(directoryOf(path))
    }

    static func directoryOf(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let dir = String(path[..<slash])
        return dir.isEmpty ? "/" : dir
    }
}

/// The 20-digit, zero-padded decimal file names of segments (RocketMQ's `offset2FileName`).
enum SegmentName {
    static func name(_ start: UInt64) -> String {
        let digits = String(start)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    static func parse(_ name: String) -> UInt64? {
        guard name.utf8.count == 20, name.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        return UInt64(name)
    }
}

/// Runs `body`, whose only possible error is a `StorageError`, keeping the error typed. Needed where
/// the standard library's `rethrows` closures (withUnsafeBytes...) erase typed throws.
@inline(__always)
func storageCall<T>(_ body: () throws -> T) throws(StorageError) -> T {
    do { return try body() } catch let e as StorageError { throw e } catch {
        preconditionFailure("unexpected error type: \(error)")
    }
}

@inline(__always)
func formatCall<T>(_ body: () throws -> T) throws(LogFormatError) -> T {
    do { return try body() } catch let e as LogFormatError { throw e } catch {
        preconditionFailure("unexpected error type: \(error)")
    }
}
