import Foundation
import Logging
import Testing
@testable import ProcessLifecycle
import TestSupport

@Suite(.ownThreads) struct ServerLoggingTests {
    let dir = NSTemporaryDirectory() + "raftmq-logs-" + UUID().uuidString

    @Test func linesHaveRocketMQsShapeAndOneEventStaysOneLine() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = try LogFile(directory: dir + "/a/b", name: "broker.log", bytesMax: 1 << 20, filesKept: 3)
        let logger = Logger(label: "mqbroker") { ServerLogHandler(label: $0, level: .info, file: file) }
        logger.notice("raft role changed", metadata: ["term": "7", "reason": "election won", "role": "leader"])
        logger.debug("not at info")
        logger.warning("two\nlines\r\nhere", metadata: ["path": "a=b", "empty": ""])
        let lines = try String(contentsOfFile: dir + "/a/b/broker.log", encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 3 && lines[2].isEmpty, "\(lines)")
        let first = String(lines[0])
        // yyyy-MM-dd HH:mm:ss.SSS
        #expect(first.range(of: #"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} INFO  mqbroker - raft role changed "#, options: .regularExpression) != nil, "\(first)")
        #expect(first.hasSuffix(#"reason="election won" role=leader term=7"#), "\(first)")
        #expect(lines[1].contains(#"WARN  mqbroker - two\nlines\r\nhere empty="" path="a=b""#), "\(lines[1])")
    }

    @Test func theFileRollsBySizeAndKeepsTheNewestFiles() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = try LogFile(directory: dir, name: "namesrv.log", bytesMax: 4_096, filesKept: 3)
        let line = String(repeating: "x", count: 99) + "\n"
        for _ in 0..<200 { file.append(line) }  // 20,000 bytes: five files' worth
        let names = Set(try FileManager.default.contentsOfDirectory(atPath: dir))
        #expect(names == ["namesrv.log", "namesrv.log.1", "namesrv.log.2"], "\(names)")
        for name in names {
            let size = try FileManager.default.attributesOfItem(atPath: dir + "/" + name)[.size] as! Int
            #expect(size <= 4_096 + 100 && size % 100 == 0, "\(name): \(size) bytes (whole lines only)")
        }
        // A reopened file continues where it was (its size counts toward the next roll).
        let again = try LogFile(directory: dir, name: "namesrv.log", bytesMax: 4_096, filesKept: 3)
        again.append(line)
        #expect(FileManager.default.fileExists(atPath: dir + "/namesrv.log"))
    }

    @Test func aLogDirectoryThatCannotBeCreatedIsANamedError() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: dir + "/plain", contents: Data())
        #expect(throws: LogFileError.self) { _ = try LogFile(directory: dir + "/plain/logs", name: "broker.log", bytesMax: 1 << 20, filesKept: 2) }
        do {
            _ = try LogFile(directory: dir + "/plain/logs", name: "broker.log", bytesMax: 1 << 20, filesKept: 2)
        } catch {
            #expect(error.description.contains(dir + "/plain/logs"), "\(error)")
        }
    }
}

@Suite(.ownThreads) struct PidFileTests {
    let dir = NSTemporaryDirectory() + "raftmq-run-" + UUID().uuidString

    @Test func aPidFileNamesItsProcessAndIsRemovedOnlyByIt() throws {
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let env = ["RAFTMQ_RUN_DIR": dir + "/run"]
        #expect(PidFile.runDirectory(environment: env) == dir + "/run")
        #expect(PidFile.runDirectory(environment: ["HOME": "/h"]) == "/h/.raftmq/run")
        let f = try PidFile.create(kind: .broker, instance: "RaftNode00-n0", configPath: "/etc/x.conf", environment: env)
        #expect(f.path == dir + "/run/broker-RaftNode00-n0.pid")
        #expect(try String(contentsOfFile: f.path, encoding: .utf8) == "\(getpid())\n/etc/x.conf\n")
        let entries = PidFile.entries(kind: .broker, environment: env)
        #expect(entries.map(\.pid) == [getpid()])
        // This process is not an mqbroker: its file counts as stale for mqshutdown.
        #expect(entries.first?.running == false)
        #expect(PidFile.entries(kind: .namesrv, environment: env).isEmpty)
        // Another process took the name: this one leaves the file alone.
        try "1\n\n".write(toFile: f.path, atomically: true, encoding: .utf8)
        f.remove()
        #expect(FileManager.default.fileExists(atPath: f.path))
        let mine = try PidFile.create(kind: .broker, instance: "RaftNode00/n0 x", configPath: nil, environment: env)
        #expect(mine.path == dir + "/run/broker-RaftNode00_n0_x.pid")
        mine.remove()
        #expect(!FileManager.default.fileExists(atPath: mine.path))
    }

    @Test func runningMeansAliveAndRunningThatProgram() throws {
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).lastPathComponent
        let program = try String(contentsOfFile: "/proc/self/cmdline", encoding: .utf8).split(separator: "\0").first.map(String.init) ?? me
        #expect(PidFile.isRunning(getpid(), executable: URL(fileURLWithPath: program).lastPathComponent))
        #expect(!PidFile.isRunning(getpid(), executable: "mqbroker"))
        #expect(!PidFile.isRunning(Int32.max - 1, executable: "mqbroker"))
    }
}
