import Glibc

/// The nameserver's configuration (`mqnamesrv -c FILE`).
public struct NamesrvConfig: Sendable, Equatable {
    public var listenPort = 9876
    public var bindAddress = "0.0.0.0"
    /// RocketMQ's `kvConfigPath`: where PUT_KV_CONFIG entries are kept (default ~/namesrv/kvConfig.json).
    public var kvConfigPath = ""
    public var logging = LoggingSettings()
    public var path = ""

    static var keys: [ConfigKey<NamesrvConfig>] {
        [
            .port("listenPort", \.listenPort, section: "Network", "Nameserver port."),
            .string("bindAddress", \.bindAddress, section: "Network", "Address the nameserver binds to."),
            .string("kvConfigPath", \.kvConfigPath, section: "Storage", "File of the KV config (PUT_KV_CONFIG); default $HOME/namesrv/kvConfig.json."),
            .string("logDir", \.logging.logDir, section: "Logs", "Directory of namesrv.log; empty: standard error only. Default: $HOME/logs/rocketmqlogs."),
            .enumeration("logLevel", \.logging.logLevel, section: "Logs", "TRACE, DEBUG, INFO, WARN or ERROR."),
        ]
    }

    public func effectiveProperties() -> [(String, String)] {
        Self.keys.map { ($0.name, $0.render(self)) }.sorted { $0.0 < $1.0 }
    }
}

/// Reads configuration files into validated settings. Nothing here starts, opens or writes anything.
public enum ConfigLoader {
    /// Reads a broker file. `environment` supplies HOME, NAMESRV_ADDR and `${NAME}` references;
    /// `overrides` are command-line settings (e.g. `-n` → namesrvAddr) applied after the file.
    public static func loadBroker(
        path: String, environment: [String: String], overrides: [String: String] = [:]
    ) throws(ConfigError) -> (BrokerSettings, [ConfigWarning]) {
        let bytes = try readFile(path)
        return try loadBroker(bytes: bytes, path: path, environment: environment, overrides: overrides)
    }

