/// Parsing of single values, each failure a message the loader prefixes with file, line and key.
enum Values {
    static func int(_ text: String, _ range: ClosedRange<Int64>, what: String = "an integer") throws(ValueError) -> Int64 {
        guard let v = Int64(text) else { throw ValueError("\(text.debugDescription) is not \(what)") }
        guard range.contains(v) else { throw ValueError("\(v) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return v
    }

    static func port(_ text: String) throws(ValueError) -> Int {
        guard let v = Int(text), (1...65535).contains(v) else { throw ValueError("\(text.debugDescription) is not a port number") }
        return v
    }

    /// Java's Boolean.parseBoolean treats every word but "true" as false; a typo then silently turns
    /// a feature off. Here only true and false (any case) are accepted.
    static func bool(_ text: String) throws(ValueError) -> Bool {
        switch text.lowercased() {
        case "true": return true
        case "false": return false
        default: throw ValueError("\(text.debugDescription) is not true or false")
        }
    }

    /// RocketMQ's topic/group name rule, used for broker and cluster names.
    static func name(_ text: String) throws(ValueError) -> String {
        guard !text.isEmpty, text.count <= 127,
            text.unicodeScalars.allSatisfy({ ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "%|_-".unicodeScalars.contains($0) })
        else { throw ValueError("\(text.debugDescription) is not a valid name (letters, digits, %, |, _ and -, at most 127)") }
        return text
    }

    /// `host:port;host:port` (hosts are not resolved here: names like mq1 are fine).
    static func addressList(_ text: String) throws(ValueError) -> [HostPort] {
        var out: [HostPort] = []
        for part in text.split(separator: ";", omittingEmptySubsequences: true) {
            out.append(try hostPort(String(part).trimmingSpaces, whole: text))
        }
        guard !out.isEmpty else { throw ValueError("\(text.debugDescription) names no host:port") }
        return out
    }

    static func hostPort(_ text: String, whole: String) throws(ValueError) -> HostPort {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw ValueError("\(text.debugDescription) in \(whole.debugDescription) is not [ipv6]:port")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw ValueError("\(text.debugDescription) in \(whole.debugDescription) has no :port")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" || $0 == ":" }) else {
            throw ValueError("\(text.debugDescription) in \(whole.debugDescription) has no valid host")
        }
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw ValueError("\(String(portText).debugDescription) in \(whole.debugDescription) is not a port number")
        }
        return HostPort(host: String(host), port: port)
    }

    /// `deleteWhen`: hours 0-23 separated by `;`.
    static func hours(_ text: String) throws(ValueError) -> String {
        let parts = text.split(separator: ";", omittingEmptySubsequences: true)
        guard !parts.isEmpty, parts.allSatisfy({ Int($0.trimmingSpaces).map { (0...23).contains($0) } ?? false }) else {
            throw ValueError("\(text.debugDescription) is not a list of hours 0-23 separated by ';'")
        }
        return text
    }

    /// `messageDelayLevel`: durations like `1s 5s 1m 2h` separated by spaces.
    static func delayLevels(_ text: String) throws(ValueError) -> String {
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        guard !parts.isEmpty, parts.allSatisfy({ p in
            guard let unit = p.last, "smhd".contains(unit), let n = Int(p.dropLast()) else { return false }
            return n > 0
        }) else { throw ValueError("\(text.debugDescription) is not a list of delays like \"1s 5s 1m 2h\"") }
        return text
    }
}

/// A host and port as written (not resolved).
public struct HostPort: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

extension StringProtocol {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
