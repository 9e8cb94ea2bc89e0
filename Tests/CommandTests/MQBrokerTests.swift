import Foundation
import Testing
import TestSupport

/// `mqbroker` as an operator runs it.
@Suite(.ownThreads) struct MQBrokerTests {
    let broker = Executable("mqbroker")

    func confFiles() throws -> [String] {
        let root = packageRoot + "/conf"
        let all = try #require(FileManager.default.enumerator(atPath: root)?.allObjects as? [String])
        return all.filter { $0.hasSuffix(".conf") || $0.hasSuffix(".properties") }.sorted().map { root + "/" + $0 }
    }

    @Test func printsTheEffectiveConfigurationOfEverySampleFile() throws {
        let files = try confFiles().filter { !$0.contains("/namesrv") }
        #expect(files.count >= 14)
        for file in files {
            let out = try broker.run(["-c", file, "-p"], environment: ["HOME": "/home/test", "RAFTMQ_HOME": "/tmp/raftmq-home"])
            #expect(out.status == 0, "\(file): \(out.stderr)")
            #expect(out.stderr.isEmpty, "\(file) printed warnings: \(out.stderr)")
            let lines = out.stdout.split(separator: "\n").map(String.init)
            #expect(lines == lines.sorted(), "\(file): output is not sorted")
            #expect(lines.allSatisfy { $0.contains("=") }, "\(file): not key=value lines")
            #expect(lines.contains { $0.hasPrefix("brokerClusterName=") })
        }
    }

    @Test func theGuidesRaftNodeAsWritten() throws {
        // The guide's own file, hosts mq1..mq3 unresolvable here: -p must still work.
        let out = try broker.run(["-c", packageRoot + "/conf/dledger/broker-n0.conf", "-p"], environment: ["HOME": "/home/test"])
        #expect(out.status == 0, "\(out.stderr)")
        let lines = Set(out.stdout.split(separator: "\n").map(String.init))
        for expected in [
            "brokerClusterName=RaftCluster", "brokerName=RaftNode00", "listenPort=30911", "enableDLegerCommitLog=true",
            "dLegerGroup=RaftNode00", "dLegerPeers=n0-mq1:40911;n1-mq2:40911;n2-mq3:40911", "dLegerSelfId=n0",
            "namesrvAddr=mq1:9876;mq2:9876;mq3:9876", "httpListenPort=30913", "sendMessageThreadPoolNums=16", "brokerId=-1",
        ] {
            #expect(lines.contains(expected), "missing \(expected)")
        }
    }

    @Test func localRaftNodesBindTheirOwnLoopbackAddresses() throws {
        for (node, address) in [("n0", "127.0.0.1"), ("n1", "127.0.0.2"), ("n2", "127.0.0.3")] {
            let out = try broker.run(["-c", packageRoot + "/conf/dledger-local/broker-\(node).conf", "-p"], environment: ["HOME": "/home/test", "RAFTMQ_HOME": "/tmp/rh"])
            #expect(out.status == 0, "\(out.stderr)")
            let lines = Set(out.stdout.split(separator: "\n").map(String.init))
            #expect(lines.contains("bindAddress=\(address)"))
            #expect(lines.contains("dLegerSelfId=\(node)"))
            #expect(lines.contains("dLegerPeers=n0-127.0.0.1:40911;n1-127.0.0.2:40911;n2-127.0.0.3:40911"))
            #expect(lines.contains { $0.hasPrefix("storePathRootDir=/tmp/rh/") }, "RAFTMQ_HOME not used: \(out.stdout)")
        }
    }

