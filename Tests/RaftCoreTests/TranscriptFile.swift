import Foundation

/// One transcript file: `#` comments and blank lines kept verbatim, and command blocks
///
///     command arguments
///     ----
///     expected output, one or more lines (never blank)
///
/// A block ends at a blank line or at the end of the file. A command with no `----` yet is allowed
/// only when rewriting: that is how a new script gets its first expected output.
struct TranscriptFile {
    enum Item {
        case verbatim(String)
        /// `line` is the command's 1-based line number in the file.
        case block(command: String, expected: [String]?, line: Int)
    }

    var items: [Item] = []

    struct FormatError: Error, CustomStringConvertible {
        var line: Int
        var message: String
        var description: String { "line \(line): \(message)" }
    }

    init(parsing text: String) throws(FormatError) {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        var k = 0
        while k < lines.count {
            let line = lines[k]
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") {
                items.append(.verbatim(line))
                k += 1
                continue
            }
            if trimmed == "----" { throw FormatError(line: k + 1, message: "`----` without a command before it") }
            let commandLine = k + 1
            k += 1
            guard k < lines.count, lines[k] == "----" else {
                items.append(.block(command: trimmed, expected: nil, line: commandLine))
                continue
            }
            k += 1
            var expected: [String] = []
            while k < lines.count, !lines[k].trimmingCharacters(in: .whitespaces).isEmpty {
                expected.append(lines[k])
                k += 1
            }
            items.append(.block(command: trimmed, expected: expected, line: commandLine))
        }
    }

    /// The file's text with each block's output replaced by `outputs[n]` for the n-th block.
    func rendered(outputs: [[String]]) -> String {
        var out: [String] = []
        var n = 0
        for item in items {
            switch item {
            case .verbatim(let line): out.append(line)
            case .block(let command, _, _):
                out.append(command)
                out.append("----")
                out.append(contentsOf: outputs[n])
                n += 1
            }
        }
        return out.joined(separator: "\n") + "\n"
    }
}

/// Says where a block's actual output first departs from the expected one, with both in full.
func transcriptMismatch(file: String, line: Int, command: String, expected: [String], actual: [String]) -> String? {
    if expected == actual { return nil }
    var k = 0
    while k < expected.count, k < actual.count, expected[k] == actual[k] { k += 1 }
    let want = k < expected.count ? expected[k] : "<end of output>"
    let got = k < actual.count ? actual[k] : "<end of output>"
    var text = """
        \(file):\(line + 2 + k): `\(command)` (line \(line)): output line \(k + 1) differs
          expected: \(want)
          actual:   \(got)
        full diff (- expected, + actual):
        """
    for d in lineDiff(expected, actual) { text += "\n" + d }
    text += "\n(after checking the change is right: RAFT_TRANSCRIPT_REWRITE=1 swift test --filter Transcript, then review the diff)"
    return text
}

/// A line diff by longest common subsequence: `  same`, `- expected only`, `+ actual only`.
func lineDiff(_ a: [String], _ b: [String]) -> [String] {
    // lcs[i][j]: the longest common subsequence of a[i...] and b[j...].
    var lcs = Array(repeating: Array(repeating: 0, count: b.count + 1), count: a.count + 1)
    for i in stride(from: a.count - 1, through: 0, by: -1) {
        for j in stride(from: b.count - 1, through: 0, by: -1) {
            lcs[i][j] = a[i] == b[j] ? lcs[i + 1][j + 1] + 1 : max(lcs[i + 1][j], lcs[i][j + 1])
        }
    }
    var out: [String] = []
    var i = 0, j = 0
    while i < a.count || j < b.count {
        if i < a.count, j < b.count, a[i] == b[j] {
            out.append("  " + a[i]); i += 1; j += 1
        } else if i < a.count, j == b.count || lcs[i + 1][j] >= lcs[i][j + 1] {
            out.append("- " + a[i]); i += 1
        } else {
            out.append("+ " + b[j]); j += 1
        }
    }
    return out
}
