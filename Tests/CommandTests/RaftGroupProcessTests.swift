import Foundation
import Logging
import NIOCore
import NIOPosix
import Remoting
import Replication
import Synchronization
import Testing
import TestSupport

/// The Raft group as operators run it: three real `mqbroker` processes started with
/// conf/dledger-local/broker-n{0,1,2}.conf on 127.0.0.1, .2 and .3, observed through `/raft/state`
/// (HTTP/1.1), the leader killed with SIGKILL. scripts/test.sh runs this suite on its own, after the
/// others, so the failover it times is not the machine's load.
@Suite(.serialized, .ownThreads) struct RaftGroupProcessTests {
    final class Node {
        let name: String
        var conf: String
        let host: String
        var process: Process?
        var brokerAddress: String { host + ":30911" }
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

    func start(_ n: Node) throws { n.process = try launchBroker(conf: n.conf, log: n.name) }

    /// Runs `mqbroker -c conf` with RAFTMQ_HOME = this test's directory, its output appended to
    /// `<home>/<log>.log`.
    func launchBroker(conf: String, log name: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Executable("mqbroker").path)
        p.arguments = ["-c", conf]
        p.environment = ["RAFTMQ_HOME": home, "RAFTMQ_RUN_DIR": home + "/run", "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin"]
        p.currentDirectoryURL = URL(fileURLWithPath: home)
        if !FileManager.default.fileExists(atPath: home + "/\(name).log") {
            _ = FileManager.default.createFile(atPath: home + "/\(name).log", contents: nil)
        }
        let log = FileHandle(forWritingAtPath: home + "/\(name).log") ?? FileHandle.nullDevice
        log.seekToEndOfFile()
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = log
        p.standardError = log
        try p.run()
        return p
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
    // MARK: The raw log through the broker port

    /// A RaftLogClient and its event loop for one test.
    final class LogClient: Sendable {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let remoting: RemotingClient
        let log: RaftLogClient
        init(_ addresses: [String]) {
            remoting = RemotingClient(group: group, logger: Logger(label: "test"))
            log = RaftLogClient(group: "RaftNode00", addresses: addresses, client: remoting)
        }
        func close() async {
            await remoting.close()
            try? await group.shutdownGracefully()
        }
    }

    /// Every committed entry a node holds, read through GET.
    func entries(_ n: Node, _ client: LogClient) async throws -> [RaftLogEntryCodec.Entry] {
        var out: [RaftLogEntryCodec.Entry] = []
        while true {
            let batch: [RaftLogEntryCodec.Entry]
            do {
                batch = try await client.log.get(at: n.brokerAddress, from: Int64(out.count), maxCount: 1_000)
            } catch {
                // INDEX_OUT_OF_RANGE: past the node's commit index, the end of what it serves.
                if case .refused(let code, _, _) = error, code == RaftLogResponse.indexOutOfRange { return out }
                throw error
            }
            if batch.isEmpty { return out }
            out += batch
        }
    }

