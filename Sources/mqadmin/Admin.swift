import ArgumentParser
import Client
import Foundation
import LogFormat
import Logging
import NIOCore
import Remoting

/// RocketMQ's time format in admin output.
func timeText(_ ms: Int64, millis: Bool = true) -> String {
    guard ms > 0 else { return millis ? "" : "N/A" }
    let f = DateFormatter()
    f.dateFormat = millis ? "yyyy-MM-dd HH:mm:ss,SSS" : "yyyy-MM-dd HH:mm:ss"
    return f.string(from: Date(timeIntervalSince1970: Double(ms) / 1000))
}

/// The route of a topic, or a failure naming it.
func route(_ client: RemotingClient, _ servers: [String], _ topic: String) async throws -> Client.TopicRoute {
    do {
        return try await ClusterQueries(nameServers: servers, remoting: client).route(topic)
    } catch {
        throw fail("No topic route info in name server for the topic: \(topic) (\(error))")
    }
}

/// The master (brokerId 0) address of every group of a cluster.
func clusterMasters(_ client: RemotingClient, _ servers: [String], _ cluster: String) async throws -> [(String, String)] {
    do {
        return try await ClusterQueries(nameServers: servers, remoting: client).masters(of: cluster).map { ($0.brokerName, $0.address) }
    } catch {
        throw fail("\(error)")
    }
}

/// `mqadmin updateTopic -t TOPIC (-c CLUSTER | -b ADDR) [-r N] [-w N] [-p PERM] [-o]`.
struct UpdateTopic: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "updateTopic", abstract: "Create or update a topic on a broker group or every group of a cluster.")
    @Option(name: .customShort("n")) var namesrv: String?
    @Option(name: .customShort("t")) var topic: String
    @Option(name: .customShort("c"), help: "Every master of this cluster.") var cluster: String?
    @Option(name: .customShort("b"), help: "This broker (a Raft group's leader, or any member: it forwards).") var broker: String?
    @Option(name: .customShort("r")) var readQueueNums: Int = 8
    @Option(name: .customShort("w")) var writeQueueNums: Int = 8
    @Option(name: .customShort("p")) var perm: Int = 6
    @Flag(name: .customShort("o")) var order = false

    func run() async throws {
        guard cluster != nil || broker != nil else { throw ValidationError("give -c CLUSTER or -b BROKER") }
        let servers = cluster != nil ? try nameServerList(namesrv) : []
        let (topic, cluster, broker, r, w, p, order) = (topic, cluster, broker, readQueueNums, writeQueueNums, perm, order)
        let lines: [String] = try await withClient { client in
            var targets = [broker].compactMap { $0 }
            if let cluster { targets = try await clusterMasters(client, servers, cluster).map(\.1) }
            var out: [String] = []
            for addr in targets {
                let answer = try await client.request(addr, .request(code: RequestCode.updateAndCreateTopic, opaque: 0, extFields: [
                    "topic": topic, "defaultTopic": "TBW102", "readQueueNums": "\(r)", "writeQueueNums": "\(w)", "perm": "\(p)",
                    "topicFilterType": "SINGLE_TAG", "topicSysFlag": "0", "order": order ? "true" : "false",
                ]), timeoutMilliseconds: 5_000)
                guard answer.code == ResponseCode.success else { throw fail("create topic to \(addr) failed: \(answer.code) \(answer.remark ?? "")") }
                out.append("create topic to \(addr) success.")
            }
            let permText = (p & 4 != 0 ? "R" : "-") + (p & 2 != 0 ? "W" : "-") + (p & 1 != 0 ? "X" : "-")
            out.append("TopicConfig [topicName=\(topic), readQueueNums=\(r), writeQueueNums=\(w), perm=\(permText), topicFilterType=SINGLE_TAG, topicSysFlag=0, order=\(order)]")
            return out
        }
        print(lines.joined(separator: "\n"))
    }
}

