import Glibc

/// The pid files `mqshutdown` works from (never a process name: a name matches any process that
/// happens to share it). Every running mqbroker and mqnamesrv keeps one in the run directory,
/// `$RAFTMQ_RUN_DIR` or else `$HOME/.raftmq/run`, named after what it serves
/// (`broker-<brokerName>-<id>.pid`, `namesrv-<port>.pid`). The file holds the pid on its first line
/// and the configuration file on the second; it is removed when the process exits cleanly, and one
/// left by a killed process is recognised as stale (its pid is gone or runs another program).
public struct PidFile: Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case broker, namesrv
        /// The executable whose processes the kind's files may name.
        public var executable: String { self == .broker ? "mqbroker" : "mqnamesrv" }
    }

    public let path: String
    public let pid: Int32

    public static func runDirectory(environment: [String: String]) -> String {
        if let d = environment["RAFTMQ_RUN_DIR"], !d.isEmpty { return d }
        return (environment["HOME"] ?? "/tmp") + "/.raftmq/run"
    }

    /// Writes this process's pid file (atomically: temp file, then rename). `instance` names what it
    /// serves; characters other than letters, digits, '-', '_' and '.' become '_'.
    public static func create(kind: Kind, instance: String, configPath: String?, environment: [String: String]) throws(PidFileError) -> PidFile {
        let dir = runDirectory(environment: environment)
        if let why = createDirectories(dir) {
            throw PidFileError(description: "cannot create the run directory \(dir): \(why)")
        }
        let safe = String(instance.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "_" })
        let path = "\(dir)/\(kind.rawValue)-\(safe).pid"
        let pid = getpid()
        let temp = path + ".\(pid).tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw PidFileError(description: "cannot write the pid file \(temp): \(String(cString: strerror(errno)))") }
        var config = configPath ?? ""
        if !config.isEmpty, let real = realpath(config, nil) {
            config = String(cString: real)
            free(real)
        }
        var text = "\(pid)\n\(config)\n"
        let written = text.withUTF8 { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written > 0, rename(temp, path) == 0 else {
            let why = String(cString: strerror(errno))
            unlink(temp)
            throw PidFileError(description: "cannot write the pid file \(path): \(why)")
        }
        return PidFile(path: path, pid: pid)
    }

    /// Removes the file if it still names this process (a later process may have taken the name).
    public func remove() {
        if Self.readFile(path)?.pid == pid { unlink(path) }
    }

    /// One pid file found in the run directory.
    public struct Entry: Sendable, Equatable {
        public var path: String
        public var pid: Int32
        public var configPath: String
        /// The pid is alive and runs the kind's executable.
        public var running: Bool
    }

    /// The kind's pid files in the run directory, each checked against /proc.
    public static func entries(kind: Kind, environment: [String: String]) -> [Entry] {
        let dir = runDirectory(environment: environment)
        guard let d = opendir(dir) else { return [] }
        defer { closedir(d) }
        var out: [Entry] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: e.pointee.d_name) { p in
                p.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            guard name.hasPrefix(kind.rawValue + "-"), name.hasSuffix(".pid") else { continue }
            let path = dir + "/" + name
            guard let (pid, config) = readFile(path) else { continue }
            out.append(Entry(path: path, pid: pid, configPath: config, running: isRunning(pid, executable: kind.executable)))
        }
        return out.sorted { $0.path < $1.path }
    }

    static func readFile(_ path: String) -> (pid: Int32, config: String)? {
        guard let bytes = readSmallFile(path) else { return nil }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard let first = lines.first, let pid = Int32(first.trimmingCharacters()), pid > 0 else { return nil }
        return (pid, lines.count > 1 ? String(lines[1]) : "")
    }

    /// The pid is alive and its program (argv[0] in /proc/PID/cmdline) is `executable`.
    public static func isRunning(_ pid: Int32, executable: String) -> Bool {
        guard kill(pid, 0) == 0 || errno == EPERM else { return false }
        guard let cmdline = readSmallFile("/proc/\(pid)/cmdline") else { return false }
        let argv0 = cmdline.split(separator: 0, maxSplits: 1, omittingEmptySubsequences: false).first ?? []
        let program = String(decoding: argv0, as: UTF8.self)
        return program == executable || program.hasSuffix("/" + executable)
    }
}

public struct PidFileError: Error, CustomStringConvertible {
    public var description: String
}

extension Substring {
    fileprivate func trimmingCharacters() -> Substring {
        var s = self
        while let c = s.first, c == " " || c == "\t" || c == "\r" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" || c == "\r" { s = s.dropLast() }
        return s
    }
}
