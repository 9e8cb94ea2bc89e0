import CZlib
import Remoting
import Foundation

/// The JSON bodies of the nameserver's answers, and the REGISTER_BROKER body in both its forms
/// (rocketmq-protocol.md §2.4).
public enum NameServerBodies {
    public struct BodyError: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ d: String) { description = d }
    }

    static func brokerData(_ b: RouteTable.BrokerData) -> JSONText {
        var addrs: [String: JSONText] = [:]
        for (id, a) in b.brokerAddrs { addrs[String(id)] = .string(a) }
        return .object(["brokerAddrs": .object(addrs), "brokerName": .string(b.brokerName), "cluster": .string(b.cluster)])
    }

    public static func route(_ r: RouteTable.Route) -> String {
        JSONText.object([
            "brokerDatas": .array(r.brokerDatas.map(brokerData)),
            "filterServerTable": .object([:]),
            "queueDatas": .array(r.queueDatas.map { q in
                .object(["brokerName": .string(q.brokerName), "perm": .int(Int64(q.perm)), "readQueueNums": .int(Int64(q.readQueueNums)),
                         "topicSysFlag": .int(Int64(q.topicSysFlag)), "writeQueueNums": .int(Int64(q.writeQueueNums))])
            }),
        ]).serialized
    }

    public static func clusterInfo(_ t: RouteTable) -> String {
        var brokers: [String: JSONText] = [:]
        for (name, b) in t.brokerAddrTable { brokers[name] = brokerData(b) }
        var clusters: [String: JSONText] = [:]
        for (c, names) in t.clusterAddrTable { clusters[c] = .array(names.sorted().map { .string($0) }) }
        return JSONText.object(["brokerAddrTable": .object(brokers), "clusterAddrTable": .object(clusters)]).serialized
    }

    public static func topicList(_ topics: [String]) -> String {
        JSONText.object(["topicList": .array(topics.map { .string($0) })]).serialized
    }

    public static func kvTable(_ table: [String: String]) -> String {
        JSONText.object(["table": .object(table.mapValues { .string($0) })]).serialized
    }

    /// The topics and data version a broker registers with: RegisterBrokerBody JSON, or (compressed)
    /// its zlib form.
    public static func decodeRegistration(_ body: [UInt8], compressed: Bool) throws(BodyError) -> (RouteTable.DataVersion, [RouteTable.TopicConfig]) {
        compressed ? try decodeCompressed(try inflate(body)) : try decodePlain(body)
    }

    static func object(_ any: Any?, _ what: String) throws(BodyError) -> [String: Any] {
        guard let o = any as? [String: Any] else { throw BodyError("\(what) is not a JSON object") }
        return o
    }

    static func int(_ any: Any?, _ what: String) throws(BodyError) -> Int64 {
        if let n = any as? NSNumber { return n.int64Value }
        if let s = any as? String, let n = Int64(s) { return n }
        throw BodyError("\(what) is not a number")
    }

    static func dataVersion(_ any: Any?) throws(BodyError) -> RouteTable.DataVersion {
        guard let any else { return RouteTable.DataVersion(timestamp: 0, counter: 0) }
        let o = try object(any, "dataVersion")
        return RouteTable.DataVersion(timestamp: try int(o["timestamp"] ?? 0, "dataVersion.timestamp"), counter: try int(o["counter"] ?? 0, "dataVersion.counter"))
    }

    static func decodePlain(_ body: [UInt8]) throws(BodyError) -> (RouteTable.DataVersion, [RouteTable.TopicConfig]) {
        if body.isEmpty { return (RouteTable.DataVersion(timestamp: 0, counter: 0), []) }
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed])
        } catch {
            throw BodyError("the registration body is not JSON: \(error.localizedDescription)")
        }
        let root = try object(parsed, "the registration body")
        let wrapper = try object(root["topicConfigSerializeWrapper"] ?? [String: Any](), "topicConfigSerializeWrapper")
        let version = try dataVersion(wrapper["dataVersion"])
        let table = try object(wrapper["topicConfigTable"] ?? [String: Any](), "topicConfigTable")
        var topics: [RouteTable.TopicConfig] = []
        for (name, value) in table {
            let t = try object(value, "topic \(name)")
            topics.append(RouteTable.TopicConfig(
                topicName: (t["topicName"] as? String) ?? name,
                readQueueNums: Int(try int(t["readQueueNums"] ?? 16, "\(name).readQueueNums")),
                writeQueueNums: Int(try int(t["writeQueueNums"] ?? 16, "\(name).writeQueueNums")),
                perm: Int(try int(t["perm"] ?? 6, "\(name).perm")),
                topicSysFlag: Int(try int(t["topicSysFlag"] ?? 0, "\(name).topicSysFlag"))))
        }
        return (version, topics.sorted { $0.topicName < $1.topicName })
    }

    /// int32 length + DataVersion JSON; int32 topic count; per topic int32 length + "name read write
    /// perm filterType"; int32 length + the filter server list (ignored). Big-endian, as Java's
    /// DataOutputStream writes.
    static func decodeCompressed(_ bytes: [UInt8]) throws(BodyError) -> (RouteTable.DataVersion, [RouteTable.TopicConfig]) {
        var at = 0
        func int32() throws(BodyError) -> Int {
            guard at + 4 <= bytes.count else { throw BodyError("the compressed registration ends early") }
            let v = Int(Int32(bitPattern: UInt32(bytes[at]) << 24 | UInt32(bytes[at + 1]) << 16 | UInt32(bytes[at + 2]) << 8 | UInt32(bytes[at + 3])))
            at += 4
            return v
        }
        func chunk() throws(BodyError) -> [UInt8] {
            let n = try int32()
            guard n >= 0, at + n <= bytes.count else { throw BodyError("the compressed registration has a bad length \(n)") }
            defer { at += n }
            return Array(bytes[at..<(at + n)])
        }
        let versionJSON = try chunk()
        let version: RouteTable.DataVersion
        do {
            version = try dataVersion(try JSONSerialization.jsonObject(with: Data(versionJSON)))
        } catch let e as BodyError {
            throw e
        } catch {
            throw BodyError("the compressed registration's dataVersion is not JSON")
        }
        let count = try int32()
        guard count >= 0 && count <= 1_000_000 else { throw BodyError("the compressed registration claims \(count) topics") }
        var topics: [RouteTable.TopicConfig] = []
        for _ in 0..<count {
            let text = String(decoding: try chunk(), as: UTF8.self)
            let f = text.split(separator: " ")
            guard f.count >= 4, let r = Int(f[1]), let w = Int(f[2]), let p = Int(f[3]) else {
                throw BodyError("a compressed topic entry \"\(text)\" is not \"name read write perm filterType\"")
            }
            topics.append(RouteTable.TopicConfig(topicName: String(f[0]), readQueueNums: r, writeQueueNums: w, perm: p))
        }
        return (version, topics)
    }

    /// zlib inflate, bounded: a body that would inflate past `limit` is refused.
    static func inflate(_ input: [UInt8], limit: Int = 64 << 20) throws(BodyError) -> [UInt8] {
        switch Zlib.inflate(input, limit: limit) {
        case .inflated(let bytes): return bytes
        case .tooLarge: throw BodyError("the compressed registration inflates past \(limit) bytes")
        case .corrupt(let status): throw BodyError("the compressed registration is not a complete zlib stream (zlib status \(status))")
        }
    }
}
