import Glibc
import Logging
import Synchronization

/// How the server executables log (swift-log): one line per event, in the shape of RocketMQ's
/// logback lines,
///
///     2026-12-03 10:55:01.123 INFO  mqbroker - raft role changed node=n0 reason=election won role=leader term=7
///
/// written to standard error and, unless the directory is empty, appended to `<dir>/<name>.log`
/// (RocketMQ's `~/logs/rocketmqlogs/broker.log`), rolled when it reaches `fileBytesMax`: broker.log
/// becomes broker.log.1, .1 becomes .2, and so on up to `filesKept - 1`.
public enum ServerLogging {
    public static let fileBytesMax = 128 << 20
    public static let filesKept = 10

    /// Installs the handler for the process. A directory that cannot be created or a file that
    /// cannot be opened is an error (named), not a silent fall-back to standard error alone.
    public static func bootstrap(directory: String, fileName: String, level: Logger.Level,
                                 fileBytesMax: Int = fileBytesMax, filesKept: Int = filesKept) throws(LogFileError) {
        let file: LogFile? = directory.isEmpty ? nil : try LogFile(directory: directory, name: fileName, bytesMax: fileBytesMax, filesKept: filesKept)
        LoggingSystem.bootstrap { label in
            ServerLogHandler(label: label, level: level, file: file)
        }
    }

    /// logback's level names (logLevel) to swift-log's.
    public static func level(_ name: String) -> Logger.Level {
        switch name.uppercased() {
        case "TRACE": return .trace
        case "DEBUG": return .debug
        case "WARN": return .warning
        case "ERROR": return .error
        default: return .info
        }
    }
}

public struct LogFileError: Error, CustomStringConvertible {
    public var description: String
}

/// An append-only log file shared by every logger of the process, rolled by size.
public final class LogFile: Sendable {
    public let path: String
    private let bytesMax: Int
    private let filesKept: Int
    private struct State {
        var fd: Int32
        var bytes: Int
    }
    private let state: Mutex<State>

    public init(directory: String, name: String, bytesMax: Int, filesKept: Int) throws(LogFileError) {
        if let why = createDirectories(directory) {
            throw LogFileError(description: "cannot create the log directory \(directory): \(why)")
        }
        path = directory + "/" + name
        self.bytesMax = max(4_096, bytesMax)
        self.filesKept = max(1, filesKept)
        let fd = try Self.open(path)
        var st = stat()
        let size = fstat(fd, &st) == 0 ? Int(st.st_size) : 0
        state = Mutex(State(fd: fd, bytes: size))
    }

    deinit {
        state.withLock { _ = close($0.fd) }
    }

    private static func open(_ path: String) throws(LogFileError) -> Int32 {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LogFileError(description: "cannot open the log file \(path): \(String(cString: strerror(errno)))") }
        return fd
    }

    /// Appends one line (a single write: lines of concurrent loggers never interleave).
    public func append(_ line: String) {
        var text = line
        state.withLock { s in
            if s.bytes >= bytesMax { roll(&s) }
            let n = text.withUTF8 { write(s.fd, $0.baseAddress, $0.count) }
            if n > 0 { s.bytes += n }
        }
    }

    /// broker.log -> broker.log.1 -> ... (the oldest beyond filesKept - 1 is removed). A failure
    /// keeps writing to the current file: losing the log is worse than an oversized file.
    private func roll(_ s: inout State) {
        if filesKept > 1 {
            _ = unlink(path + ".\(filesKept - 1)")
            var k = filesKept - 2
            while k >= 1 {
                _ = rename(path + ".\(k)", path + ".\(k + 1)")
                k -= 1
            }
            guard rename(path, path + ".1") == 0 else { return }
        } else {
            guard ftruncate(s.fd, 0) == 0 else { return }
            s.bytes = 0
            return
        }
        guard let fd = try? Self.open(path) else { return }
        close(s.fd)
        s.fd = fd
        s.bytes = 0
    }
}

/// swift-log's handler for the servers: RocketMQ-shaped lines to standard error and the log file.
public struct ServerLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let file: LogFile?

    public init(label: String, level: Logger.Level, file: LogFile?) {
        self.label = label
        self.logLevel = level
        self.file = file
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var line = Self.timestamp()
        line += " "
        line += Self.levelName(event.level)
        line += " "
        line += label
        line += " - "
        // One event, one line: a message's own line breaks are escaped.
        let message = "\(event.message)"
        if message.unicodeScalars.contains(where: { $0 == "\n" || $0 == "\r" }) {
            for c in message.unicodeScalars {
                switch c {
                case "\n": line += "\\n"
                case "\r": line += "\\r"
                default: line.unicodeScalars.append(c)
                }
            }
        } else {
            line += message
        }
        var all = metadata
        if let m = event.metadata { all.merge(m) { _, new in new } }
        for (k, v) in all.sorted(by: { $0.key < $1.key }) {
            line += " " + k + "=" + Self.quoted("\(v)")
        }
        line += "\n"
        file?.append(line)
        line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }

    /// logback's names, padded to five as in RocketMQ's files.
    static func levelName(_ level: Logger.Level) -> String {
        switch level {
        case .trace: return "TRACE"
        case .debug: return "DEBUG"
        case .info: return "INFO "
        case .notice: return "INFO "
        case .warning: return "WARN "
        case .error: return "ERROR"
        case .critical: return "ERROR"
        }
    }

    /// A value with spaces, quotes or line breaks in quotes (one event, one line).
    static func quoted(_ v: String) -> String {
        guard v.unicodeScalars.contains(where: { $0 == " " || $0 == "\"" || $0 == "\n" || $0 == "\r" || $0 == "=" }) || v.isEmpty else { return v }
        var out = "\""
        for c in v.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            default: out.unicodeScalars.append(c)
            }
        }
        return out + "\""
    }

    /// Local time, yyyy-MM-dd HH:mm:ss.SSS (logback's default pattern).
    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = ts.tv_sec
        var tm = tm()
        localtime_r(&t, &tm)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(tm.tm_year + 1900, 4))-\(pad(tm.tm_mon + 1, 2))-\(pad(tm.tm_mday, 2)) \(pad(tm.tm_hour, 2)):\(pad(tm.tm_min, 2)):\(pad(tm.tm_sec, 2)).\(pad(Int32(ts.tv_nsec / 1_000_000), 3))"
    }
}
