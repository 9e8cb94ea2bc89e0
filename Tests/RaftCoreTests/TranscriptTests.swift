import Foundation
import Testing
@testable import RaftCore
import TestSupport

/// Runs every script in Transcripts/ (commands in TranscriptCommands.swift, format in
/// TranscriptFile.swift). If one fails, read the diff; when the new output is right, regenerate with
///
///     RAFT_TRANSCRIPT_REWRITE=1 swift test --scratch-path ... --filter Transcript
///
/// and review `git diff Tests/RaftCoreTests/Transcripts` before committing: only commit changes
/// you understand.
@Suite(.ownThreads) struct TranscriptTests {
    /// Found next to this source file at run time (no SwiftPM resources needed).
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Transcripts")

    static let fileNames: [String] = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasSuffix(".txt") }.sorted()
    }()

    static var rewriting: Bool { ProcessInfo.processInfo.environment["RAFT_TRANSCRIPT_REWRITE"] == "1" }

    @Test(arguments: fileNames)
    func transcript(_ name: String) throws {
        let url = Self.directory.appendingPathComponent(name)
        let text = try String(contentsOf: url, encoding: .utf8)
        let file: TranscriptFile
        do { file = try TranscriptFile(parsing: text) } catch {
            Issue.record("\(name): \(error)")
            return
        }
        let cluster = TranscriptCluster()
        var outputs: [[String]] = []
        for item in file.items {
            guard case .block(let command, let expected, let line) = item else { continue }
            let actual: [String]
            do { actual = try cluster.run(command) } catch {
                Issue.record("\(name):\(line): `\(command)`: \(error)")
                return
            }
            outputs.append(actual)
            if Self.rewriting { continue }
            guard let expected else {
                Issue.record("\(name):\(line): `\(command)` has no `----` and expected output (set RAFT_TRANSCRIPT_REWRITE=1 to write it)")
                continue
            }
            if let mismatch = transcriptMismatch(file: name, line: line, command: command, expected: expected, actual: actual) {
                Issue.record(Comment(rawValue: mismatch))
            }
        }
        if Self.rewriting {
            let newText = file.rendered(outputs: outputs)
            if newText != text { try newText.write(to: url, atomically: true, encoding: .utf8) }
        }
    }

    @Test func theRequiredTranscriptsExist() {
        let required = ["first_election", "prevote_rejoin", "check_quorum_step_down", "conflict_after_leader_change",
                        "figure8", "leadership_transfer", "preferred_leader", "proposal_limits"]
        for r in required {
            #expect(Self.fileNames.contains(r + ".txt"), "Transcripts/\(r).txt is missing")
        }
    }
}