/// `mqadmin deleteTopic -t TOPIC -c CLUSTER`: from every master of the cluster, then every nameserver.
struct DeleteTopic: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "deleteTopic", abstract: "Delete a topic from a cluster's brokers and from the nameservers.")
    @Option(name: .customShort("n")) var namesrv: String?
    @Option(name: .customShort("t")) var topic: String
    @Option(name: .customShort("c")) var cluster: String

    func run() async throws {
        let servers = try nameServerList(namesrv)
        let (topic, cluster) = (topic, cluster)
        try await withClient { client in
            for (_, addr) in try await clusterMasters(client, servers, cluster) {
                let a = try await client.request(addr, .request(code: RequestCode.deleteTopicInBroker, opaque: 0, extFields: ["topic": topic]), timeoutMilliseconds: 5_000)
                guard a.code == ResponseCode.success else { throw fail("delete topic from \(addr) failed: \(a.code) \(a.remark ?? "")") }
            }
            print("delete topic [\(topic)] from cluster [\(cluster)] success.")
            for ns in servers {
                _ = try? await client.request(ns, .request(code: RequestCode.deleteTopicInNamesrv, opaque: 0, extFields: ["topic": topic]), timeoutMilliseconds: 3_000)
            }
            print("delete topic [\(topic)] from NameServer success.")
        }
    }
}

/// `mqadmin topicStatus -t TOPIC`: min, max and last update of every queue (RocketMQ's columns).
struct TopicStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "topicStatus", abstract: "Every queue of a topic: min and max offsets and the last message's time.")
    @Option(name: .customShort("n")) var namesrv: String?
    @Option(name: .customShort("t")) var topic: String

    func run() async throws {
        let servers = try nameServerList(namesrv)
        let topic = topic
        let lines: [String] = try await withClient { client in
            let r = try await route(client, servers, topic)
            let rows: [ClusterQueries.QueueStats]
            do { rows = try await ClusterQueries(nameServers: servers, remoting: client, timeoutMilliseconds: 5_000).topicStats(topic, route: r) } catch { throw fail("\(error)") }
            var out = ["#Broker Name".padded(34) + "#QID".padded(6) + "#Min Offset".padded(22) + "#Max Offset".padded(24) + "#Last Updated"]
            for row in rows {
                out.append(row.brokerName.padded(34) + "\(row.queueId)".padded(6) + "\(row.minOffset)".padded(22) + "\(row.maxOffset)".padded(24) + timeText(row.lastUpdateTimestamp))
            }
            return out
        }
        print(lines.joined(separator: "\n"))
    }
}

