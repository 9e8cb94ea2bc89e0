/// One `key=value` of a properties file, with the line it started on.
public struct PropertyEntry: Sendable, Equatable {
    public var key: String
    public var value: String
    public var line: Int
}

/// Reads `.properties` text the way `java.util.Properties.load` does, which is what RocketMQ uses:
/// `key=value`, `key = value`, `key:value`, `key value`; `#` and `!` comment lines; blank lines;
/// LF, CRLF and CR line ends; a line ending in an odd number of backslashes continues on the next;
/// escapes `\t \n \r \f \uXXXX`, and `\x` for any other x. One difference on purpose: trailing
/// whitespace of a value is removed (Java keeps it, and `brokerName=a ` then silently differs from
/// `a`).
public enum PropertiesParser {
    /// Parses bytes: UTF-8, or Latin-1 when the bytes are not valid UTF-8 (Java reads properties as
    /// Latin-1; files written on Chinese systems often carry UTF-8 comments).
    public static func parse(_ bytes: [UInt8]) -> [PropertyEntry] {
        let text = String(validating: bytes, as: UTF8.self) ?? String(bytes.map { Character(Unicode.Scalar($0)) })
        return parse(text)
    }

    public static func parse(_ text: String) -> [PropertyEntry] {
        let scalars = Array(text.unicodeScalars)
        var entries: [PropertyEntry] = []
        var i = 0
        var lineNumber = 1
        while i < scalars.count {
            // One logical line: natural lines joined where a line ends in an odd number of backslashes.
            let startLine = lineNumber
            var logical: [Unicode.Scalar] = []
            var atLineStart = true
            var isComment = false
            while i < scalars.count {
                let c = scalars[i]
                if c == "\n" || c == "\r" {
                    if c == "\r" && i + 1 < scalars.count && scalars[i + 1] == "\n" { i += 1 }
                    i += 1
                    lineNumber += 1
                    var backslashes = 0
                    var j = logical.count - 1
                    while j >= 0 && logical[j] == "\\" { backslashes += 1; j -= 1 }
                    if !isComment && backslashes % 2 == 1 {
                        logical.removeLast()
                        // Leading whitespace of the continuation is skipped.
                        while i < scalars.count && (scalars[i] == " " || scalars[i] == "\t" || scalars[i] == "\u{0C}") { i += 1 }
                        continue
                    }
                    break
                }
                if atLineStart && (c == " " || c == "\t" || c == "\u{0C}") {
                    i += 1
                    continue
                }
                if atLineStart && (c == "#" || c == "!") { isComment = true }
                atLineStart = false
                logical.append(c)
                i += 1
            }
            if isComment || logical.isEmpty { continue }
            if let entry = splitKeyValue(logical, line: startLine) { entries.append(entry) }
        }
        return entries
    }

    static func splitKeyValue(_ s: [Unicode.Scalar], line: Int) -> PropertyEntry? {
        var k = 0
        var keyEnd = s.count
        var valueStart = s.count
        while k < s.count {
            let c = s[k]
            if c == "\\" {
                k += 2
                continue
            }
            if c == "=" || c == ":" || c == " " || c == "\t" || c == "\u{0C}" {
                keyEnd = k
                var v = k
                while v < s.count && (s[v] == " " || s[v] == "\t" || s[v] == "\u{0C}") { v += 1 }
                if v < s.count && (s[v] == "=" || s[v] == ":") && (c == " " || c == "\t" || c == "\u{0C}") { v += 1 }
                else if c == "=" || c == ":" { v = k + 1 }
                while v < s.count && (s[v] == " " || s[v] == "\t" || s[v] == "\u{0C}") { v += 1 }
                valueStart = v
                break
            }
            k += 1
        }
        let key = unescape(Array(s[0..<min(keyEnd, s.count)]))
        var value = valueStart < s.count ? unescape(Array(s[valueStart...])) : ""
        while let last = value.unicodeScalars.last, last == " " || last == "\t" || last == "\u{0C}" { value.unicodeScalars.removeLast() }
        guard !key.isEmpty else { return nil }
        return PropertyEntry(key: key, value: value, line: line)
    }

    static func unescape(_ s: [Unicode.Scalar]) -> String {
        var out = String.UnicodeScalarView()
        var i = 0
        while i < s.count {
            let c = s[i]
            guard c == "\\", i + 1 < s.count else {
                if c != "\\" { out.append(c) }
                i += 1
                continue
            }
            let n = s[i + 1]
            i += 2
            switch n {
            case "t": out.append("\t")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "f": out.append("\u{0C}")
            case "u":
                var hex = ""
                while hex.count < 4 && i < s.count, s[i].properties.isASCIIHexDigit {
                    hex.unicodeScalars.append(s[i])
                    i += 1
                }
                if hex.count == 4, let v = UInt32(hex, radix: 16), let scalar = Unicode.Scalar(v) {
                    out.append(scalar)
                } else {
                    out.append(contentsOf: "u".unicodeScalars)
                    out.append(contentsOf: hex.unicodeScalars)
                }
            default: out.append(n)
            }
        }
        return String(out)
    }
}

/// `${NAME}` and `${NAME:-default}` in values (RaftMQ's addition, so the `*-local` samples can put
/// their data under `$RAFTMQ_HOME`). A `$` not followed by `{` is kept as it is.
enum EnvironmentExpansion {
    static func expand(_ value: String, environment: [String: String]) throws(ValueError) -> String {
        guard value.contains("${") else { return value }
        var out = ""
        var rest = Substring(value)
        while let start = rest.range(of: "${") {
            out += rest[..<start.lowerBound]
            guard let close = rest[start.upperBound...].firstIndex(of: "}") else {
                throw ValueError("\"${\" without a closing \"}\" in \(value.debugDescription)")
            }
            let body = rest[start.upperBound..<close]
            let name: Substring
            var fallback: Substring? = nil
            if let sep = body.range(of: ":-") {
                name = body[..<sep.lowerBound]
                fallback = body[sep.upperBound...]
            } else {
                name = body
            }
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw ValueError("\"${\(body)}\" is not a variable reference (use ${NAME} or ${NAME:-default})")
            }
            if let v = environment[String(name)], !v.isEmpty {
                out += v
            } else if let fallback {
                out += fallback
            } else {
                throw ValueError("environment variable \(name) is not set (write ${\(name):-default} to give a default)")
            }
            rest = rest[rest.index(after: close)...]
        }
        return out + rest
    }
}

extension StringProtocol {
    func range(of needle: String) -> Range<Index>? {
        guard !needle.isEmpty else { return nil }
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(needle) {
                return i..<self.index(i, offsetBy: needle.count)
            }
            i = index(after: i)
        }
        return nil
    }
}

/// Levenshtein distance, case-insensitive: the nearest known key for an unknown one.
enum EditDistance {
    static func distance(_ a: String, _ b: String) -> Int {
        let x = Array(a.lowercased().unicodeScalars)
        let y = Array(b.lowercased().unicodeScalars)
        if x.isEmpty { return y.count }
        if y.isEmpty { return x.count }
        var previous = Array(0...y.count)
        var current = [Int](repeating: 0, count: y.count + 1)
        for i in 1...x.count {
            current[0] = i
            for j in 1...y.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1))
            }
            swap(&previous, &current)
        }
        return previous[y.count]
    }

    static func nearest(_ key: String, among candidates: [String]) -> String? {
        let scored = candidates.map { ($0, distance(key, $0)) }.min { $0.1 < $1.1 }
        guard let (best, d) = scored, d <= max(2, key.count / 3) else { return nil }
        return best
    }
}
