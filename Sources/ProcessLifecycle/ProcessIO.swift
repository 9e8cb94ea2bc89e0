import Glibc

/// One line on standard error, unbuffered (diagnostics of the server executables).
public func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// The process environment, for `${NAME}` in configuration values, HOME and NAMESRV_ADDR.
public func processEnvironment() -> [String: String] {
    var result: [String: String] = [:]
    var p = environ
    while let entry = p.pointee {
        let text = String(cString: entry)
        if let eq = text.firstIndex(of: "=") {
            result[String(text[..<eq])] = String(text[text.index(after: eq)...])
        }
        p += 1
    }
    return result
}

/// `mkdir -p`: creates `directory` and its missing parents (0755). Nil when it exists as a directory
/// afterwards, else why not.
func createDirectories(_ directory: String) -> String? {
    var path = directory.hasPrefix("/") ? "" : "."
    for part in directory.split(separator: "/") {
        path += "/" + part
        if mkdir(path, 0o755) != 0 && errno != EEXIST { return String(cString: strerror(errno)) }
    }
    var st = stat()
    guard stat(directory, &st) == 0 else { return String(cString: strerror(errno)) }
    return (st.st_mode & S_IFMT) == S_IFDIR ? nil : "not a directory"
}

/// The first `limit` bytes of a file (small files: pid files, /proc entries), nil if it cannot be read.
func readSmallFile(_ path: String, limit: Int = 4_096) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: limit)
    let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    guard n > 0 else { return nil }
    return Array(buffer[..<n])
}
