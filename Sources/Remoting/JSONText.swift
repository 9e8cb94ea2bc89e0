/// Compact JSON as fastjson writes RocketMQ's beans (rocketmq-protocol.md §2.5): no whitespace (Go's
/// route parser breaks on it), object keys in alphabetical order, nulls left out, and numeric map keys
/// quoted (`{"0":"ip:port"}`), which every client parses.
public indirect enum JSONText: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case string(String)
    case array([JSONText])
    /// Keys are written sorted; `.null` members are dropped.
    case object([String: JSONText])

    public var serialized: String {
        var out = ""
        write(into: &out)
        return out
    }

    /// fastjson's PrettyFormat (what RocketMQ's `toJson(true)` prints): one member per line, tabs.
    public var pretty: String {
        var out = ""
        writePretty(into: &out, depth: 0)
        return out
    }

    func writePretty(into out: inout String, depth: Int) {
        let indent = String(repeating: "\t", count: depth + 1), closing = String(repeating: "\t", count: depth)
        switch self {
        case .array(let items) where !items.isEmpty:
            out += "[\n"
            for (k, v) in items.enumerated() {
                out += indent
                v.writePretty(into: &out, depth: depth + 1)
                out += k == items.count - 1 ? "\n" : ",\n"
            }
            out += closing + "]"
        case .object(let members) where members.contains(where: { if case .null = $0.value { return false } else { return true } }):
            out += "{\n"
            let keys = members.keys.sorted().filter { if case .null = members[$0]! { return false } else { return true } }
            for (k, key) in keys.enumerated() {
                out += indent
                JSONText.quote(key, into: &out)
                out += ":"
                members[key]!.writePretty(into: &out, depth: depth + 1)
                out += k == keys.count - 1 ? "\n" : ",\n"
            }
            out += closing + "}"
        default:
            write(into: &out)
        }
    }

    /// Reads what JSONSerialization produced back into a JSONText (numbers as integers when whole).
    public init?(foundation value: Any) {
        switch value {
        case let s as String: self = .string(s)
        case let b as Bool where type(of: value) == Bool.self: self = .bool(b)
        case let n as Int: self = .int(Int64(n))
        case let n as Int64: self = .int(n)
        case let a as [Any]:
            var items: [JSONText] = []
            for v in a { guard let j = JSONText(foundation: v) else { return nil }; items.append(j) }
            self = .array(items)
        case let o as [String: Any]:
            var members: [String: JSONText] = [:]
            for (k, v) in o { guard let j = JSONText(foundation: v) else { return nil }; members[k] = j }
            self = .object(members)
        default:
            return nil
        }
    }

    func write(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .string(let s): JSONText.quote(s, into: &out)
        case .array(let items):
            out += "["
            for (k, v) in items.enumerated() {
                if k > 0 { out += "," }
                v.write(into: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            var first = true
            for key in members.keys.sorted() {
                let v = members[key]!
                if case .null = v { continue }
                if !first { out += "," }
                first = false
                JSONText.quote(key, into: &out)
                out += ":"
                v.write(into: &out)
            }
            out += "}"
        }
    }

    static func quote(_ s: String, into out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }
}