    /// A group of one without nameservers (a test bench, or nameservers added later) keeps serving:
    /// nothing to register with is not a reason to stop. It writes its pid file and log file, and a
    /// SIGTERM ends it with status 0, its pid file gone.
    @Test func aSingleNodeGroupWithoutNameserversKeepsServingUntilSigterm() async throws {
        let dir = NSTemporaryDirectory() + "raftmq-single-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let conf = dir + "/single.conf"
        try """
            brokerClusterName=SingleCluster
            brokerName=Single
            bindAddress=127.0.0.9
            brokerIP1=127.0.0.9
            listenPort=50911
            storePathRootDir=\(dir)/store
            logDir=\(dir)/logs
            enableDLegerCommitLog=true
            dLegerGroup=Single
            dLegerPeers=n0-127.0.0.9:50940
            dLegerSelfId=n0

            """.write(toFile: conf, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: broker.path)
        p.arguments = ["-c", conf]
        p.environment = ["HOME": dir, "RAFTMQ_RUN_DIR": dir + "/run", "PATH": "/usr/bin:/bin"]
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        var healthy = false
        // Generous: with the rest of the suite running in parallel a debug broker has taken 30 s to start.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline && p.isRunning && !healthy {
            healthy = httpGet(host: "127.0.0.9", port: 50913, path: "/healthz") != nil
            if !healthy { try await Task.sleep(for: .milliseconds(50)) }
        }
        let log = (try? String(contentsOfFile: dir + "/logs/broker.log", encoding: .utf8)) ?? "(no log file)"
        #expect(healthy, "no healthy leader; the broker \(p.isRunning ? "runs" : "exited with \(p.terminationStatus)"); last HTTP error: \(lastHTTPError.withLock { $0 })\n\(log)")
        try await Task.sleep(for: .seconds(1))
        #expect(p.isRunning, "the broker stopped on its own\n\(log)")
        #expect(httpGet(host: "127.0.0.9", port: 50913, path: "/raft/state")?.contains("\"role\":\"leader\"") == true)
        let pidFile = dir + "/run/broker-Single-n0.pid"
        #expect((try? String(contentsOfFile: pidFile, encoding: .utf8))?.hasPrefix("\(p.processIdentifier)\n") == true)
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(!FileManager.default.fileExists(atPath: pidFile), "the pid file outlived a clean stop")
    }

    @Test func aBadFileExitsOneNamingFileLineAndKeyAndWritesNothing() throws {
        let dir = NSTemporaryDirectory() + "raftmq-badconf-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/broker-n0.conf"
        let store = dir + "/store"
        let lines = (1...13).map { "# comment \($0)" } + ["listenPort=30911x", "storePathRootDir=\(store)"]
        try lines.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        for arguments in [["-c", file, "-p"], ["-c", file]] {
            let out = try broker.run(arguments)
            #expect(out.status == 1)
            #expect(out.stderr.contains("broker-n0.conf:14: listenPort: \"30911x\" is not a port number"), "\(out.stderr)")
            #expect(out.stdout.isEmpty)
            #expect(!FileManager.default.fileExists(atPath: store), "a bad file must start and write nothing")
        }
        let missing = try broker.run(["-c", dir + "/nope.conf", "-p"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("nope.conf"))
    }

    @Test func anUnknownKeyIsAWarningNamingTheNearestKey() throws {
        let dir = NSTemporaryDirectory() + "raftmq-warn-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/b.conf"
        try "brokerName=b\nlistenport=10911\n".write(toFile: file, atomically: true, encoding: .utf8)
        let out = try broker.run(["-c", file, "-p"])
        #expect(out.status == 0)
        #expect(out.stderr.contains("b.conf:2"), "\(out.stderr)")
        #expect(out.stderr.contains("listenport"))
        #expect(out.stderr.contains("listenPort"))
    }

    @Test func dashNOverridesTheNameServers() throws {
        let out = try broker.run(["-c", packageRoot + "/conf/2m-2s-async/broker-a.properties", "-p", "-n", "10.1.1.1:9876;10.1.1.2:9876"], environment: ["HOME": "/home/test"])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout.contains("namesrvAddr=10.1.1.1:9876;10.1.1.2:9876\n"))
        #expect(out.stdout.contains("mappedFileSizeCommitLog=1073741824\n"))  // the guide's legacy spelling
    }
}
