import Client
import Foundation
import LogFormat
import Logging
import NIOCore
import NIOPosix
import Remoting
import Testing

/// Classic master/slave groups with real processes: the guide's 2m-2s-async layout as
/// conf/2m-2s-async-local writes it (four brokers and three nameservers on 127.0.0.1/.2/.3), a
/// SYNC_MASTER with its slave stopped and paused, and a store migrated classic -> Raft -> classic.
/// In the serialized RaftGroupProcessTests suite (the nameservers' ports).
extension RaftGroupProcessTests {
    final class Broker {
        let name: String
        let conf: String
        let host: String
        let port: Int
        var process: Process?
        var address: String { "\(host):\(port)" }
        init(name: String, conf: String, host: String, port: Int) {
            self.name = name
            self.conf = conf
            self.host = host
            self.port = port
        }
    }

    static func guideBrokers() -> [Broker] {
        let dir = packageRoot + "/conf/2m-2s-async-local/"
        return [
            Broker(name: "broker-a", conf: dir + "broker-a.properties", host: "127.0.0.1", port: 10911),
            Broker(name: "broker-a-s", conf: dir + "broker-a-s.properties", host: "127.0.0.2", port: 11011),
            Broker(name: "broker-b", conf: dir + "broker-b.properties", host: "127.0.0.2", port: 10911),
            Broker(name: "broker-b-s", conf: dir + "broker-b-s.properties", host: "127.0.0.1", port: 11011),
        ]
    }

    func start(_ b: Broker) throws { b.process = try launchBroker(conf: b.conf, log: b.name) }

