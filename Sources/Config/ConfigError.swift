/// Where a configuration value came from: a file and line, or the command line.
public enum ConfigSource: Sendable, Equatable, CustomStringConvertible {
    case file(path: String, line: Int)
    case commandLine
    /// A check that involves the whole file rather than one line.
    case fileAsAWhole(path: String)

    public var description: String {
        switch self {
        case let .file(path, line): return "\(path):\(line)"
        case .commandLine: return "command line"
        case let .fileAsAWhole(path): return path
        }
    }
}

/// A configuration that cannot be used. `description` is the one line the operator sees, in the form
/// `broker-n0.conf:14: listenPort: "30911x" is not a port number`.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var source: ConfigSource
    public var key: String?
    public var message: String

    public init(source: ConfigSource, key: String?, message: String) {
        self.source = source
        self.key = key
        self.message = message
    }

    public var description: String {
        if let key { return "\(source): \(key): \(message)" }
        return "\(source): \(message)"
    }
}

/// Something worth telling the operator that does not stop the broker (an unknown key, a repeated
/// key, a value RocketMQ would override).
public struct ConfigWarning: Sendable, Equatable, CustomStringConvertible {
    public var source: ConfigSource
    public var message: String

    public var description: String { "\(source): \(message)" }
}

/// A value's problem, before the loader knows which file, line and key it belongs to.
struct ValueError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}