    /// Waits until every node in `among` has committed at least `index`.
    func committed(_ among: [Node], through index: Int, within seconds: Double) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if among.allSatisfy({ (state($0)?["commitIndex"] as? Int ?? -1) >= index }) { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Appends from `writers` tasks until `stop` says so or `count` were acknowledged; returns every
    /// acknowledged (index, body).
    final class Writer: @unchecked Sendable {
        let acked = Mutex<[(index: Int64, body: [UInt8])]>([])
        let failures = Mutex<[String]>([])
        let running = Atomic<Bool>(true)
        /// When the first append after `markTime` was acknowledged.
        let firstAfterMark = Mutex<(mark: ContinuousClock.Instant?, acked: ContinuousClock.Instant?)>((nil, nil))

        func run(_ client: LogClient, writers: Int, count: Int, tag: String) async {
            await withTaskGroup(of: Void.self) { group in
                for w in 0..<writers {
                    group.addTask {
                        var k = 0
                        while self.running.load(ordering: .relaxed) && self.acked.withLock({ $0.count }) < count {
                            let body = Array("\(tag)-w\(w)-\(k)".utf8)
                            k += 1
                            let sentAt = ContinuousClock.now
                            do {
                                let a = try await client.log.append(body, deadline: .now + .seconds(5))
                                self.acked.withLock { $0.append((a.index, body)) }
                                self.firstAfterMark.withLock { m in
                                    if let mark = m.mark, m.acked == nil, sentAt >= mark { m.acked = .now }
                                }
                            } catch {
                                // Unknown outcome (the connection died with the leader): not acknowledged.
                                self.failures.withLock { $0.append("\(error)") }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The three logs, read through GET from each node, are identical entry for entry (index, term,
    /// body CRC and chain CRC), and hold every acknowledged append at its index.
    func expectIdenticalLogs(_ client: LogClient, acked: [(index: Int64, body: [UInt8])]) async throws {
        // Each node serves up to its own commit index, and a node that just rejoined learns the last
        // commit with the next heartbeat: read once all of them show the same log, all committed.
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            let s = nodes.map { state($0) }
            let commits = Set(s.map { $0?["commitIndex"] as? Int ?? -1 }), lasts = Set(s.map { $0?["lastIndex"] as? Int ?? -2 })
            if commits.count == 1 && commits == lasts { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        // The three are read one after another: an entry committed in between (a new leader's empty
        // entry after a late election) makes one longer. Read again until they agree, for up to 5 s.
        var logs: [[RaftLogEntryCodec.Entry]] = []
        let readDeadline = Date().addingTimeInterval(5)
        repeat {
            logs = []
            for n in nodes { logs.append(try await entries(n, client)) }
            if logs.allSatisfy({ $0.count == logs[0].count }) { break }
            try await Task.sleep(for: .milliseconds(50))
        } while Date() < readDeadline
        let shortest = logs.map(\.count).min() ?? 0
        #expect(logs.allSatisfy { $0.count == logs[0].count }, "log lengths \(logs.map(\.count))")
        for i in 0..<shortest {
            let a = logs[0][i]
            for (k, l) in logs.enumerated().dropFirst() where l[i].term != a.term || l[i].chainCRC != a.chainCRC || l[i].bodyCRC != a.bodyCRC || l[i].index != a.index {
                Issue.record("entry \(i): n0 has index \(a.index) term \(a.term) chain \(a.chainCRC), n\(k) has index \(l[i].index) term \(l[i].term) chain \(l[i].chainCRC)")
                return
            }
        }
        var lost = 0
        for a in acked where Int(a.index) >= logs[0].count || logs[0][Int(a.index)].body != a.body { lost += 1 }
        #expect(lost == 0, "\(lost) of \(acked.count) acknowledged appends are missing")
    }

    @Test func appendsCommitOnEveryNodeAndSurviveKillsOfTheLeaderAndOfAFollower() async throws {
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let client = LogClient(nodes.map(\.brokerAddress))
        defer {
            for n in nodes { if let p = n.process, p.isRunning { kill(p.processIdentifier, SIGKILL) } }
            try? FileManager.default.removeItem(atPath: home)
        }
        for n in nodes { try start(n) }
        let first = try #require(try await agreedLeader(among: nodes, within: 30), "no leader: \(seen.text)\n\(logs())")
        let leaderNode = try #require(nodes.first { $0.name == first.leader })
        let followers = nodes.filter { $0 !== leaderNode }

        // A follower answers an append with NOT_LEADER and the leader's broker address.
        var body = ByteBuffer()
        body.writeString("to a follower")
        let answer = try await client.remoting.request(followers[0].brokerAddress,
            .request(code: RaftLogCode.append, opaque: 0, extFields: ["group": "RaftNode00"], body: body), timeoutMilliseconds: 3_000)
        #expect(answer.code == RaftLogResponse.notLeader)
        #expect(answer.extFields["leaderAddr"] == leaderNode.brokerAddress)
        #expect(answer.extFields["leaderId"] == leaderNode.name)
        // The command line follows that answer to the leader.
        let cli = try Executable("mqadmin").run(["raftAppend", "-b", followers[1].brokerAddress, "-m", "through mqadmin"])
        #expect(cli.status == 0, "mqadmin raftAppend: \(cli.stderr)")
        #expect(cli.stdout.contains("leader=\(leaderNode.brokerAddress)"), "\(cli.stdout)")

        // 300 appends from 8 writers; once committed they are readable, identically, on every node.
        let writer = Writer()
        await writer.run(client, writers: 8, count: 300, tag: "a")
        let acked = writer.acked.withLock { $0 }
        #expect(acked.count >= 300, "failures: \(writer.failures.withLock { $0.prefix(3) })")
        let top = Int(acked.map(\.index).max() ?? 0)
        #expect(try await committed(nodes, through: top, within: 5), "not committed everywhere\n\(logs())")
        let got = try await client.log.get(at: followers[1].brokerAddress, from: acked[0].index)
        #expect(got.first?.body == acked[0].body, "a follower serves the committed entry")
        try await expectIdenticalLogs(client, acked: acked)

        // SIGKILL the leader while 8 writers keep appending: a new leader accepts appends within 2 s.
        let second = Writer()
        let load = Task { await second.run(client, writers: 8, count: 100_000, tag: "b") }
        try await Task.sleep(for: .milliseconds(300))
        second.firstAfterMark.withLock { $0.mark = .now }
        kill(leaderNode.process!.processIdentifier, SIGKILL)
        leaderNode.process!.waitUntilExit()
        let killedAt = ContinuousClock.now
        let deadline = Date().addingTimeInterval(5)
        while second.firstAfterMark.withLock({ $0.acked }) == nil && Date() < deadline { try await Task.sleep(for: .milliseconds(5)) }
        let resumed = try #require(second.firstAfterMark.withLock { $0.acked }, "no append accepted within 5 s of the kill\n\(logs())")
        #expect(resumed - killedAt < .seconds(2), "the first append after the kill took \(resumed - killedAt)")

        // SIGKILL a follower mid-write (its tail may be torn), then restart both killed nodes.
        try await Task.sleep(for: .milliseconds(300))
        let now = try #require(try await agreedLeader(among: followers, within: 5))
        let victim = try #require(followers.first { $0.name != now.leader })
        kill(victim.process!.processIdentifier, SIGKILL)
        victim.process!.waitUntilExit()
        try await Task.sleep(for: .milliseconds(300))
        try start(victim)
        try start(leaderNode)
        try await Task.sleep(for: .milliseconds(700))
        second.running.store(false, ordering: .relaxed)
        await load.value
        let all = acked + second.acked.withLock { $0 }
        #expect(second.acked.withLock { $0.count } > 100, "appends went on through the kills")
        let allTop = Int(all.map(\.index).max() ?? 0)
        #expect(try await committed(nodes, through: allTop, within: 10), "the restarted nodes did not catch up\n\(logs())")
        try await expectIdenticalLogs(client, acked: all)
        let victimLog = (try? String(contentsOfFile: home + "/\(victim.name).log", encoding: .utf8)) ?? ""
        #expect(victimLog.components(separatedBy: "commitlog: ").count == 3, "the killed follower recovered its store at its second start")

        // Leadership transfer to a named follower.
        let target = try #require(nodes.first { $0.name != now.leader })
        let moved = try Executable("mqadmin").run(["leadershipTransfer", "-g", "RaftNode00", "-i", target.name,
                                                   "-b", nodes.map(\.brokerAddress).joined(separator: ";")])
        #expect(moved.status == 0, "mqadmin leadershipTransfer: \(moved.stderr)")
        let after = try #require(try await agreedLeader(among: nodes, within: 5))
        #expect(after.leader == target.name, "leadership moved to \(after.leader), not \(target.name)")
        await client.close()
    }

    @Test func preferredLeaderIdTakesLeadershipBackAfterItReturns() async throws {
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        defer {
            for n in nodes { if let p = n.process, p.isRunning { kill(p.processIdentifier, SIGKILL) } }
            try? FileManager.default.removeItem(atPath: home)
        }
        // The sample files plus preferredLeaderId=n1.
        for n in nodes {
            let text = try String(contentsOfFile: n.conf, encoding: .utf8) + "\npreferredLeaderId=n1\n"
            n.conf = home + "/broker-\(n.name).conf"
            try text.write(toFile: n.conf, atomically: true, encoding: .utf8)
        }
        for n in nodes { try start(n) }
        let preferred = nodes[1]
        // Whoever wins the first election hands leadership to n1 once it is caught up.
        var s = try #require(try await agreedLeader(among: nodes, within: 30), "no leader\n\(logs())")
        let settle = Date().addingTimeInterval(10)
        while s.leader != preferred.name && Date() < settle {
            try await Task.sleep(for: .milliseconds(100))
            s = try await agreedLeader(among: nodes, within: 5) ?? s
        }
        #expect(s.leader == preferred.name, "the preferred leader n1 does not lead: \(seen.text)")

        // Kill n1: another node leads; n1 restarts and takes leadership back.
        kill(preferred.process!.processIdentifier, SIGKILL)
        preferred.process!.waitUntilExit()
        let others = nodes.filter { $0 !== preferred }
        let interim = try #require(try await agreedLeader(among: others, within: 5), "no leader without n1\n\(logs())")
        #expect(interim.leader != preferred.name)
        try start(preferred)
        let back = Date().addingTimeInterval(15)
        var last = interim
        while Date() < back {
            if let t = try await agreedLeader(among: nodes, within: 2) { last = t; if t.leader == preferred.name { break } }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(last.leader == preferred.name, "leadership did not move back to n1: \(seen.text)\n\(logs())")
        #expect(last.term > interim.term)
    }

    @Test func aFollowerBehindTheLeadersRetentionStartIsResetAndCatchesUp() async throws {
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let client = LogClient(nodes.map(\.brokerAddress))
        defer {
            for n in nodes { if let p = n.process, p.isRunning { kill(p.processIdentifier, SIGKILL) } }
            try? FileManager.default.removeItem(atPath: home)
        }
        // The sample files with 64 KiB segments that retention may delete as soon as they are sealed.
        let hours = (0..<24).map { String(format: "%02d", $0) }.joined(separator: ";")
        for n in nodes {
            let text = try String(contentsOfFile: n.conf, encoding: .utf8)
                + "\nmappedFileSizeCommitLog=65536\nmaxMessageSize=16384\nfileReservedTime=0\ndeleteWhen=\(hours)\ncleanResourceInterval=200\nautoCreateTopicEnable=false\n"
            n.conf = home + "/broker-\(n.name).conf"
            try text.write(toFile: n.conf, atomically: true, encoding: .utf8)
        }
        for n in nodes { try start(n) }
        let first = try #require(try await agreedLeader(among: nodes, within: 30), "no leader\n\(logs())")
        let leaderNode = try #require(nodes.first { $0.name == first.leader })
        let victim = try #require(nodes.first { $0 !== leaderNode })
        let writer = Writer()
        await writer.run(client, writers: 4, count: 50, tag: "before")
        // A topic and five messages of its queue 0, all soon in segments retention deletes.
        let eventLoops = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let remoting = RemotingClient(group: eventLoops, logger: Logger(label: "test"))
        let created = try await remoting.request(leaderNode.brokerAddress, .request(code: RequestCode.updateAndCreateTopic, opaque: 0, extFields: [
            "topic": "Kept", "defaultTopic": "TBW102", "readQueueNums": "2", "writeQueueNums": "2", "perm": "6", "topicFilterType": "SINGLE_TAG", "order": "false",
        ]), timeoutMilliseconds: 5_000)
        #expect(created.code == ResponseCode.success, "\(created.remark ?? "")")
        // With autoCreateTopicEnable=false an unknown topic is refused as RocketMQ refuses it.
        let unknown = try await remoting.request(leaderNode.brokerAddress, .request(code: RequestCode.sendMessageV2, opaque: 0, extFields: [
            "a": "g", "b": "NoSuchTopic", "c": "TBW102", "d": "4", "e": "0", "f": "0", "g": "0", "h": "0",
        ], body: ByteBuffer(string: "x")), timeoutMilliseconds: 5_000)
        #expect(unknown.code == ResponseCode.topicNotExist && unknown.remark?.contains("not exist") == true, "\(unknown.code) \(unknown.remark ?? "")")
        for k in 0..<5 {
            let sent = try await remoting.request(leaderNode.brokerAddress, .request(code: RequestCode.sendMessageV2, opaque: 0, extFields: [
                "a": "g", "b": "Kept", "c": "TBW102", "d": "4", "e": "0", "f": "0", "g": "0", "h": "0",
            ], body: ByteBuffer(string: "kept \(k)")), timeoutMilliseconds: 5_000)
            #expect(sent.code == ResponseCode.success && sent.extFields["queueOffset"] == "\(k)", "\(sent.remark ?? "")")
        }
        let victimLast = try #require(state(victim)?["lastIndex"] as? Int)
        kill(victim.process!.processIdentifier, SIGKILL)
        victim.process!.waitUntilExit()

        // While the victim is down: about 3 MB in 1 KiB entries, 40-odd segments; retention deletes
        // the sealed ones on the other two nodes.
        let payload = [UInt8](repeating: 0x61, count: 1_000)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask { for _ in 0..<400 { _ = try? await client.log.append(payload, deadline: .now + .seconds(5)) } }
            }
        }
        let deadline = Date().addingTimeInterval(10)
        var leaderFirst = 0
        while Date() < deadline {
            leaderFirst = state(leaderNode)?["firstIndex"] as? Int ?? 0
            if leaderFirst > 1_000 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(leaderFirst > 1_000, "retention did not delete the leader's old segments (first index \(leaderFirst))\n\(logs())")
        #expect(leaderFirst > victimLast, "the test needs the victim to be behind the leader's first entry")

        // The victim comes back behind the leader's first entry: it is reset and catches up.
        try start(victim)
        let top = try #require(state(leaderNode)?["lastIndex"] as? Int)
        #expect(try await committed(nodes, through: top, within: 10), "the victim did not catch up\n\(logs())")
        let victimLog = (try? String(contentsOfFile: home + "/\(victim.name).log", encoding: .utf8)) ?? ""
        #expect(victimLog.contains("continues the leader's log"), "the reset is told in the log\n\(logs())")
        let victimFirst = try #require(state(victim)?["firstIndex"] as? Int)
        #expect(victimFirst >= leaderFirst - 64, "the victim starts near the leader's first entry (\(victimFirst), leader \(leaderFirst))")

        // Where all three hold entries, they hold the same ones, byte for byte.
        // (Retention keeps deleting meanwhile: a first index can pass `from` between the reads.)
        var tails: [[RaftLogEntryCodec.Entry]] = []
        for _ in 0..<10 {
            let from = Int64(nodes.compactMap { state($0)?["firstIndex"] as? Int }.max() ?? 0)
            tails = []
            do {
                for n in nodes { tails.append(try await client.log.get(at: n.brokerAddress, from: from, maxCount: 1_000)) }
                break
            } catch {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        try #require(tails.count == 3, "the tails could not be read\n\(logs())")
        #expect(!tails[0].isEmpty)
        for t in tails.dropFirst() {
            let differ = zip(t, tails[0]).first { $0.chainCRC != $1.chainCRC || $0.position != $1.position }
            // (A member may be a few entries behind: the leader keeps writing snapshots and offsets.)
            #expect(differ == nil && min(t.count, tails[0].count) > 0,
                    "logs differ after the reset: \(differ.map { "index \($0.0.index): position \($0.0.position) vs \($0.1.position), body CRC \($0.0.bodyCRC) vs \($0.1.bodyCRC), noop \($0.0.isNoop)" } ?? "lengths \(t.count) vs \(tails[0].count)")")
        }
        // The reset member has the topic and the queue's end from the leader's latest metadata
        // snapshot (its own copy of both went with the prefix), and numbers on from there.
        let topics = try await remoting.request(victim.brokerAddress, .request(code: RequestCode.getAllTopicConfig, opaque: 0), timeoutMilliseconds: 5_000)
        var topicBody = topics.body ?? ByteBuffer()
        #expect(topicBody.readString(length: topicBody.readableBytes)?.contains("\"Kept\"") == true, "the reset member lost the topic\n\(logs())")
        func maxOffset(_ n: Node) async throws -> String? {
            try await remoting.request(n.brokerAddress, .request(code: RequestCode.getMaxOffset, opaque: 0, extFields: ["topic": "Kept", "queueId": "0"]),
                                       timeoutMilliseconds: 5_000).extFields["offset"]
        }
        #expect(try await maxOffset(victim) == "5", "the reset member's queue end")
        let sixth = try await remoting.request(leaderNode.brokerAddress, .request(code: RequestCode.sendMessageV2, opaque: 0, extFields: [
            "a": "g", "b": "Kept", "c": "TBW102", "d": "4", "e": "0", "f": "0", "g": "0", "h": "0",
        ], body: ByteBuffer(string: "kept 5")), timeoutMilliseconds: 5_000)
        #expect(sixth.extFields["queueOffset"] == "5")
        var victimMax: String?
        for _ in 0..<50 {
            victimMax = try await maxOffset(victim)
            if victimMax == "6" { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(victimMax == "6")
        await remoting.close()
        try? await eventLoops.shutdownGracefully()

        // And the group goes on.
        let after = Writer()
        await after.run(client, writers: 2, count: 20, tag: "after")
        #expect(after.acked.withLock { $0.count } >= 20)
        await client.close()
    }

    @Test func aPausedLeaderIsReplacedByTheElectionTimeoutAndRejoinsAsAFollower() async throws {
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let client = LogClient(nodes.map(\.brokerAddress))
        defer {
            for n in nodes { if let p = n.process, p.isRunning { kill(p.processIdentifier, SIGCONT); kill(p.processIdentifier, SIGKILL) } }
            try? FileManager.default.removeItem(atPath: home)
        }
        for n in nodes { try start(n) }
        let first = try #require(try await agreedLeader(among: nodes, within: 30), "no leader\n\(logs())")
        let leaderNode = try #require(nodes.first { $0.name == first.leader })
        let rest = nodes.filter { $0 !== leaderNode }
        // SIGSTOP: the leader's connections stay open, so only the election timeout can tell.
        kill(leaderNode.process!.processIdentifier, SIGSTOP)
        let stoppedAt = Date()
        let second = try #require(try await agreedLeader(among: rest, within: 5), "no new leader while the leader is paused\n\(logs())")
        let took = Date().timeIntervalSince(stoppedAt)
        #expect(second.term > first.term)
        #expect(took < 2, "a paused leader was replaced after \(took) s")
        let w = Writer()
        await w.run(LogClient(rest.map(\.brokerAddress)), writers: 2, count: 20, tag: "paused")
        #expect(w.acked.withLock { $0.count } >= 20, "\(w.failures.withLock { $0.prefix(2) })")
        // SIGCONT: the old leader learns the new term and follows; one leader again.
        kill(leaderNode.process!.processIdentifier, SIGCONT)
        let third = try #require(try await agreedLeader(among: nodes, within: 5), "the old leader did not rejoin\n\(logs())")
        #expect(third.leader == second.leader)
        let top = Int(w.acked.withLock { $0.map(\.index).max() ?? 0 })
        #expect(try await committed(nodes, through: top, within: 5))
        try await expectIdenticalLogs(client, acked: w.acked.withLock { $0 })
        await client.close()
    }

    @Test func theLeaderRegistersAsMasterWithEveryNameserverAndANewLeaderTakesItsPlace() async throws {
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let namesrvs = try startNameServers()
        defer { killAll(namesrvs) }
        for n in nodes { try start(n) }
        let first = try #require(try await agreedLeader(among: nodes, within: 30), "no leader\n\(logs())")
        let leaderNode = try #require(nodes.first { $0.name == first.leader })
        let admin = Executable("mqadmin")
        /// clusterList rows as (BID, address), from each nameserver in turn.
        func rows(_ ns: String) throws -> [String: String] {
            let out = try admin.run(["clusterList", "-n", ns])
            var r: [String: String] = [:]
            for line in out.stdout.split(separator: "\n") where line.hasPrefix("RaftCluster") {
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                if f.count >= 4 && f[1] == "RaftNode00" { r[String(f[2])] = String(f[3]) }
            }
            return r
        }
        func expected(leader: Node, among: [Node]) -> [String: String] {
            var e: [String: String] = ["0": leader.brokerAddress]
            for n in among where n !== leader { e["\(Int(n.name.dropFirst())! + 1)"] = n.brokerAddress }
            return e
        }
        var want = expected(leader: leaderNode, among: nodes)
        var deadline = Date().addingTimeInterval(5)
        var seen: [String: String] = [:]
        while Date() < deadline {
            seen = try rows("127.0.0.3:9876")
            if seen == want { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(seen == want, "clusterList shows \(seen), not \(want)")
        for ns in ["127.0.0.1:9876", "127.0.0.2:9876"] { #expect(try rows(ns) == want, "nameserver \(ns)") }
        let header = try admin.run(["clusterList", "-n", "127.0.0.1:9876"]).stdout.split(separator: "\n").first.map(String.init) ?? ""
        #expect(header.hasPrefix("#Cluster Name     #Broker Name            #BID  #Addr"), "\(header)")
        // The start-up topics are routed to the group: TBW102 with defaultTopicQueueNums queues.
        let topics = try admin.run(["topicList", "-n", "127.0.0.1:9876"]).stdout.split(separator: "\n").map(String.init)
        #expect(topics.contains("TBW102") && topics.contains("RaftCluster") && topics.contains("RaftNode00"), "\(topics)")
        let route = try admin.run(["topicRoute", "-t", "TBW102", "-n", "127.0.0.2:9876"])
        #expect(route.status == 0 && route.stdout.contains("\"0\":\"\(leaderNode.brokerAddress)\"") && route.stdout.contains("\"writeQueueNums\":8"), "\(route.stdout)")
        let missing = try admin.run(["topicRoute", "-t", "NoSuchTopic", "-n", "127.0.0.2:9876"])
        #expect(missing.status == 1 && missing.stderr.contains("No topic route info in name server for the topic: NoSuchTopic"))

        // SIGKILL the leader: its registration goes with its connections, the new leader is BID 0.
        kill(leaderNode.process!.processIdentifier, SIGKILL)
        leaderNode.process!.waitUntilExit()
        let rest = nodes.filter { $0 !== leaderNode }
        let second = try #require(try await agreedLeader(among: rest, within: 5))
        let newLeader = try #require(rest.first { $0.name == second.leader })
        want = expected(leader: newLeader, among: rest)
        deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            seen = try rows("127.0.0.2:9876")
            if seen == want { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(seen == want, "after the kill clusterList shows \(seen), not \(want)")

        // SIGTERM unregisters: the nameservers forget the group.
        for n in rest { kill(n.process!.processIdentifier, SIGTERM) }
        for n in rest { n.process!.waitUntilExit() }
        #expect(try rows("127.0.0.1:9876").isEmpty, "a stopped group is still listed")
    }

}

let lastHTTPError = Mutex("")

/// A blocking TCP connection to host:port (IPv4) with send and receive timeouts, or nil.
func connectBlocking(host: String, port: UInt16, timeoutSeconds: Int) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = port.bigEndian
    let connected = inet_pton(AF_INET, host, &addr.sin_addr) == 1 && withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
    guard connected else {
        close(fd)
        return nil
    }
    return fd
}

/// A plain HTTP/1.1 GET over a blocking socket with a 1 s timeout (no subprocess: a child process
/// started by a parallel test could inherit a pipe and hold it open). Returns the body of a 200.
func httpGet(host: String, port: UInt16, path: String) -> String? {
    guard let fd = connectBlocking(host: host, port: port, timeoutSeconds: 1) else { lastHTTPError.withLock { $0 = "connect errno \(errno)" }; return nil }
    defer { close(fd) }
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
