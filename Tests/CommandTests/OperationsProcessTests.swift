import Foundation
import Testing

/// What operators use around a running group: /metrics (read with Prometheus's own Python parser,
/// prometheus_client), the log files, the pid files and mqshutdown. Real processes: the nameservers
/// and the group of conf/dledger-local, in the serialized RaftGroupProcessTests suite (same ports).
extension RaftGroupProcessTests {
    func metrics(_ n: Node) throws -> [String: Double] { try prometheusSamples(host: n.host, port: 30913) }

    /// `mqadmin sendMessage`, again every 100 ms for 5 s while it fails: a new leader's registration
    /// with the nameservers may still be on its way.
    func sendOnceRouted(_ ns: String, topic: String, body: String, count: Int) async throws -> Executable.Output {
        let admin = Executable("mqadmin")
        let args = ["sendMessage", "-n", ns, "-t", topic, "-p", body, "--count", "\(count)"]
        var sent = try admin.run(args)
        for _ in 0..<50 where sent.status != 0 {
            try await Task.sleep(for: .milliseconds(100))
            sent = try admin.run(args)
        }
        return sent
    }

    @Test func metricsLogFilesPidFilesAndMqshutdown() async throws {
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let namesrvs = try startNameServers()
        defer { killAll(namesrvs) }
        // SYNC_FLUSH (the samples' default is ASYNC_FLUSH), which keeps prepared space by default.
        try FileManager.default.createDirectory(atPath: home + "/sync", withIntermediateDirectories: true)
        for n in nodes {
            let conf = home + "/sync/broker-\(n.name).conf"
            try (String(contentsOfFile: n.conf, encoding: .utf8) + "\nflushDiskType=SYNC_FLUSH\n").write(toFile: conf, atomically: true, encoding: .utf8)
            n.conf = conf
        }
        for n in nodes { try start(n) }
        let elected = try #require(try await agreedLeader(among: nodes, within: 30), "no leader\n\(logs())")
        let leader = try #require(nodes.first { $0.name == elected.leader })
        let follower = try #require(nodes.first { $0 !== leader })
        let admin = Executable("mqadmin")
        let ns = "127.0.0.1:9876;127.0.0.2:9876;127.0.0.3:9876"

        // Traffic: 5 sends and a consumer that reads them.
        let sent = try await sendOnceRouted(ns, topic: "MetricsTopic", body: "metered", count: 5)
        #expect(sent.status == 0, "\(sent.stdout)\(sent.stderr)")
        let consumed = try admin.run(["consumeMessage", "-n", ns, "-t", "MetricsTopic", "-g", "metrics_group", "-c", "5", "--timeout", "20"])
        #expect(consumed.status == 0, "\(consumed.stdout)\(consumed.stderr)")

        let m = try metrics(leader)
        #expect(m["raftmq_raft_role{role=\"leader\"}"] == 1 && m["raftmq_raft_role{role=\"follower\"}"] == 0)
        #expect(m["raftmq_raft_term"] == Double(elected.term))
        #expect((m["raftmq_raft_elections_won_total"] ?? 0) >= 1)
        #expect(m["raftmq_broker_info{broker=\"RaftNode00\",cluster=\"RaftCluster\",group=\"RaftNode00\",mode=\"raft\",node=\"\(leader.name)\"}"] == 1)
        let commit = try #require(m["raftmq_raft_commit_index"])
        #expect(commit >= 5 && m["raftmq_raft_applied_index"] == commit && (m["raftmq_raft_last_index"] ?? -1) >= commit)
        for peer in nodes where peer !== leader {
            let match = try #require(m["raftmq_raft_peer_match_index{peer=\"\(peer.name)\"}"], "no match index for \(peer.name): \(m.keys.sorted())")
            #expect(match >= 0 && match <= (m["raftmq_raft_last_index"] ?? 0))
            #expect(m["raftmq_raft_peer_lag_entries{peer=\"\(peer.name)\"}"] != nil)
        }
        #expect(m["raftmq_messages_in_total{topic=\"MetricsTopic\"}"] == 5, "\(m.filter { $0.key.contains("messages") })")
        #expect((m["raftmq_bytes_in_total{topic=\"MetricsTopic\"}"] ?? 0) > 5 * 7)
        #expect((m["raftmq_append_latency_seconds_count"] ?? 0) >= 5)
        #expect(m["raftmq_key_index_failures_total"] == 0)
        // The consumer may have pulled from a follower (slaveReadEnable) only when told to; here the leader served it.
        let out = nodes.compactMap { try? metrics($0)["raftmq_messages_out_total{topic=\"MetricsTopic\"}"] }.reduce(0, +)
        #expect(out >= 5, "messages out: \(out)")
        #expect((m["raftmq_pull_latency_seconds_count"] ?? 0) >= 1)
        #expect((m["raftmq_log_syncs_total"] ?? 0) >= 1 && (m["raftmq_log_synced_bytes_total"] ?? 0) > 0)
        // warmMapedFileEnable is on by default with SYNC_FLUSH: the store has written zeros ahead of its end.
        #expect((m["raftmq_log_prepared_bytes_total"] ?? 0) >= Double(1 << 20) && (m["raftmq_log_prepare_syncs_total"] ?? 0) >= 1)
        #expect(m["raftmq_log_prepare_failures_total"] == 0)
        #expect((m["raftmq_log_size_bytes"] ?? 0) > 0 && (m["process_resident_memory_bytes"] ?? 0) > 1_000_000)
        #expect(m["raftmq_disk_used_ratio"].map { $0 > 0 && $0 < 1 } == true)
        // A follower has no progress of its peers.
        let f = try metrics(follower)
        #expect(f["raftmq_raft_role{role=\"follower\"}"] == 1)
        #expect(!f.keys.contains { $0.hasPrefix("raftmq_raft_peer_match_index") }, "\(f.keys.sorted())")

        // A deleted topic's series leave /metrics (the deletion reaches every member through the log).
        let deleted = try admin.run(["deleteTopic", "-n", ns, "-t", "MetricsTopic", "-c", "RaftCluster"])
        #expect(deleted.status == 0, "\(deleted.stdout)\(deleted.stderr)")
        var left: [String] = []
        for _ in 0..<50 {
            left = try nodes.flatMap { n in try metrics(n).keys.filter { $0.contains("topic=\"MetricsTopic\"") } }
            if left.isEmpty { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(left.isEmpty, "series of the deleted topic: \(left)")

        // mqbench against the group: an open-loop produce at 200 sends/s, then a consume of all of them,
        // each with INTERFACES.md's final JSON line.
        let bench = Executable("mqbench")
        let produced = try bench.run(["produce", "-n", ns, "-t", "BenchTopic", "--size", "256", "--rate", "200", "--concurrency", "16",
                                      "--duration", "2", "--warmup", "0", "--json"])
        #expect(produced.status == 0, "\(produced.stderr)")
        let p = try #require(try JSONSerialization.jsonObject(with: Data((produced.stdout.split(separator: "\n").last ?? "").utf8)) as? [String: Any],
                             "\(produced.stdout)")
        for key in ["sent", "failed", "msgsPerSec", "mbPerSec", "p50Ms", "p99Ms", "p999Ms", "maxMs"] { #expect(p[key] != nil, "produce JSON lacks \(key)") }
        let sentCount = p["sent"] as? Int ?? 0
        // The rate holds the pace: about 400 in 2 s (a slow debug machine may start fewer, never more).
        #expect(sentCount >= 100 && sentCount <= 440 && p["failed"] as? Int == 0, "\(p)")
        let drained = try bench.run(["consume", "-n", ns, "-t", "BenchTopic", "--duration", "20", "--max-count", "\(sentCount)", "--json"])
        #expect(drained.status == 0, "\(drained.stderr)")
        let c = try #require(try JSONSerialization.jsonObject(with: Data((drained.stdout.split(separator: "\n").last ?? "").utf8)) as? [String: Any],
                             "\(drained.stdout)")
        #expect(c["received"] as? Int == sentCount && c["sent"] as? Int == sentCount && c["p99Ms"] != nil, "\(c)")

        // Each broker's log file (logDir of conf/dledger-local): the boot line and the role changes
        // with their term and reason.
        let leaderLog = try String(contentsOfFile: home + "/dledger/\(leader.name)/logs/broker.log", encoding: .utf8)
        #expect(leaderLog.contains("The broker[RaftNode00, \(leader.brokerAddress)] boot success."), "\(leaderLog.suffix(2_000))")
        let roleLine = leaderLog.split(separator: "\n").first { $0.contains("raft role changed") && $0.contains("role=leader") }
        #expect(roleLine?.contains("reason=\"election won\"") == true && roleLine?.contains("term=\(elected.term)") == true, "\(roleLine ?? "no role line")")
        #expect(leaderLog.split(separator: "\n").allSatisfy { $0.count > 24 && ($0.dropFirst(24).hasPrefix("INFO ") || $0.dropFirst(24).hasPrefix("WARN ") || $0.dropFirst(24).hasPrefix("ERROR") || $0.dropFirst(24).hasPrefix("DEBUG")) },
                "every line is 'yyyy-MM-dd HH:mm:ss.SSS LEVEL ...'")

        // Pid files, and mqshutdown stopping exactly the processes they name.
        let runDir = home + "/run"
        for n in nodes {
            let text = try String(contentsOfFile: runDir + "/broker-RaftNode00-\(n.name).pid", encoding: .utf8)
            #expect(text.hasPrefix("\(n.process!.processIdentifier)\n") && text.contains("broker-\(n.name).conf"), "\(text)")
        }
        // A stale file naming a live process that is not a broker (this test runner) is removed, not signalled.
        let stale = runDir + "/broker-Stale-n9.pid"
        try "\(getpid())\n/nowhere.conf\n".write(toFile: stale, atomically: true, encoding: .utf8)
        let shutdown = Executable("mqshutdown")
        let env = ["RAFTMQ_RUN_DIR": runDir, "PATH": "/usr/bin:/bin"]
        let one = try shutdown.run(["broker", "-c", follower.conf], environment: env)
        #expect(one.status == 0 && one.stdout.contains("Send shutdown request to mqbroker(\(follower.process!.processIdentifier)) OK"), "\(one.stdout)\(one.stderr)")
        follower.process!.waitUntilExit()
        #expect(follower.process!.terminationStatus == 0)
        #expect(nodes.filter { $0 !== follower }.allSatisfy { $0.process!.isRunning }, "-c stopped only that broker")
        let all = try shutdown.run(["broker"], environment: env)
        #expect(all.status == 0, "\(all.stdout)\(all.stderr)")
        #expect(all.stdout.contains("removed a stale pid file \(stale)"), "\(all.stdout)")
        for n in nodes {
            n.process!.waitUntilExit()
            #expect(n.process!.terminationStatus == 0, "\(n.name) exit status after mqshutdown")
            #expect(!FileManager.default.fileExists(atPath: runDir + "/broker-RaftNode00-\(n.name).pid"), "the pid file of \(n.name) outlived it")
        }
        let none = try shutdown.run(["broker"], environment: env)
        #expect(none.status == 1 && none.stdout.contains("No mqbroker running."))
    }
}

/// `/metrics` of a broker as samples keyed `name{label="value",...}` (labels sorted), parsed by
/// prometheus_client's text-format parser (Debian's python3-prometheus-client), which rejects anything
/// that is not valid exposition.
func prometheusSamples(host: String, port: UInt16) throws -> [String: Double] {
    let name = "\(host):\(port)"
    let body = try #require(httpGet(host: host, port: port, path: "/metrics"), "no /metrics from \(name)")
    let script = """
        import json, sys
        from prometheus_client.parser import text_string_to_metric_families
        out = {}
        for family in text_string_to_metric_families(sys.stdin.read()):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[s.name + ("{" + labels + "}" if labels else "")] = s.value
        print(json.dumps(out))
        """
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    p.arguments = ["-c", script]
    let input = Pipe(), output = Pipe(), errors = Pipe()
    p.standardInput = input
    p.standardOutput = output
    p.standardError = errors
    try p.run()
    input.fileHandleForWriting.write(Data(body.utf8))
    try input.fileHandleForWriting.close()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    let why = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    try #require(p.terminationStatus == 0, "prometheus_client rejected /metrics of \(name): \(why)\n\(body.prefix(2_000))")
    return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Double])
}
