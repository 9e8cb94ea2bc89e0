import Foundation
import Testing
import TestSupport

@Suite(.ownThreads) struct MQBenchTests {
    @Test func storageBenchmarkRunsAndReportsEveryFigure() throws {
        let tmp = NSTemporaryDirectory() + "raftmq-bench-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: tmp) }
        let out = try Executable("mqbench").run([
            "storage", "--dir", tmp, "--duration", "0.2", "--recovery-megabytes", "2", "--concurrency", "1,4",
            "--segment-bytes", "1048576", "--json",
        ])
        #expect(out.status == 0, "\(out.stderr)")
        let json = try #require(out.stdout.split(separator: "\n").last)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        for key in ["raw1", "raw4", "sync1", "sync4", "async4", "rawReadCold", "recoveryWarm", "recoveryCold", "sync4_vs_raw", "rawZeroed4", "sync4_vs_rawZeroed"] {
            #expect(object[key] != nil, "missing \(key) in \(json)")
        }
        let sync4 = try #require(object["sync4"] as? [String: Any])
        #expect((sync4["opsPerSec"] as? Double ?? 0) > 0)
        #expect(!FileManager.default.fileExists(atPath: tmp), "the scratch directory is removed")
    }

    @Test func codecBenchmarkRunsAndReportsEveryFigure() throws {
        let out = try Executable("mqbench").run(["codec", "--iterations", "200", "--rounds", "3", "--json"])
        #expect(out.status == 0, "\(out.stderr)")
        let json = try #require(out.stdout.split(separator: "\n").last)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        for key in ["requestDecodeNs", "answerEncodeNs", "answerBuildEncodeNs", "requestEncodeNs", "answerDecodeNs", "recordBuildNs", "entryEncodeNs", "bodyCRC32Ns", "recordCRC32CNs", "appendEncodePerEntryNs", "appendDecodePerEntryNs"] {
            #expect((object[key] as? Double ?? 0) > 0, "missing \(key) in \(json)")
        }
        #expect(try Executable("mqbench").run(["codec", "--rounds", "0"]).status != 0)
    }

    @Test func badArgumentsAreRefused() throws {
        let out = try Executable("mqbench").run(["storage", "--concurrency", "0"])
        #expect(out.status != 0)
        #expect(out.stderr.contains("concurrency"))
    }
}