/// `mqadmin consumerProgress [-g GROUP]`: a group's offsets against the brokers', or every group.
struct ConsumerProgress: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "consumerProgress", abstract: "A consumer group's progress per queue (or a line per group).")
    @Option(name: .customShort("n")) var namesrv: String?
    @Option(name: .customShort("g")) var group: String?

    static func stats(_ client: RemotingClient, _ servers: [String], _ group: String) async throws -> [ClusterQueries.ConsumeRow] {
        let r = try await route(client, servers, "%RETRY%" + group)
        return try await ClusterQueries(nameServers: servers, remoting: client, timeoutMilliseconds: 5_000).consumeStats(group, route: r)
    }

    func run() async throws {
        let servers = try nameServerList(namesrv)
        let group = group
        let lines: [String] = try await withClient { client in
            if let group {
                let rows = try await Self.stats(client, servers, group)
                guard !rows.isEmpty else { throw fail("CODE: 206 DESC: the consumer group[\(group)] not online") }
                var out = ["#Topic".padded(34) + "#Broker Name".padded(34) + "#QID".padded(6) + "#Broker Offset".padded(20) + "#Consumer Offset".padded(20) + "#Diff".padded(20) + "#LastTime"]
                var total: Int64 = 0
                for r in rows {
                    total += r.brokerOffset - r.consumerOffset
                    out.append(r.topic.padded(34) + r.brokerName.padded(34) + "\(r.queueId)".padded(6) + "\(r.brokerOffset)".padded(20)
                               + "\(r.consumerOffset)".padded(20) + "\(r.brokerOffset - r.consumerOffset)".padded(20) + timeText(r.lastTimestamp, millis: false))
                }
                out.append("")
                out.append("Consume TPS: 0.00")
                out.append("Diff Total: \(total)")
                return out
            }
            let answer = try await askNameServers(client, servers, .request(code: RequestCode.getAllTopicListFromNameserver, opaque: 0))
            let topics = ((jsonBody(answer) as? [String: Any])?["topicList"] as? [String]) ?? []
            var out = ["#Group".padded(33) + "#Count".padded(7) + "#Version".padded(21) + "#Type".padded(12) + "#Model".padded(14) + "#TPS".padded(7) + "#Diff Total"]
            for t in topics.sorted() where t.hasPrefix("%RETRY%") {
                let g = String(t.dropFirst(7))
                let rows = (try? await Self.stats(client, servers, g)) ?? []
                let diff = rows.reduce(Int64(0)) { $0 + $1.brokerOffset - $1.consumerOffset }
                var count = 0, type = "", model = "", version = "OFFLINE"
                if let route = try? await route(client, servers, t), let first = route.brokers.first, let addr = route.masterAddress(first.brokerName),
                   let c = try? await ClusterQueries(nameServers: servers, remoting: client).connections(g, at: addr) {
                    (count, type, model) = (c.count, c.consumeType, c.messageModel)
                    if let v = c.version { version = "V\(v)" }
                }
                out.append(g.padded(33) + "\(count)".padded(7) + version.padded(21) + type.padded(12) + model.padded(14) + "0".padded(7) + "\(diff)")
            }
            return out
        }
        print(lines.joined(separator: "\n"))
    }
}

/// Prints a message as RocketMQ's queryMsgById does.
func describe(_ r: MessageRecord, msgId: String) -> String {
    var props: [String: String] = [:]
    for (k, v) in r.properties { props[k] = v }
    func line(_ k: String, _ v: String) -> String { (k + ":").padded(20) + v }
    return [
        line("OffsetID", offsetIdText(r)), line("Topic", r.topic), line("Tags", "[\(props["TAGS"] ?? "")]"), line("Keys", "[\(props["KEYS"] ?? "")]"),
        line("Queue ID", "\(r.queueId)"), line("Queue Offset", "\(r.queueOffset)"), line("CommitLog Offset", "\(r.physicalOffset)"),
        line("Reconsume Times", "\(r.reconsumeTimes)"), line("Born Timestamp", timeText(r.bornTimestamp)), line("Store Timestamp", timeText(r.storeTimestamp)),
        line("Born Host", "\(r.bornHost)"), line("Store Host", "\(r.storeHost)"), line("System Flag", "\(r.sysFlag)"),
        line("Properties", "{" + props.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ") + "}"),
        line("Message Body", String(decoding: r.body, as: UTF8.self)),
    ].joined(separator: "\n")
}

func offsetIdText(_ r: MessageRecord) -> String {
    let host = "\(r.storeHost)".split(separator: ":")
    let ip = host.first.map { $0.split(separator: ".").compactMap { UInt8($0) } } ?? []
    guard ip.count == 4 else { return "" }
    return ip.map { String(format: "%02X", UInt32($0)) }.joined() + String(format: "%08X", r.storeHost.port) + String(format: "%016llX", UInt64(bitPattern: r.physicalOffset))
}