    func kill9(_ brokers: [Broker]) {
        for b in brokers { if let p = b.process, p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
    }

    /// SIGTERM and wait: a clean stop (the migration procedure's "stop the group"). A broker that
    /// is still running 10 s later is an issue (and SIGKILLed).
    func stop(_ brokers: [Broker]) async throws {
        for b in brokers { if let p = b.process, p.isRunning { kill(p.processIdentifier, SIGTERM) } }
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, brokers.contains(where: { $0.process?.isRunning == true }) { try await Task.sleep(for: .milliseconds(50)) }
        for b in brokers where b.process?.isRunning == true {
            Issue.record("\(b.name) did not stop within 10 s of SIGTERM\n\(logs([b]))")
            kill(b.process!.processIdentifier, SIGKILL)
            b.process!.waitUntilExit()
        }
    }

    func logs(_ brokers: [Broker]) -> String {
        brokers.map { b in
            let text = (try? String(contentsOfFile: home + "/\(b.name).log", encoding: .utf8)) ?? "(no log)"
            return "--- \(b.name)\n" + text.split(separator: "\n").suffix(12).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    /// `/raft/state` of a broker (HTTP port = listenPort + 2).
    func state(_ b: Broker) -> [String: Any]? {
        guard let body = httpGet(host: b.host, port: UInt16(b.port + 2), path: "/raft/state"),
              let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else { return nil }
        return object
    }

    /// Waits until the slave's log ends where its master's does.
    func caughtUp(_ slave: Broker, _ master: Broker, within seconds: Double) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let m = state(master)?["maxOffset"] as? Int, let s = state(slave)?["maxOffset"] as? Int, m == s, state(slave)?["appliedIndex"] as? Int == state(master)?["appliedIndex"] as? Int {
                return true
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    /// The commitlog segment files of a store, by name.
    /// Each commitlog segment's bytes, without the zeros the store keeps written ahead of its log
    /// (warmMapedFileEnable): each member prepares on its own schedule, so the files' sizes differ
    /// while the logs are the same. (A log that ends in zero bytes loses them on both sides alike.)
    func segments(_ root: String) throws -> [String: Data] {
        let dir = root + "/commitlog/data"
        var out: [String: Data] = [:]
        for f in try FileManager.default.contentsOfDirectory(atPath: dir) {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + f))
            let end = (bytes.lastIndex { $0 != 0 }).map { $0 + 1 } ?? bytes.startIndex
            out[f] = bytes[bytes.startIndex..<end]
        }
        return out
    }

    /// clusterList rows from one nameserver: "brokerName/BID" -> address.
    func clusterRows(_ ns: String, cluster: String) throws -> [String: String] {
        let out = try Executable("mqadmin").run(["clusterList", "-n", ns])
        var r: [String: String] = [:]
        for line in out.stdout.split(separator: "\n") where line.hasPrefix(cluster) {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            if f.count >= 4 { r["\(f[1])/\(f[2])"] = String(f[3]) }
        }
        return r
    }

    func consumeAll(_ group: String, _ topic: String, count: Int, client: RemotingClient, within seconds: Double) async throws -> Received {
        let received = Received()
        var options = Consumer.Options(group: group, topic: topic)
        options.suspendMs = 1_000
        let consumer = Consumer(nameServers: Self.nameServers, remoting: client, logger: Logger(label: "test"), options: options)
        let consuming = Task { await consumer.run { received.add($0) } }
        let deadline = Date().addingTimeInterval(seconds)
        while received.count < count && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }
        // Let it commit its offsets.
        try await Task.sleep(for: .milliseconds(1_500))
        consuming.cancel()
        await consuming.value
        return received
    }

    @Test func theGuidesTwoMastersTwoSlavesLayoutReplicatesByteForByteAndReadsFromASlaveWhenItsMasterIsKilled() async throws {
        let namesrvs = try startNameServers()
        let brokers = Self.guideBrokers()
        defer {
            kill9(brokers)
            killAll(namesrvs)
        }
        for b in brokers { try start(b) }
        let (a, aSlave, bMaster, bSlave) = (brokers[0], brokers[1], brokers[2], brokers[3])

        // clusterList shows rocketmq-cluster with broker-a and broker-b, BID 0 and 100 each, on every nameserver.
        let want = ["broker-a/0": a.address, "broker-a/100": aSlave.address, "broker-b/0": bMaster.address, "broker-b/100": bSlave.address]
        var deadline = Date().addingTimeInterval(15)
        var seen: [String: String] = [:]
        for ns in Self.nameServers {
            while Date() < deadline {
                seen = try clusterRows(ns, cluster: "rocketmq-cluster")
                if seen == want { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(seen == want, "clusterList of \(ns) shows \(seen)\n\(logs(brokers))")
        }
        #expect(state(a)?["mode"] as? String == "classic" && state(a)?["role"] as? String == "ASYNC_MASTER")
        #expect(state(aSlave)?["role"] as? String == "SLAVE" && state(aSlave)?["brokerId"] as? Int == 100)

        // A topic on both masters; 1000 messages spread over them, all consumed once.
        let update = try Executable("mqadmin").run(["updateTopic", "-n", Self.nameServers.joined(separator: ";"), "-c", "rocketmq-cluster", "-t", "TopicTest", "-r", "4", "-w", "4"])
        #expect(update.status == 0, "\(update.stdout)\(update.stderr)")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = RemotingClient(group: group, logger: Logger(label: "test"))
        let routes = RouteCache(nameServers: Self.nameServers, remoting: client)
        deadline = Date().addingTimeInterval(10)
        while Date() < deadline, (try? await routes.refresh("TopicTest"))?.writeQueues("TopicTest").count != 8 { try await Task.sleep(for: .milliseconds(100)) }
        let producer = Producer(nameServers: Self.nameServers, remoting: client, logger: Logger(label: "test"))
        var sent: [String] = []
        var perBroker: [String: Int] = [:]
        for i in 0..<1000 {
            let r = try await producer.send(OutgoingMessage(topic: "TopicTest", body: Array("Hello RocketMQ \(i)".utf8), tags: "TagA"))
            sent += r.msgIds
            perBroker[r.queue.brokerName, default: 0] += 1
            #expect(r.status == .sendOK)
        }
        #expect(perBroker["broker-a"] == 500 && perBroker["broker-b"] == 500, "\(perBroker)")
        let first = try await consumeAll("classic_group", "TopicTest", count: 1000, client: client, within: 30)
        #expect(first.count == 1000 && first.has(sent) && first.duplicates == 0, "received \(first.count), \(first.duplicates) duplicates")

        // Each slave's log equals its master's, byte for byte.
        // A master keeps writing after the slave caught up (the consumers' offsets, flushed as
        // metadata entries every offsetFlushInterval), so "caught up, then the same bytes" must hold
        // at one moment within the time, not at the first check.
        for (m, s) in [(a, aSlave), (bMaster, bSlave)] {
            let root = home + "/2m-2s-async/"
            var same = false
            let deadline = Date().addingTimeInterval(10)
            while !same && Date() < deadline {
                guard try await caughtUp(s, m, within: 10) else { break }
                let (ms, ss) = (try segments(root + m.name), try segments(root + s.name))
                same = !ms.isEmpty && ms == ss
                if !same { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(same, "\(s.name) did not catch up, or its segments differ from \(m.name)'s\n\(logs(brokers))")
        }
        // /metrics of a classic master and its slave: the role, the slave's acknowledged position.
        let am = try prometheusSamples(host: a.host, port: UInt16(a.port + 2))
        #expect(am["raftmq_classic_role{role=\"ASYNC_MASTER\"}"] == 1 && am["raftmq_classic_role{role=\"SLAVE\"}"] == 0)
        #expect(am["raftmq_broker_info{broker=\"broker-a\",cluster=\"rocketmq-cluster\",group=\"broker-a\",mode=\"classic\",node=\"0\"}"] == 1)
        #expect(am.keys.contains { $0.hasPrefix("raftmq_classic_slave_lag_bytes{slave=") }, "\(am.keys.sorted())")
        #expect(am["raftmq_key_index_failures_total"] == 0)
        #expect((am["raftmq_messages_in_total{topic=\"TopicTest\"}"] ?? 0) == 500)
        let sm = try prometheusSamples(host: aSlave.host, port: UInt16(aSlave.port + 2))
        #expect(sm["raftmq_classic_role{role=\"SLAVE\"}"] == 1 && sm["raftmq_classic_master_connected"] == 1)
        #expect((sm["raftmq_classic_ack_offset_bytes"] ?? 0) > 0)

        // The dashboard's overview, as a slave serves it: both classic groups with their master and
        // slave (read through METADATA), the topic's 1000 messages, the group consumed up to the end.
        deadline = Date().addingTimeInterval(15)
        var overview: [String: Any] = [:]
        var summary = ""
        while Date() < deadline {
            overview = (httpGet(host: bSlave.host, port: UInt16(bSlave.port + 2), path: "/api/overview")
                .flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }) ?? [:]
            let clusters = overview["clusters"] as? [[String: Any]] ?? []
            let groups = clusters.flatMap { $0["groups"] as? [[String: Any]] ?? [] }
            let roles = groups.map { g in "\(g["brokerName"] ?? "?")/\(g["mode"] ?? "?"):" + ((g["members"] as? [[String: Any]]) ?? []).compactMap { ($0["state"] as? [String: Any])?["role"] as? String }.joined(separator: ",") }
            let topic = (overview["topics"] as? [[String: Any]])?.first { $0["topic"] as? String == "TopicTest" }
            let consumer = (overview["consumerGroups"] as? [[String: Any]])?.first { $0["group"] as? String == "classic_group" }
            summary = "\(roles.sorted()) topic=\(topic?["messages"] ?? "-") lag=\(consumer?["lag"] ?? "-")"
            if summary == "[\"broker-a/classic:ASYNC_MASTER,SLAVE\", \"broker-b/classic:ASYNC_MASTER,SLAVE\"] topic=1000 lag=0" { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(summary == "[\"broker-a/classic:ASYNC_MASTER,SLAVE\", \"broker-b/classic:ASYNC_MASTER,SLAVE\"] topic=1000 lag=0", "\(summary) \(overview)")

        // The consumer's offsets reached broker-a's slave through the log.
        let ends = try await maxOffsets("TopicTest", queues: 4, at: a.address, client)
        deadline = Date().addingTimeInterval(10)
        while Date() < deadline, try await consumerOffsets("classic_group", "TopicTest", queues: 4, at: aSlave.address, client) != ends {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(try await consumerOffsets("classic_group", "TopicTest", queues: 4, at: aSlave.address, client) == ends)

        // A slave takes no sends.
        let direct = try await client.request(aSlave.address, .request(code: RequestCode.sendMessage, opaque: 0, extFields: [
            "producerGroup": "p", "topic": "TopicTest", "defaultTopic": "TBW102", "defaultTopicQueueNums": "4", "queueId": "0",
            "sysFlag": "0", "bornTimestamp": "0", "flag": "0", "properties": "", "reconsumeTimes": "0", "unitMode": "false", "batch": "false",
        ], body: ByteBuffer(string: "x")), timeoutMilliseconds: 3_000)
        #expect(direct.code == ResponseCode.serviceNotAvailable, "\(direct.code) \(direct.remark ?? "")")

        // SIGKILL master-a: a new group reads all of broker-a's messages from its slave, producers
        // send to broker-b only.
        kill9([a])
        deadline = Date().addingTimeInterval(15)
        while Date() < deadline, (try? await routes.refresh("TopicTest"))?.masterAddress("broker-a") != nil { try await Task.sleep(for: .milliseconds(100)) }
        #expect((try await routes.refresh("TopicTest")).masterAddress("broker-a") == nil, "the nameservers still route broker-a's master")
        let second = try await consumeAll("classic_group_2", "TopicTest", count: 1000, client: client, within: 30)
        #expect(second.count == 1000 && second.has(sent), "a new group received \(second.count) of 1000 with master-a down\n\(logs(brokers))")
        let during = Producer(nameServers: Self.nameServers, remoting: client, logger: Logger(label: "test"))
        var whileDown: [String: Int] = [:]
        for i in 0..<100 {
            let r = try await during.send(OutgoingMessage(topic: "TopicTest", body: Array("while a is down \(i)".utf8)))
            whileDown[r.queue.brokerName, default: 0] += 1
        }
        #expect(whileDown == ["broker-b": 100], "\(whileDown)")

        // master-a back: replication resumes where it stopped, and broker-a takes sends again.
        let before = try #require(state(aSlave)?["maxOffset"] as? Int)
        try start(a)
        deadline = Date().addingTimeInterval(15)
        while Date() < deadline, (try? await routes.refresh("TopicTest"))?.masterAddress("broker-a") == nil { try await Task.sleep(for: .milliseconds(100)) }
        let after = Producer(nameServers: Self.nameServers, remoting: client, logger: Logger(label: "test"))
        var back: [String: Int] = [:]
        for i in 0..<100 {
            let r = try await after.send(OutgoingMessage(topic: "TopicTest", body: Array("a is back \(i)".utf8)))
            back[r.queue.brokerName, default: 0] += 1
        }
        #expect(back["broker-a"] == 50, "\(back)")
        #expect(try await caughtUp(aSlave, a, within: 10), "broker-a-s did not resume\n\(logs(brokers))")
        #expect(try #require(state(aSlave)?["maxOffset"] as? Int) > before)
        let root = home + "/2m-2s-async/"
        #expect(try segments(root + "broker-a") == segments(root + "broker-a-s"))
        #expect(state(a)?["epoch"] as? Int == 2, "a restarted master writes with the next epoch")
        await client.close()
        try? await group.shutdownGracefully()
    }

    /// Writes a copy of a conf/2m-2s-async-local file with some keys replaced.
    func variant(of name: String, _ replaced: [String: String]) throws -> String {
        var lines = try String(contentsOfFile: packageRoot + "/conf/2m-2s-async-local/\(name).properties", encoding: .utf8).split(separator: "\n").map(String.init)
        var rest = replaced
        for (k, line) in lines.enumerated() {
            guard let eq = line.firstIndex(of: "="), let v = rest.removeValue(forKey: String(line[..<eq])) else { continue }
            lines[k] = String(line[..<eq]) + "=" + v
        }
        for (k, v) in rest { lines.append("\(k)=\(v)") }
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let path = home + "/\(name)-variant.properties"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func aSyncMasterAnswersSlaveNotAvailableWithoutItsSlaveAndFlushSlaveTimeoutWhileItIsPaused() async throws {
        let namesrvs = try startNameServers()
        let master = Broker(name: "broker-a", conf: try variant(of: "broker-a", ["brokerRole": "SYNC_MASTER", "syncFlushTimeout": "1000"]),
                            host: "127.0.0.1", port: 10911)
        let slave = Broker(name: "broker-a-s", conf: packageRoot + "/conf/2m-2s-async-local/broker-a-s.properties", host: "127.0.0.2", port: 11011)
        defer {
            if let p = slave.process, p.isRunning { kill(p.processIdentifier, SIGCONT) }
            kill9([master, slave])
            killAll(namesrvs)
        }
        try start(master)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = RemotingClient(group: group, logger: Logger(label: "test"))
        let routes = RouteCache(nameServers: Self.nameServers, remoting: client)
        var deadline = Date().addingTimeInterval(15)
        while Date() < deadline, (try? await routes.refresh("TBW102"))?.masterAddress("broker-a") == nil { try await Task.sleep(for: .milliseconds(100)) }
        let update = try Executable("mqadmin").run(["updateTopic", "-n", "127.0.0.1:9876", "-b", master.address, "-t", "SyncTopic", "-r", "1", "-w", "1"])
        #expect(update.status == 0, "\(update.stdout)\(update.stderr)")
        deadline = Date().addingTimeInterval(10)
        while Date() < deadline, (try? await routes.refresh("SyncTopic"))?.writeQueues("SyncTopic").isEmpty != false { try await Task.sleep(for: .milliseconds(100)) }
        let producer = Producer(nameServers: Self.nameServers, remoting: client, logger: Logger(label: "test"))
        func send(_ text: String) async throws -> SendResult {
            try await producer.send(OutgoingMessage(topic: "SyncTopic", body: Array(text.utf8)))
        }

        // No slave: stored on the master, answered SLAVE_NOT_AVAILABLE (11) at once.
        let alone = try await send("no slave")
        #expect(alone.status == .slaveNotAvailable && alone.queueOffset == 0, "\(alone)")

        // With the slave: SEND_OK, and the slave has it.
        try start(slave)
        #expect(try await caughtUp(slave, master, within: 15), "the slave did not catch up\n\(logs([master, slave]))")
        let both = try await send("with the slave")
        #expect(both.status == .sendOK && both.queueOffset == 1, "\(both)")

        // The slave paused (connected, silent): FLUSH_SLAVE_TIMEOUT (12) after syncFlushTimeout.
        kill(slave.process!.processIdentifier, SIGSTOP)
        let started = Date()
        let paused = try await send("slave paused")
        #expect(paused.status == .flushSlaveTimeout && paused.queueOffset == 2, "\(paused)")
        #expect(Date().timeIntervalSince(started) >= 0.9, "answered before syncFlushTimeout")
        kill(slave.process!.processIdentifier, SIGCONT)
        #expect(try await caughtUp(slave, master, within: 15))
        let resumed = try await send("slave resumed")
        #expect(resumed.status == .sendOK && resumed.queueOffset == 3, "\(resumed)")

        // Every one of them was stored, whatever its answer.
        let received = try await consumeAll("sync_group", "SyncTopic", count: 4, client: client, within: 20)
        #expect(received.count == 4, "received \(received.count) of 4")
        await client.close()
        try? await group.shutdownGracefully()
    }

    /// One member of the migration test's group in either mode, on 127.0.0.(k+1):10911.
    func migrationConf(_ k: Int, raft: Bool) throws -> String {
        var lines = [
            "brokerClusterName=MigrationCluster", "brokerName=MigrationGroup", "namesrvAddr=" + Self.nameServers.joined(separator: ";"),
            "bindAddress=127.0.0.\(k + 1)", "brokerIP1=127.0.0.\(k + 1)", "listenPort=10911",
            "storePathRootDir=\(home)/store\(k)", "storePathCommitLog=\(home)/store\(k)/commitlog",
            // Small segments: the stream crosses several, and their blank ends.
            "mappedFileSizeCommitLog=1048576", "maxMessageSize=65536", "flushDiskType=ASYNC_FLUSH",
        ]
        if raft {
            lines += ["enableDLegerCommitLog=true", "dLegerGroup=MigrationGroup", "dLegerSelfId=n\(k)",
                      "dLegerPeers=n0-127.0.0.1:40911;n1-127.0.0.2:40911;n2-127.0.0.3:40911"]
        } else {
            lines += [k == 0 ? "brokerRole=ASYNC_MASTER" : "brokerRole=SLAVE", "brokerId=\(k)"]
        }
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let path = home + "/migration-\(raft ? "raft" : "classic")-\(k).properties"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// classic -> Raft -> classic on the same store directories: every message stays readable at
    /// the same queue offsets and message ids, consumers keep their offsets, writes continue.
    @Test func aClassicGroupBecomesARaftGroupInPlaceAndBackAgain() async throws {
        let namesrvs = try startNameServers()
        let classic = try (0..<3).map { k in Broker(name: "m\(k)", conf: try migrationConf(k, raft: false), host: "127.0.0.\(k + 1)", port: 10911) }
        let raft = try (0..<3).map { k in Broker(name: "m\(k)", conf: try migrationConf(k, raft: true), host: "127.0.0.\(k + 1)", port: 10911) }
        defer {
            kill9(classic + raft)
            killAll(namesrvs)
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = RemotingClient(group: group, logger: Logger(label: "test"))
        let routes = RouteCache(nameServers: Self.nameServers, remoting: client)
        let topic = "MigrationTopic"
        func master(within seconds: Double) async throws -> String? {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if let m = (try? await routes.refresh("TBW102"))?.masterAddress("MigrationGroup") { return m }
                try await Task.sleep(for: .milliseconds(100))
            }
            return nil
        }
        let body = String(repeating: "m", count: 1_000)
        func produce(_ n: Int, _ tag: String) async throws -> [SendResult] {
            let producer = Producer(nameServers: Self.nameServers, remoting: client, logger: Logger(label: "test"))
            var out: [SendResult] = []
            for i in 0..<n { out.append(try await producer.send(OutgoingMessage(topic: topic, body: Array("\(tag) \(i) \(body)".utf8), tags: tag))) }
            return out
        }
        func allCaughtUp(_ members: [Broker], within seconds: Double) async throws -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                let s = members.compactMap(state)
                let ends = Set(s.compactMap { $0["lastIndex"] as? Int }), applied = Set(s.compactMap { $0["appliedIndex"] as? Int })
                if s.count == members.count, ends.count == 1, applied == ends { return true }
                try await Task.sleep(for: .milliseconds(100))
            }
            return false
        }
        func expectIdenticalStores(_ what: String) throws {
            let stores = try (0..<3).map { try segments(home + "/store\($0)") }
            #expect(stores[0].count >= 2, "\(what): \(stores[0].count) segment(s); the test wants several")
            for k in 1..<3 where stores[k] != stores[0] {
                let detail = Set(stores[0].keys).union(stores[k].keys).sorted().compactMap { name -> String? in
                    let (a, b) = (stores[0][name], stores[k][name])
                    guard a != b else { return nil }
                    let at = zip(a ?? Data(), b ?? Data()).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                    return "\(name): \(a?.count ?? -1) vs \(b?.count ?? -1) bytes, first difference at \(at.map(String.init) ?? "-")"
                }
                Issue.record("\(what): store\(k)'s segments differ from store0's: \(detail)")
            }
        }

        // 1. Classic: 600 messages, consumed by a group; 400 more that it has not consumed yet.
        for b in classic { try start(b) }
        let classicMaster = try #require(try await master(within: 15), "no master\n\(logs(classic))")
        #expect(classicMaster == classic[0].address)
        let update = try Executable("mqadmin").run(["updateTopic", "-n", "127.0.0.1:9876", "-b", classicMaster, "-t", topic, "-r", "4", "-w", "4"])
        #expect(update.status == 0, "\(update.stdout)\(update.stderr)")
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, (try? await routes.refresh(topic))?.writeQueues(topic).count != 4 { try await Task.sleep(for: .milliseconds(100)) }
        let early = try await produce(600, "classic")
        let g = try await consumeAll("migrating_group", topic, count: 600, client: client, within: 30)
        #expect(g.count == 600 && g.duplicates == 0)
        let late = try await produce(400, "classic-late")
        let classicEnds = try await maxOffsets(topic, queues: 4, at: classicMaster, client)
        #expect(classicEnds.reduce(0, +) == 1000)
        #expect(try await allCaughtUp(classic, within: 15), "slaves behind\n\(logs(classic))")
        let classicEpoch = try #require(state(classic[0])?["epoch"] as? Int)
        // The procedure: the master first (it hands its last entries to its slaves), then the slaves.
        try await stop([classic[0]])
        try await stop(Array(classic[1...]))
        try expectIdenticalStores("classic")

        // 2. The same directories as a Raft group.
        for b in raft { try start(b) }
        let raftLeader = try #require(try await master(within: 30), "no Raft leader registered\n\(logs(raft))")
        let leaderState = try #require(raft.first { $0.address == raftLeader }.flatMap(state))
        #expect(leaderState["mode"] as? String == "raft" && leaderState["role"] as? String == "leader")
        #expect(try #require(leaderState["term"] as? Int) > classicEpoch, "the Raft term continues above the classic epoch")
        #expect(try await maxOffsets(topic, queues: 4, at: raftLeader, client) == classicEnds, "queue offsets changed")
        // A message id from the classic era reads the same message.
        let old = try #require(early.first?.offsetMsgIds.first)
        let shown = try Executable("mqadmin").run(["queryMsgById", "-n", "127.0.0.1:9876", "-i", old])
        #expect(shown.status == 0 && shown.stdout.contains("classic 0 "), "\(shown.stdout)\(shown.stderr)")
        // The group resumes at its offsets: exactly the 400 it had not consumed.
        let resumed = try await consumeAll("migrating_group", topic, count: 400, client: client, within: 30)
        #expect(resumed.count == 400 && resumed.has(late.flatMap(\.msgIds)), "received \(resumed.count) after migrating to Raft")
        #expect(resumed.tags.withLock { $0 } == ["classic-late"])
        let raftEra = try await produce(100, "raft")
        for r in raftEra { #expect(r.queueOffset >= classicEnds[Int(r.queue.queueId)], "queue offsets continue") }
        #expect(try await allCaughtUp(raft, within: 15), "members behind\n\(logs(raft))")
        try await stop(raft)
        try expectIdenticalStores("raft")

        // 3. Back to classic: the group consumes the 100 of the Raft era; everything is readable.
        for b in classic { try start(b) }
        let again = try #require(try await master(within: 15), "no master\n\(logs(classic))")
        #expect(again == classic[0].address)
        let back = try await consumeAll("migrating_group", topic, count: 100, client: client, within: 30)
        #expect(back.count == 100 && back.has(raftEra.flatMap(\.msgIds)), "received \(back.count) after migrating back")
        let everything = try await consumeAll("a_new_group", topic, count: 1_100, client: client, within: 30)
        #expect(everything.count == 1_100 && everything.duplicates == 0, "a new group received \(everything.count) of 1100")
        let classicAgain = try await produce(50, "classic-again")
        #expect(classicAgain.allSatisfy { $0.status == .sendOK })
        #expect(try await allCaughtUp(classic, within: 15), "slaves behind after migrating back\n\(logs(classic))")
        try expectIdenticalStores("classic again")
        await client.close()
        try? await group.shutdownGracefully()
    }
}