    public static func loadBroker(
        bytes: [UInt8], path: String, environment: [String: String], overrides: [String: String] = [:]
    ) throws(ConfigError) -> (BrokerSettings, [ConfigWarning]) {
        var settings = BrokerSettings()
        settings.path = path
        settings.store.storePathRootDir = (environment["HOME"] ?? "") + "/store"
        settings.logging.logDir = (environment["HOME"] ?? ".") + "/logs/rocketmqlogs"
        settings.broker.namesrvAddr = environment["NAMESRV_ADDR"] ?? ""
        settings.broker.brokerName = hostName()
        let cores = Int64(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        settings.broker.sendMessageThreadPoolNums = min(cores, 4)
        settings.broker.pullMessageThreadPoolNums = 16 + 2 * cores
        settings.broker.cores = cores
        var warnings: [ConfigWarning] = []
        let lines = try apply(
            bytes: bytes, path: path, keys: BrokerKeys.index(), to: &settings, environment: environment,
            overrides: overrides, warnings: &warnings)
        try validate(&settings, lines: lines, path: path, warnings: &warnings)
        return (settings, warnings)
    }

    public static func loadNamesrv(path: String?, environment: [String: String]) throws(ConfigError) -> (NamesrvConfig, [ConfigWarning]) {
        var config = NamesrvConfig()
        config.kvConfigPath = (environment["HOME"] ?? ".") + "/namesrv/kvConfig.json"
        config.logging.logDir = (environment["HOME"] ?? ".") + "/logs/rocketmqlogs"
        var warnings: [ConfigWarning] = []
        guard let path else { return (config, warnings) }
        config.path = path
        var keys: [String: ConfigKey<NamesrvConfig>] = [:]
        for k in NamesrvConfig.keys { keys[k.name] = k }
        _ = try apply(bytes: try readFile(path), path: path, keys: keys, to: &config, environment: environment, overrides: [:], warnings: &warnings)
        return (config, warnings)
    }

    static func readFile(_ path: String) throws(ConfigError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw ConfigError(source: .fileAsAWhole(path: path), key: nil, message: "cannot read file: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ConfigError(source: .fileAsAWhole(path: path), key: nil, message: "cannot read file: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
            guard out.count <= 16 << 20 else {
                throw ConfigError(source: .fileAsAWhole(path: path), key: nil, message: "is larger than 16 MiB: not a configuration file")
            }
        }
        return out
    }

    /// Applies every line, then the overrides. Returns where each canonical key was set.
    static func apply<Root>(
        bytes: [UInt8], path: String, keys: [String: ConfigKey<Root>], to root: inout Root,
        environment: [String: String], overrides: [String: String], warnings: inout [ConfigWarning]
    ) throws(ConfigError) -> [String: ConfigSource] {
        var seen: [String: ConfigSource] = [:]
        let known = Array(Set(keys.values.map(\.name))).sorted()
        for entry in PropertiesParser.parse(bytes) {
            let source = ConfigSource.file(path: path, line: entry.line)
            guard let key = keys[entry.key] else {
                let hint = EditDistance.nearest(entry.key, among: known).map { " (did you mean \"\($0)\"?)" } ?? ""
                warnings.append(ConfigWarning(source: source, message: "unknown key \"\(entry.key)\"\(hint)"))
                continue
            }
            if let earlier = seen[key.name] {
                warnings.append(ConfigWarning(source: source, message: "\(key.name) is set again (first at \(earlier)); the last value wins"))
            }
            do {
                let value = try EnvironmentExpansion.expand(entry.value, environment: environment)
                try key.apply(&root, value)
            } catch {
                throw ConfigError(source: source, key: entry.key, message: error.message)
            }
            seen[key.name] = source
        }
        for (name, value) in overrides.sorted(by: { $0.key < $1.key }) {
            guard let key = keys[name] else { preconditionFailure("override of unknown key \(name)") }
            do {
                try key.apply(&root, value)
            } catch {
                throw ConfigError(source: .commandLine, key: name, message: error.message)
            }
            seen[key.name] = .commandLine
        }
        return seen
    }

    /// Checks that involve several keys; each error is reported at the line of the key that is wrong.
    static func validate(_ s: inout BrokerSettings, lines: [String: ConfigSource], path: String, warnings: inout [ConfigWarning]) throws(ConfigError) {
        func fail(_ key: String, _ message: String) -> ConfigError {
            ConfigError(source: lines[key] ?? .fileAsAWhole(path: path), key: key, message: message)
        }
        let port = s.broker.listenPort
        guard port >= 3, port + 2 <= 65535 else {
            throw fail("listenPort", "\(port) leaves no room for listenPort - 2 (fast channel) and listenPort + 2 (HTTP)")
        }
        if [s.broker.fastListenPort, port, s.broker.haListenPort].contains(s.broker.httpListenPort) {
            throw fail("httpListenPort", "\(s.broker.httpListenPort) collides with listenPort \(port), its fast channel \(port - 2) or its HA port \(port + 1)")
        }
        if s.store.commitLogIndexFileSize % 32 != 0 {
            throw fail("commitLogIndexFileSize", "\(s.store.commitLogIndexFileSize) is not a multiple of 32")
        }
        if s.store.mappedFileSizeConsumeQueue % 20 != 0 {
            warnings.append(ConfigWarning(source: lines["mappedFileSizeConsumeQueue"] ?? .fileAsAWhole(path: path), message: "mappedFileSizeConsumeQueue \(s.store.mappedFileSizeConsumeQueue) is rounded down to a multiple of 20 bytes, as RocketMQ does"))
            s.store.mappedFileSizeConsumeQueue -= s.store.mappedFileSizeConsumeQueue % 20
        }
        if s.store.maxMessageSize + 48 + 8 > s.store.mappedFileSizeCommitLog {
            throw fail("maxMessageSize", "\(s.store.maxMessageSize) does not fit in a commitlog segment of mappedFileSizeCommitLog=\(s.store.mappedFileSizeCommitLog) bytes")
        }
        if s.broker.aclEnable {
            throw fail("aclEnable", "access control lists are not supported yet; set aclEnable=false")
        }
        if let configured = lines["haListenPort"] {
            warnings.append(ConfigWarning(source: configured, message: "haListenPort is always listenPort + 1 (\(s.broker.haListenPort)), as in RocketMQ"))
        }
        if s.raft.enableDLegerCommitLog {
            for key in ["dLegerGroup", "dLegerPeers", "dLegerSelfId"] where lines[key] == nil {
                throw ConfigError(source: lines["enableDLegerCommitLog"] ?? .fileAsAWhole(path: path), key: key, message: "is required when enableDLegerCommitLog=true")
            }
            let peers: [RaftPeer]
            do { peers = try RaftPeer.parseList(s.raft.dLegerPeersText) } catch { throw fail("dLegerPeers", error.message) }
            let ids = peers.map(\.id)
            if !ids.contains(s.raft.dLegerSelfId) {
                throw fail("dLegerSelfId", "\(s.raft.dLegerSelfId.debugDescription) is not among dLegerPeers \(ids.joined(separator: ", "))")
            }
            if !s.raft.preferredLeaderId.isEmpty && !ids.contains(s.raft.preferredLeaderId) {
                throw fail("preferredLeaderId", "\(s.raft.preferredLeaderId.debugDescription) is not among dLegerPeers \(ids.joined(separator: ", "))")
            }
            do { _ = try Values.name(s.raft.dLegerGroup) } catch { throw fail("dLegerGroup", error.message) }
            // As RocketMQ's BrokerStartup does: the Raft role decides the id (0 on the leader, the digits
            // of dLegerSelfId + 1 on followers); -1 until the first role.
            if let configured = lines["brokerId"] {
                warnings.append(ConfigWarning(source: configured, message: "brokerId is decided by the Raft role when enableDLegerCommitLog=true; the configured value is ignored"))
            }
            s.broker.brokerId = -1
        } else if s.store.brokerRole == .SLAVE && s.broker.brokerId == 0 {
            throw fail(lines["brokerId"] != nil ? "brokerId" : "brokerRole", "a SLAVE needs a brokerId above 0 (0 is the master's)")
        } else if s.store.brokerRole != .SLAVE && s.broker.brokerId != 0 {
            warnings.append(ConfigWarning(source: lines["brokerId"] ?? .fileAsAWhole(path: path), message: "a \(s.store.brokerRole.rawValue) always registers as brokerId 0 (RocketMQ forces it); brokerId=\(s.broker.brokerId) is ignored"))
            s.broker.brokerId = 0
        }
        let raft = s.raft
        if raft.raftElectionTimeoutMinMs >= raft.raftElectionTimeoutMaxMs {
            throw fail("raftElectionTimeoutMaxMs", "\(raft.raftElectionTimeoutMaxMs) must be above raftElectionTimeoutMinMs \(raft.raftElectionTimeoutMinMs)")
        }
        if raft.raftHeartbeatIntervalMs * 2 > raft.raftElectionTimeoutMinMs {
            throw fail("raftHeartbeatIntervalMs", "\(raft.raftHeartbeatIntervalMs) must be at most half of raftElectionTimeoutMinMs \(raft.raftElectionTimeoutMinMs), or followers time out between heartbeats")
        }
        if s.broker.brokerIP1.isEmpty && s.broker.bindAddress != "0.0.0.0" {
            s.broker.brokerIP1 = s.broker.bindAddress
        }
        if s.broker.brokerIP2.isEmpty { s.broker.brokerIP2 = s.broker.brokerIP1 }
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "DefaultBrokerName" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return (try? Values.name(name)) ?? "DefaultBrokerName"
    }
}
