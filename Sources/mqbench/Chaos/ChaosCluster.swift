import Foundation
import Glibc
import NIOCore
import NIOPosix
import Remoting
import Replication

/// The processes of a chaos run, all on loopback: three nameservers (127.0.0.1-3:29876) and a
/// three-node Raft group (broker port 31911, HTTP 31913, peer port 41911 on 127.0.0.1-3) whose peer
/// links run through one FaultProxy per direction: node i reaches node j at 127.0.0.(j+1):(42000+i).
/// Only processes this run started are signalled, by PID.
final class ChaosCluster: @unchecked Sendable {
    static let nameServerPort = 29876
    static let brokerPort = 31911
    static let httpPort = 31913
    static let peerPort = 41911
    static let proxyPortBase = 42000
    static let group = "ChaosGroup"

    final class Node: @unchecked Sendable {
        let index: Int
        let name: String
        let host: String
        let conf: String
        let faults: String
        let log: String
        let store: String
        private let guardLock = NSLock()
        private var _process: Process?
        private var _stopped = false
        /// Read from several tasks (observers, the supervisor); written under the cluster's lock.
        var process: Process? {
            get { guardLock.withLock { _process } }
            set { guardLock.withLock { _process = newValue } }
        }
        var stopped: Bool {
            get { guardLock.withLock { _stopped } }
            set { guardLock.withLock { _stopped = newValue } }
        }
        /// Killed by a fault: stays down until the fault heals.
        var heldDown = false
        /// Its disk is full now; `mayFailStop`: it was, since it last started (so a stop is expected).
        var diskFull = false
        var mayFailStop = false
        var brokerAddress: String { "\(host):\(ChaosCluster.brokerPort)" }
        init(_ k: Int, dir: String) {
            index = k
            name = "n\(k)"
            host = "127.0.0.\(k + 1)"
            conf = dir + "/n\(k).conf"
            faults = dir + "/n\(k).faults"
            log = dir + "/n\(k).log"
            store = dir + "/n\(k)"
        }
        var isRunning: Bool { process?.isRunning ?? false }
    }

    let dir: String
    let binDirectory: String
    let nodes: [Node]
    var nameServers: [Process] = []
    /// proxies[i][j]: the link from node i to node j (nil on the diagonal).
    let proxies: [[FaultProxy?]]
    let flushDiskType: String
    var segmentBytes = 4 << 20
    let lock = NSLock()

    init(dir: String, binDirectory: String, flushDiskType: String) {
        self.dir = dir
        self.binDirectory = binDirectory
        self.flushDiskType = flushDiskType
        nodes = (0..<3).map { Node($0, dir: dir) }
        proxies = (0..<3).map { i in
            (0..<3).map { j in
                i == j ? nil : FaultProxy(from: i, to: j, listenHost: "127.0.0.\(j + 1)", listenPort: ChaosCluster.proxyPortBase + i,
                                          targetHost: "127.0.0.\(j + 1)", targetPort: ChaosCluster.peerPort)
            }
        }
    }

    var nameServerList: [String] { (1...3).map { "127.0.0.\($0):\(Self.nameServerPort)" } }
    var links: [FaultProxy] { proxies.flatMap { $0.compactMap { $0 } } }

