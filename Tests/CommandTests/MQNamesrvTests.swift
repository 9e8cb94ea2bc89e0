import Foundation
import Logging
import NIOCore
import NIOPosix
import Remoting
import Testing
import TestSupport

/// `mqnamesrv` as an operator runs it: the sample files, a bad file, a real process that answers
/// route requests and stops on SIGTERM.
@Suite(.ownThreads) struct MQNamesrvTests {
    let namesrv = Executable("mqnamesrv")

    @Test func printsTheSampleConfigurations() throws {
        for k in 1...3 {
            let out = try namesrv.run(["-c", packageRoot + "/conf/namesrv-local/namesrv-\(k).conf", "-p"], environment: ["HOME": "/home/test"])
            #expect(out.status == 0, "\(out.stderr)")
            let lines = Set(out.stdout.split(separator: "\n").map(String.init))
            #expect(lines.contains("listenPort=9876") && lines.contains("bindAddress=127.0.0.\(k)"))
            #expect(lines.contains("kvConfigPath=/home/test/namesrv/kvConfig.json"))
        }
    }

    @Test func aBadFileExitsOneNamingTheLineAndKey() throws {
        let path = NSTemporaryDirectory() + "raftmq-namesrv-bad-\(UUID().uuidString).conf"
        try "listenPort=98x76\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let out = try namesrv.run(["-c", path])
        #expect(out.status == 1)
        #expect(out.stderr.contains(":1: listenPort"), "\(out.stderr)")
    }

    @Test func servesRoutesAndStopsOnSigterm() async throws {
        let home = NSTemporaryDirectory() + "raftmq-namesrv-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: home) }
        // A port of its own, so other suites running at the same time cannot collide with it.
        let conf = home + "/namesrv.conf"
        try "listenPort=19876\nbindAddress=127.0.0.1\n".write(toFile: conf, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: namesrv.path)
        p.arguments = ["-c", conf]
        p.environment = ["HOME": home, "PATH": "/usr/bin:/bin"]
        let log = home + "/namesrv.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try #require(FileHandle(forWritingAtPath: log))
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(20)
        func logText() -> String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        while !logText().contains("The Name Server boot success. serializeType=JSON") && Date() < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(logText().contains("The Name Server boot success. serializeType=JSON"), "\(logText())")

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let client = RemotingClient(group: group, logger: Logger(label: "test"))
        let ns = "127.0.0.1:19876"
        var body = ByteBuffer()
        body.writeString(#"{"filterServerList":[],"topicConfigSerializeWrapper":{"dataVersion":{"counter":1,"timestamp":1},"topicConfigTable":{"TopicTest":{"perm":6,"readQueueNums":4,"topicName":"TopicTest","writeQueueNums":4}}}}"#)
        let reg = try await client.request(ns, .request(code: RequestCode.registerBroker, opaque: 0, extFields: [
            "brokerName": "RaftNode00", "brokerAddr": "127.0.0.1:30911", "clusterName": "RaftCluster", "haServerAddr": "127.0.0.1:30912",
            "brokerId": "0", "compressed": "false", "bodyCrc32": "0"], body: body), timeoutMilliseconds: 3_000)
        #expect(reg.code == ResponseCode.success)
        let route = try await client.request(ns, .request(code: RequestCode.getRouteInfoByTopic, opaque: 0, extFields: ["topic": "TopicTest"]), timeoutMilliseconds: 3_000)
        #expect(route.code == ResponseCode.success)
        await client.close()
        try await group.shutdownGracefully()

        kill(p.processIdentifier, SIGTERM)
        let stopBy = Date().addingTimeInterval(5)
        while p.isRunning && Date() < stopBy { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!p.isRunning, "still running 5 s after SIGTERM")
        if !p.isRunning { #expect(p.terminationStatus == 0) }
    }
}