/// `mqadmin queryMsgById -i OFFSET_MSG_ID [-b BROKER]`: the message at the id's store host and offset.
struct QueryMsgById: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "queryMsgById", abstract: "Show the message of an offsetMsgId (any member of a Raft group holds it at the same offset).")
    @Option(name: .customShort("n")) var namesrv: String?
    @Option(name: .customShort("i")) var id: String
    @Option(name: .customShort("b"), help: "Ask this broker instead of the id's store host.") var broker: String?

    func run() async throws {
        let id = id.trimmingCharacters(in: .whitespaces)
        guard id.count == 32, let offset = UInt64(id.suffix(16), radix: 16), let ipPort = UInt64(id.prefix(16), radix: 16) else {
            throw ValidationError("\"\(id)\" is not an offsetMsgId (32 hex digits: IPv4 store host, port, commitlog offset)")
        }
        let host = "\((ipPort >> 56) & 255).\((ipPort >> 48) & 255).\((ipPort >> 40) & 255).\((ipPort >> 32) & 255):\(ipPort & 0xFFFF_FFFF)"
        let address = broker ?? host
        let text: String = try await withClient { client in
            let a = try await client.request(address, .request(code: RequestCode.viewMessageById, opaque: 0, extFields: ["offset": "\(Int64(bitPattern: offset))"]),
                                             timeoutMilliseconds: 5_000)
            guard a.code == ResponseCode.success, var b = a.body, let bytes = b.readBytes(length: b.readableBytes),
                  let r = try? bytes.withUnsafeBytes({ try MessageRecord.decode($0) }) else {
                throw fail("\(address): \(a.code) \(a.remark ?? "no message at that offset")")
            }
            return describe(r, msgId: id)
        }
        print(text)
    }
}

/// `mqadmin queryMsgByKey -t TOPIC -k KEY`: the messages with a key (KEYS or UNIQ_KEY) in every group.
struct QueryMsgByKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "queryMsgByKey", abstract: "Find messages by key through the brokers' key index.")
    @Option(name: .customShort("n")) var namesrv: String?
    @Option(name: .customShort("t")) var topic: String
    @Option(name: .customShort("k")) var key: String

    func run() async throws {
        let servers = try nameServerList(namesrv)
        let (topic, key) = (topic, key)
        let lines: [String] = try await withClient { client in
            let r = try await route(client, servers, topic)
            var out = ["#Message ID".padded(51) + "#QID".padded(5) + "#Offset"]
            for b in r.brokers {
                for addr in r.addresses(b.brokerName) {
                    guard let a = try? await client.request(addr, .request(code: RequestCode.queryMessage, opaque: 0, extFields: [
                        "topic": topic, "key": key, "maxNum": "64", "beginTimestamp": "0", "endTimestamp": "\(Int64.max)"]), timeoutMilliseconds: 5_000) else { continue }
                    if a.code == ResponseCode.success, var body = a.body, let bytes = body.readBytes(length: body.readableBytes) {
                        var at = 0
                        while at + 4 <= bytes.count {
                            let size = bytes[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) }
                            guard size > 0, at + size <= bytes.count, let m = try? bytes[at..<(at + size)].withUnsafeBytes({ try MessageRecord.decode($0) }) else { break }
                            out.append((m.properties["UNIQ_KEY"] ?? offsetIdText(m)).padded(51) + "\(m.queueId)".padded(5) + "\(m.queueOffset)")
                            at += size
                        }
                    }
                    break  // one member of a group answers for it
                }
            }
            return out
        }
        print(lines.joined(separator: "\n"))
    }
}

/// `mqadmin getBrokerConfig -b BROKER`: the broker's effective configuration.
struct GetBrokerConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "getBrokerConfig", abstract: "Print a broker's effective configuration.")
    @Option(name: .customShort("b")) var broker: String

    func run() async throws {
        let broker = broker
        let text: String = try await withClient { client in
            let a = try await client.request(broker, .request(code: RequestCode.getBrokerConfig, opaque: 0), timeoutMilliseconds: 5_000)
            guard a.code == ResponseCode.success, var b = a.body else { throw fail("\(broker): \(a.code) \(a.remark ?? "")") }
            let body = b.readString(length: b.readableBytes) ?? ""
            return body.split(separator: "\n").map { line -> String in
                let parts = line.split(separator: "=", maxSplits: 1)
                return String(parts[0]).padded(50) + "=  " + (parts.count > 1 ? String(parts[1]) : "")
            }.joined(separator: "\n")
        }
        print(text)
    }
}
