import Foundation
import Synchronization
import Testing

/// The Raft group as operators run it: three real `mqbroker` processes started with
/// conf/dledger-local/broker-n{0,1,2}.conf on 127.0.0.1, .2 and .3, observed through `/raft/state`
/// (HTTP/1.1), the leader killed with SIGKILL. scripts/test.sh runs this suite on its own, after the
/// others, so the failover it times is not the machine's load.
@Suite(.serialized) struct RaftGroupProcessTests {
    final class Node {
        let name: String
        let conf: String
        let host: String
        var process: Process?
        init(_ k: Int) {
            name = "n\(k)"
            conf = packageRoot + "/conf/dledger-local/broker-n\(k).conf"
            host = "127.0.0.\(k + 1)"
        }
    }

    final class Seen: @unchecked Sendable { var text = "" }
    let seen = Seen()
    let home = NSTemporaryDirectory() + "raftmq-group-" + UUID().uuidString
    let nodes = (0..<3).map(Node.init)

    func start(_ n: Node) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Executable("mqbroker").path)
        p.arguments = ["-c", n.conf]
        p.environment = ["RAFTMQ_HOME": home, "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin"]
        p.currentDirectoryURL = URL(fileURLWithPath: home)
        FileManager.default.createFile(atPath: home + "/\(n.name).log", contents: nil)
        let log = FileHandle(forWritingAtPath: home + "/\(n.name).log") ?? FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = log
        p.standardError = log
        try p.run()
        n.process = p
    }

    /// `/raft/state` of a node, or nil while it does not answer.
    func state(_ n: Node) -> [String: Any]? {
        guard let body = httpGet(host: n.host, port: 30913, path: "/raft/state"),
              let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        else { return nil }
        return object
    }

    /// Waits until the nodes in `among` agree on one leader in one term.
    func agreedLeader(among: [Node], within seconds: Double) async throws -> (leader: String, term: Int)? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let states = among.compactMap(state)
            seen.text = states.map { "\($0["selfId"] ?? "?"):\($0["role"] ?? "?")/t\($0["term"] ?? "?")/leader=\($0["leaderId"] ?? "?")" }.joined(separator: " ") + " (\(states.count) of \(among.count) answered)"
            if states.count == among.count {
                let leaders = states.filter { $0["role"] as? String == "leader" }
                let terms = Set(states.compactMap { $0["term"] as? Int })
                let named = Set(states.compactMap { $0["leaderId"] as? String })
                if leaders.count == 1, terms.count == 1, named.count == 1, let l = named.first, let t = terms.first { return (l, t) }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    /// The last lines of every node's log, for failure messages.
    func logs() -> String {
        nodes.map { n in
            let text = (try? String(contentsOfFile: home + "/\(n.name).log", encoding: .utf8)) ?? "(no log)"
            return "--- \(n.name)\n" + text.split(separator: "\n").suffix(15).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    @Test func threeProcessesElectALeaderSurviveAKillNineAndStopOnSigterm() async throws {
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        defer {
            for n in nodes { if let p = n.process, p.isRunning { kill(p.processIdentifier, SIGKILL) } }
            try? FileManager.default.removeItem(atPath: home)
        }
        for n in nodes { try start(n) }
        // Generous: three debug processes start while the machine may be busy; failover is timed below.
        let first = try #require(try await agreedLeader(among: nodes, within: 30), "no leader within 30 s; last seen: \(seen.text); last HTTP error: \(lastHTTPError.withLock { $0 })\n\(logs())")
        let s = try #require(state(nodes[0]))
        for key in ["mode", "group", "selfId", "role", "term", "leaderId", "leaderPeerAddr", "brokerAddr", "brokerId",
                    "firstIndex", "lastIndex", "lastTerm", "commitIndex", "appliedIndex", "peers"] {
            #expect(s.keys.contains(key), "/raft/state lacks \(key)")
        }
        #expect(s["mode"] as? String == "raft" && s["group"] as? String == "RaftNode00")
        let leaderNode = try #require(nodes.first { $0.name == first.leader })
        let leaderState = try #require(state(leaderNode))
        #expect(leaderState["brokerId"] as? Int == 0, "the leader is brokerId 0")
        #expect((leaderState["peers"] as? [[String: Any]])?.count == 2)

        // SIGKILL the leader: the other two elect a new one, in a later term, within 2 s.
        kill(leaderNode.process!.processIdentifier, SIGKILL)
        leaderNode.process!.waitUntilExit()
        let started = Date()
        let rest = nodes.filter { $0 !== leaderNode }
        let second = try #require(try await agreedLeader(among: rest, within: 5), "no new leader within 5 s of the kill\n\(logs())")
        let failover = Date().timeIntervalSince(started)
        #expect(second.leader != first.leader && second.term > first.term)
        #expect(failover < 2, "failover took \(failover) s")

        // The killed node restarts from its store and follows the new leader.
        try start(leaderNode)
        let third = try #require(try await agreedLeader(among: nodes, within: 10), "the restarted node did not rejoin\n\(logs())")
        #expect(third.leader == second.leader)

        // SIGTERM: each exits cleanly within 5 s.
        for n in nodes { kill(n.process!.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(5)
        while nodes.contains(where: { $0.process!.isRunning }) && Date() < deadline { try await Task.sleep(for: .milliseconds(20)) }
        for n in nodes {
            #expect(!n.process!.isRunning, "\(n.name) still runs 5 s after SIGTERM")
            if !n.process!.isRunning { #expect(n.process!.terminationStatus == 0, "\(n.name) exit status") }
        }
    }
}

let lastHTTPError = Mutex("")

/// A plain HTTP/1.1 GET over a blocking socket with a 1 s timeout (no subprocess: a child process
/// started by a parallel test could inherit a pipe and hold it open). Returns the body of a 200.
func httpGet(host: String, port: UInt16, path: String) -> String? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 1, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { return nil }
    let connected = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { lastHTTPError.withLock { $0 = "connect errno \(errno)" }; return nil }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n".utf8)
    guard send(fd, request, request.count, 0) == request.count else { lastHTTPError.withLock { $0 = "send errno \(errno)" }; return nil }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16_384)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }
        response.append(contentsOf: buffer[0..<n])
    }
    let text = String(decoding: response, as: UTF8.self)
    guard text.hasPrefix("HTTP/1.1 200"), let split = text.range(of: "\r\n\r\n") else {
        lastHTTPError.withLock { $0 = "response (errno \(errno)): \(text.prefix(120))" }
        return nil
    }
    return String(text[split.upperBound...])
}