    func writeConfigs() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for k in 1...3 {
            try "listenPort=\(Self.nameServerPort)\nbindAddress=127.0.0.\(k)\n".write(toFile: dir + "/ns\(k).conf", atomically: true, encoding: .utf8)
        }
        for n in nodes {
            // This node's own entry is its real peer port; every other peer is reached through the
            // proxy of that link.
            let peers = nodes.map { p in
                p.index == n.index ? "\(p.name)-\(p.host):\(Self.peerPort)" : "\(p.name)-\(p.host):\(Self.proxyPortBase + n.index)"
            }.joined(separator: ";")
            let text = """
            # Written by mqbench chaos: node \(n.name) of \(Self.group); peers through the fault proxies.
            brokerClusterName=ChaosCluster
            brokerName=\(Self.group)
            bindAddress=\(n.host)
            brokerIP1=\(n.host)
            listenPort=\(Self.brokerPort)
            httpListenPort=\(Self.httpPort)
            namesrvAddr=\(nameServerList.joined(separator: ";"))
            storePathRootDir=\(n.store)
            storePathCommitLog=\(n.store)/commitlog
            # Standard error only: the harness keeps it as \(n.name).log.
            logDir=
            enableDLegerCommitLog=true
            dLegerGroup=\(Self.group)
            dLegerPeers=\(peers)
            dLegerSelfId=\(n.name)
            flushDiskType=\(flushDiskType)
            mappedFileSizeCommitLog=\(segmentBytes)
            maxMessageSize=\(min(1 << 20, segmentBytes / 4))
            """
            try (text + "\n").write(toFile: n.conf, atomically: true, encoding: .utf8)
            try "".write(toFile: n.faults, atomically: true, encoding: .utf8)
        }
    }

    private func launch(_ executable: String, _ arguments: [String], log: String, environment: [String: String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binDirectory + "/" + executable)
        p.arguments = arguments
        var env = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": dir]
        env.merge(environment) { $1 }
        p.environment = env
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let handle = FileHandle(forWritingAtPath: log) ?? FileHandle.nullDevice
        handle.seekToEndOfFile()
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        return p
    }

    func startNameServers() throws {
        for k in 1...3 {
            nameServers.append(try launch("mqnamesrv", ["-c", dir + "/ns\(k).conf"], log: dir + "/ns\(k).log", environment: ["HOME": dir + "/ns\(k)"]))
        }
    }

    func start(_ n: Node) throws {
        lock.lock(); defer { lock.unlock() }
        guard !(n.process?.isRunning ?? false) else { return }
        n.process = try launch("mqbroker", ["-c", n.conf], log: n.log, environment: ["RAFTMQ_FAULTS": n.faults])
        n.stopped = false
        n.heldDown = false
        n.mayFailStop = n.diskFull
    }

    /// SIGKILL, then waits for the exit, so the ports are free for the restart.
    func kill9(_ n: Node) {
        lock.lock(); defer { lock.unlock() }
        guard let p = n.process, p.isRunning else { return }
        if n.stopped { Glibc.kill(p.processIdentifier, SIGCONT) }
        Glibc.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        n.stopped = false
        n.heldDown = true
    }

    func pause(_ n: Node) {
        lock.lock(); defer { lock.unlock() }
        guard let p = n.process, p.isRunning else { return }
        Glibc.kill(p.processIdentifier, SIGSTOP)
        n.stopped = true
    }

    func resume(_ n: Node) {
        lock.lock(); defer { lock.unlock() }
        guard let p = n.process, p.isRunning, n.stopped else { return }
        Glibc.kill(p.processIdentifier, SIGCONT)
        n.stopped = false
    }

    /// SIGTERM and wait (a clean stop), SIGKILL after `seconds`.
    func terminate(_ n: Node, within seconds: Double = 10) {
        guard let p = n.process, p.isRunning else { return }
        if n.stopped { resume(n) }
        Glibc.kill(p.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { kill9(n) }
        p.waitUntilExit()
    }

    /// Whether `n`'s last run ended with a clean exit (status 0) on SIGTERM.
    func exitedCleanly(_ n: Node) -> Bool {
        guard let p = n.process, !p.isRunning else { return false }
        return p.terminationReason == .exit && p.terminationStatus == 0
    }

    func setDiskFaults(_ n: Node, syncDelayMs: Int = 0, diskFull: Bool = false) {
        let text = "syncDelayMs=\(syncDelayMs)\ndiskFull=\(diskFull ? 1 : 0)\n"
        try? text.write(toFile: n.faults, atomically: true, encoding: .utf8)
        lock.lock(); defer { lock.unlock() }
        n.diskFull = diskFull
        if diskFull { n.mayFailStop = true }
    }

    /// Cuts (or heals) the links from `a` to `b`.
    func cut(_ a: Int, _ b: Int, _ value: Bool, reset: Bool) {
        guard let p = proxies[a][b] else { return }
        p.setCut(value)
        if reset { p.reset() }
    }

    func healNetwork() {
        for p in links { p.setCut(false) }
    }

    func stopEverything() {
        for n in nodes { kill9(n) }
        for p in nameServers where p.isRunning {
            Glibc.kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
    }

    func tail(_ n: Node, lines: Int = 20) -> String {
        let text = (try? String(contentsOfFile: n.log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }
}

/// What one node said about itself in `/raft/state` (through METADATA on its broker port).
struct NodeState: Sendable {
    var selfId: String
    var role: String
    var term: Int
    var leaderId: String?
    var lastIndex: Int
    var commitIndex: Int
    var appliedIndex: Int

    init?(json: String) {
        guard let o = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let selfId = o["selfId"] as? String, let role = o["role"] as? String, let term = o["term"] as? Int else { return nil }
        self.selfId = selfId
        self.role = role
        self.term = term
        leaderId = o["leaderId"] as? String
        lastIndex = o["lastIndex"] as? Int ?? -1
        commitIndex = o["commitIndex"] as? Int ?? -1
        appliedIndex = o["appliedIndex"] as? Int ?? -1
    }
}

extension ChaosCluster {
    /// Every node's state, asked at once, each within `timeoutMs`; nil for a node that did not answer.
    func states(_ client: RemotingClient, timeoutMs: Int64 = 300) async -> [NodeState?] {
        await withTaskGroup(of: (Int, NodeState?).self) { tasks in
            for n in nodes {
                tasks.addTask {
                    guard n.isRunning else { return (n.index, nil) }
                    let c = RaftLogClient(group: "", addresses: [n.brokerAddress], client: client, requestTimeoutMilliseconds: timeoutMs)
                    guard let m = try? await c.metadata(at: n.brokerAddress) else { return (n.index, nil) }
                    return (n.index, NodeState(json: m.stateJSON))
                }
            }
            var out = [NodeState?](repeating: nil, count: nodes.count)
            for await (k, s) in tasks { out[k] = s }
            return out
        }
    }
}
