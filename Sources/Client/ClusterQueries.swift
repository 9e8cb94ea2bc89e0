import Foundation
import NIOCore
import Remoting

/// The admin questions `mqadmin` and the broker's dashboard ask: the clusters as the nameservers see
/// them, every topic, a topic's queues, a consumer group's progress and connections. Answers in
/// RocketMQ's bodies (fastjson), parsed here once for both.
public struct ClusterQueries: Sendable {
    public let nameServers: [String]
    public let remoting: RemotingClient
    public var timeoutMilliseconds: Int64

    public init(nameServers: [String], remoting: RemotingClient, timeoutMilliseconds: Int64 = 3_000) {
        self.nameServers = nameServers
        self.remoting = remoting
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// Every broker group the nameservers know: cluster, name, and address per brokerId.
    public struct ClusterInfo: Sendable, Equatable {
        public struct Group: Sendable, Equatable {
            public var cluster: String
            public var brokerName: String
            public var addresses: [Int64: String]
            public init(cluster: String, brokerName: String, addresses: [Int64: String]) {
                self.cluster = cluster
                self.brokerName = brokerName
                self.addresses = addresses
            }
        }
        /// Sorted by cluster, then name.
        public var groups: [Group]
        /// The nameserver that answered.
        public var answeredBy: String
    }

    /// One queue of a topic on one group (GET_TOPIC_STATS_INFO).
    public struct QueueStats: Sendable, Equatable {
        public var brokerName: String
        public var queueId: Int64
        public var minOffset: Int64
        public var maxOffset: Int64
        public var lastUpdateTimestamp: Int64
    }

    /// One queue's progress for a consumer group (GET_CONSUME_STATS).
    public struct ConsumeRow: Sendable, Equatable {
        public var topic: String
        public var brokerName: String
        public var queueId: Int64
        public var brokerOffset: Int64
        public var consumerOffset: Int64
        public var lastTimestamp: Int64
        public var lag: Int64 { max(0, brokerOffset - consumerOffset) }
    }

    /// Who consumes as a group (GET_CONSUMER_CONNECTION_LIST).
    public struct Connections: Sendable, Equatable {
        public var count: Int
        /// "PULL" or "PUSH".
        public var consumeType: String
        public var messageModel: String
        /// The first client's version number, when one is connected.
        public var version: Int64?
    }

    /// Asks the nameservers in turn until one answers; the answer and who gave it.
    public func askNameServers(_ command: RemotingCommand) async throws(ClientError) -> (RemotingCommand, String) {
        var last = "no nameserver configured"
        for ns in nameServers {
            do {
                return (try await remoting.request(ns, command, timeoutMilliseconds: timeoutMilliseconds), ns)
            } catch {
                last = "\(ns): \(error)"
            }
        }
        throw ClientError("no nameserver answered (\(last))")
    }

    public func clusterInfo() async throws(ClientError) -> ClusterInfo {
        let (answer, ns) = try await askNameServers(.request(code: RequestCode.getBrokerClusterInfo, opaque: 0))
        guard answer.code == ResponseCode.success, let info = jsonBody(answer) as? [String: Any],
              let clusters = info["clusterAddrTable"] as? [String: [String]], let brokers = info["brokerAddrTable"] as? [String: Any] else {
            throw ClientError("the nameserver's cluster info is not what RocketMQ sends (code \(answer.code))", code: answer.code)
        }
        var groups: [ClusterInfo.Group] = []
        for cluster in clusters.keys.sorted() {
            for name in clusters[cluster]!.sorted() {
                var addresses: [Int64: String] = [:]
                for (k, v) in ((brokers[name] as? [String: Any])?["brokerAddrs"] as? [String: Any]) ?? [:] {
                    if let id = Int64(k), let a = v as? String { addresses[id] = a }
                }
                groups.append(ClusterInfo.Group(cluster: cluster, brokerName: name, addresses: addresses))
            }
        }
        return ClusterInfo(groups: groups, answeredBy: ns)
    }

    /// The master (brokerId 0) address of every group of `cluster` that has one now.
    public func masters(of cluster: String) async throws(ClientError) -> [(brokerName: String, address: String)] {
        let info = try await clusterInfo()
        guard info.groups.contains(where: { $0.cluster == cluster }) else { throw ClientError("no cluster \(cluster) at the nameservers") }
        return info.groups.filter { $0.cluster == cluster }.compactMap { g in g.addresses[0].map { (g.brokerName, $0) } }
    }

    /// Every topic the nameservers route.
    public func topicList() async throws(ClientError) -> [String] {
        let (answer, _) = try await askNameServers(.request(code: RequestCode.getAllTopicListFromNameserver, opaque: 0))
        guard answer.code == ResponseCode.success, let body = jsonBody(answer) as? [String: Any], let list = body["topicList"] as? [String] else {
            throw ClientError("the nameserver answered \(answer.code): \(answer.remark ?? "no topic list")", code: answer.code)
        }
        return list
    }

    public func route(_ topic: String) async throws(ClientError) -> TopicRoute {
        do {
            return try await RouteCache(nameServers: nameServers, remoting: remoting, timeoutMilliseconds: timeoutMilliseconds).refresh(topic)
        } catch let e as ClientError {
            throw e
        } catch {
            throw ClientError("\(error)")
        }
    }

    /// Every queue of `topic` on every group of its route, asked of each group's master (or any
    /// member while it has none), sorted by group and queue.
    public func topicStats(_ topic: String, route given: TopicRoute? = nil) async throws(ClientError) -> [QueueStats] {
        let r: TopicRoute
        if let given { r = given } else { r = try await route(topic) }
        var rows: [QueueStats] = []
        for b in r.brokers {
            guard let addr = r.masterAddress(b.brokerName) ?? b.addresses.values.first else { continue }
            let a = try await ask(addr, .request(code: RequestCode.getTopicStatsInfo, opaque: 0, extFields: ["topic": topic]))
            guard a.code == ResponseCode.success else { throw ClientError("\(addr): \(a.code) \(a.remark ?? "")", code: a.code) }
            for (k, v) in offsetTable(a) {
                rows.append(QueueStats(brokerName: k["brokerName"] as? String ?? b.brokerName, queueId: number(k["queueId"]),
                                       minOffset: number(v["minOffset"]), maxOffset: number(v["maxOffset"]),
                                       lastUpdateTimestamp: number(v["lastUpdateTimestamp"])))
            }
        }
        return rows.sorted { ($0.brokerName, $0.queueId) < ($1.brokerName, $1.queueId) }
    }

    /// `group`'s progress on every queue it consumes, from every group its retry topic routes to;
    /// sorted by topic, group and queue. A group that has never consumed has no rows; a broker that
    /// cannot be reached is an error (not a silently shorter list).
    public func consumeStats(_ group: String, route given: TopicRoute? = nil) async throws(ClientError) -> [ConsumeRow] {
        let r: TopicRoute
        if let given { r = given } else { r = try await route("%RETRY%" + group) }
        var rows: [ConsumeRow] = []
        for b in r.brokers {
            guard let addr = r.masterAddress(b.brokerName) ?? b.addresses.values.first else { continue }
            let a = try await ask(addr, .request(code: RequestCode.getConsumeStats, opaque: 0, extFields: ["consumerGroup": group, "topic": ""]))
            // A group that never consumed on this broker has no stats there.
            guard a.code == ResponseCode.success else { continue }
            for (k, v) in offsetTable(a) {
                rows.append(ConsumeRow(topic: k["topic"] as? String ?? "", brokerName: k["brokerName"] as? String ?? b.brokerName,
                                       queueId: number(k["queueId"]), brokerOffset: number(v["brokerOffset"]),
                                       consumerOffset: number(v["consumerOffset"]), lastTimestamp: number(v["lastTimestamp"])))
            }
        }
        return rows.sorted { ($0.topic, $0.brokerName, $0.queueId) < ($1.topic, $1.brokerName, $1.queueId) }
    }

    /// `command` to the broker at `address`; a failure to get an answer names the address.
    private func ask(_ address: String, _ command: RemotingCommand) async throws(ClientError) -> RemotingCommand {
        do {
            return try await remoting.request(address, command, timeoutMilliseconds: timeoutMilliseconds)
        } catch {
            throw ClientError("\(address): \(error)")
        }
    }

    /// The clients consuming as `group`, as the broker at `address` knows them.
    public func connections(_ group: String, at address: String) async throws(ClientError) -> Connections {
        let c = try await ask(address, .request(code: RequestCode.getConsumerConnectionList, opaque: 0, extFields: ["consumerGroup": group]))
        guard c.code == ResponseCode.success, let body = jsonBody(c) as? [String: Any] else {
            throw ClientError("\(address): \(c.code) \(c.remark ?? "")", code: c.code)
        }
        let set = (body["connectionSet"] as? [[String: Any]]) ?? []
        return Connections(count: set.count, consumeType: (body["consumeType"] as? String) == "CONSUME_ACTIVELY" ? "PULL" : "PUSH",
                           messageModel: body["messageModel"] as? String ?? "", version: set.first?["version"].map { number($0) })
    }
}

/// A command's body as JSON (Foundation's objects), or nil.
public func jsonBody(_ c: RemotingCommand) -> Any? {
    guard var b = c.body, let bytes = b.readBytes(length: b.readableBytes) else { return nil }
    return try? JSONSerialization.jsonObject(with: Data(bytes))
}

/// A JSON number as Int64 (0 when it is not one).
public func number(_ v: Any?) -> Int64 { (v as? NSNumber)?.int64Value ?? 0 }

/// fastjson's maps with object keys (`{{"brokerName":..,"queueId":0,"topic":..}:{...},...}`), which
/// RocketMQ's admin bodies use: the (key, value) JSON texts, parsed one by one.
public func objectKeyMap(_ text: Substring) -> [([String: Any], [String: Any])] {
    var out: [([String: Any], [String: Any])] = []
    let chars = Array(text.utf8)
    guard chars.first == UInt8(ascii: "{") else { return [] }
    var i = 1
    /// The end (exclusive) of the balanced object starting at `start`.
    func objectEnd(_ start: Int) -> Int? {
        var depth = 0, inString = false, k = start
        while k < chars.count {
            let c = chars[k]
            if inString {
                if c == UInt8(ascii: "\\") { k += 1 } else if c == UInt8(ascii: "\"") { inString = false }
            } else if c == UInt8(ascii: "\"") { inString = true }
            else if c == UInt8(ascii: "{") { depth += 1 }
            else if c == UInt8(ascii: "}") { depth -= 1; if depth == 0 { return k + 1 } }
            k += 1
        }
        return nil
    }
    func parse(_ r: Range<Int>) -> [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(chars[r]))) as? [String: Any]
    }
    while i < chars.count, chars[i] == UInt8(ascii: "{") {
        guard let keyEnd = objectEnd(i), keyEnd < chars.count, chars[keyEnd] == UInt8(ascii: ":"),
              let valueEnd = objectEnd(keyEnd + 1), let k = parse(i..<keyEnd), let v = parse((keyEnd + 1)..<valueEnd) else { break }
        out.append((k, v))
        i = valueEnd
        if i < chars.count, chars[i] == UInt8(ascii: ",") { i += 1 }
    }
    return out
}

/// The "offsetTable" member of an admin body, parsed.
public func offsetTable(_ c: RemotingCommand) -> [([String: Any], [String: Any])] {
    guard var b = c.body, let text = b.readString(length: b.readableBytes), let r = text.range(of: "\"offsetTable\":") else { return [] }
    return objectKeyMap(text[r.upperBound...])
}
