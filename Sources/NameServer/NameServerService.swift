import CChecksum
import Foundation
import Logging
import NIOCore
import Remoting
import Synchronization

/// mqnamesrv's request handling (rocketmq-protocol.md §2.4, §5): broker registration (plain and
/// compressed bodies, CRC check), routes, cluster info, topic lists, write-permission wipes, topic
/// deletion and the KV config. Several nameservers never talk to each other; brokers register with
/// each. Every request is answered from memory under one lock; nothing here blocks on I/O except the
/// KV config file, written on change.
public final class NameServerService: Sendable {
    struct State {
        var table = RouteTable()
        var kv: [String: [String: String]] = [:]
        /// Connections brokers registered over (their close unregisters the brokers).
        var watched: Set<ObjectIdentifier> = []
    }

    private let state = Mutex(State())
    private let logger: Logger
    private let kvConfigPath: String?
    private let nowMs: @Sendable () -> Int64

    /// `kvConfigPath`: where the KV config is loaded from and saved to (nil: memory only).
    public init(kvConfigPath: String?, logger: Logger, nowMs: @escaping @Sendable () -> Int64 = NameServerService.wallClockMs) {
        self.kvConfigPath = kvConfigPath
        self.logger = logger
        self.nowMs = nowMs
        if let path = kvConfigPath, let data = FileManager.default.contents(atPath: path) {
            if let kv = Self.decodeKV(data) {
                state.withLock { $0.kv = kv }
                logger.info("load KV config table OK", metadata: ["path": "\(path)", "namespaces": "\(kv.count)"])
            } else {
                logger.warning("the KV config file is not valid JSON; starting with an empty table", metadata: ["path": "\(path)"])
            }
        }
    }

    public static let wallClockMs: @Sendable () -> Int64 = { Int64(Date().timeIntervalSince1970 * 1000) }

    /// A snapshot of the tables (tests, admin).
    public var table: RouteTable { state.withLock { $0.table } }

    public static let codes: [Int32] = [
        RequestCode.putKVConfig, RequestCode.getKVConfig, RequestCode.deleteKVConfig, RequestCode.registerBroker,
        RequestCode.unregisterBroker, RequestCode.getRouteInfoByTopic, RequestCode.getBrokerClusterInfo,
        RequestCode.wipeWritePermOfBroker, RequestCode.getAllTopicListFromNameserver, RequestCode.deleteTopicInNamesrv,
        RequestCode.getKVListByNamespace, RequestCode.getTopicsByCluster, RequestCode.queryDataVersion,
    ]

    /// The processor to mount on the nameserver's RemotingServer.
    public var processor: RemotingProcessor {
        RemotingProcessor(name: "namesrv", codes: Self.codes, maxQueuedRequests: 65_536, workers: 8) { [self] request, connection in
            handle(request, connection)
        }
    }

    /// Drops brokers silent for 120 s, every 10 s (first after 5 s), until cancelled.
    public func expireLoop() async {
        try? await Task.sleep(for: .seconds(5))
        while !Task.isCancelled {
            let gone = state.withLock { $0.table.expire(nowMs: nowMs()) }
            for a in gone { logger.warning("the broker's channel expired, remove it from the route table", metadata: ["brokerAddr": "\(a)"]) }
            try? await Task.sleep(for: .seconds(10))
        }
    }

    // MARK: Requests

    struct Refusal: Error {
        var code: Int32
        var remark: String
    }

    func field(_ r: RemotingCommand, _ name: String) throws(Refusal) -> String {
        guard let v = r.extFields[name], !v.isEmpty else {
            throw Refusal(code: ResponseCode.systemError, remark: "the request lacks the header field \(name)")
        }
        return v
    }

    func handle(_ request: RemotingCommand, _ connection: RemotingConnection) -> RemotingCommand {
        do {
            switch request.code {
            case RequestCode.registerBroker: return try register(request, connection)
            case RequestCode.unregisterBroker:
                let name = try field(request, "brokerName"), addr = try field(request, "brokerAddr")
                let id = Int64(request.extFields["brokerId"] ?? "")
                state.withLock { $0.table.unregister(brokerName: name, brokerAddr: addr, brokerId: id) }
                logger.info("unregisterBroker", metadata: ["brokerName": "\(name)", "brokerAddr": "\(addr)", "brokerId": "\(id.map { "\($0)" } ?? "?")"])
                return .response(to: request, code: ResponseCode.success)
            case RequestCode.getRouteInfoByTopic:
                let topic = try field(request, "topic")
                guard let route = state.withLock({ $0.table.route(topic: topic) }) else {
                    return .response(to: request, code: ResponseCode.topicNotExist,
                                     remark: "No topic route info in name server for the topic: \(topic)\nSee http://rocketmq.apache.org/docs/faq/ for further details.")
                }
                return .response(to: request, code: ResponseCode.success, body: Self.buffer(NameServerBodies.route(route)))
            case RequestCode.getBrokerClusterInfo:
                return .response(to: request, code: ResponseCode.success, body: Self.buffer(state.withLock { NameServerBodies.clusterInfo($0.table) }))
            case RequestCode.getAllTopicListFromNameserver:
                return .response(to: request, code: ResponseCode.success, body: Self.buffer(NameServerBodies.topicList(state.withLock { $0.table.allTopics })))
            case RequestCode.getTopicsByCluster:
                let cluster = try field(request, "cluster")
                return .response(to: request, code: ResponseCode.success,
                                 body: Self.buffer(NameServerBodies.topicList(state.withLock { $0.table.topics(inCluster: cluster) })))
            case RequestCode.wipeWritePermOfBroker:
                let name = try field(request, "brokerName")
                let count = state.withLock { $0.table.wipeWritePerm(brokerName: name) }
                logger.info("wipe write perm of broker", metadata: ["brokerName": "\(name)", "topics": "\(count)"])
                return .response(to: request, code: ResponseCode.success, extFields: ["wipeTopicCount": "\(count)"])
            case RequestCode.deleteTopicInNamesrv:
                let topic = try field(request, "topic")
                state.withLock { $0.table.deleteTopic(topic) }
                return .response(to: request, code: ResponseCode.success)
            case RequestCode.queryDataVersion:
                let addr = try field(request, "brokerAddr")
                let version = try dataVersion(request.body)
                let (changed, stored) = state.withLock { $0.table.queryDataVersion(brokerAddr: addr, version, nowMs: nowMs()) }
                let body = stored.map { Self.buffer(JSONText.object(["counter": .int($0.counter), "timestamp": .int($0.timestamp)]).serialized) }
                return .response(to: request, code: ResponseCode.success, extFields: ["changed": changed ? "true" : "false"], body: body)
            default:
                return try kvRequest(request)
            }
        } catch {
            return .response(to: request, code: error.code, remark: error.remark)
        }
    }

    func register(_ request: RemotingCommand, _ connection: RemotingConnection) throws(Refusal) -> RemotingCommand {
        let name = try field(request, "brokerName"), addr = try field(request, "brokerAddr"), cluster = try field(request, "clusterName")
        guard let id = Int64(try field(request, "brokerId")) else {
            throw Refusal(code: ResponseCode.systemError, remark: "brokerId \"\(request.extFields["brokerId"] ?? "")\" is not a number")
        }
        var body: [UInt8] = []
        if var b = request.body { body = b.readBytes(length: b.readableBytes) ?? [] }
        if let text = request.extFields["bodyCrc32"], let expected = Int64(text), expected != 0 {
            let crc = Int64(body.withUnsafeBytes { raftmq_crc32_ieee(0, $0.baseAddress, $0.count) } & 0x7FFF_FFFF)
            guard crc == expected else { throw Refusal(code: ResponseCode.systemError, remark: "crc32 not match") }
        }
        let version: RouteTable.DataVersion
        let topics: [RouteTable.TopicConfig]
        do {
            (version, topics) = try NameServerBodies.decodeRegistration(body, compressed: request.extFields["compressed"] == "true")
        } catch {
            throw Refusal(code: ResponseCode.systemError, remark: "\(error)")
        }
        let key = ObjectIdentifier(connection.channel)
        let (answer, firstOnConnection, orderConf) = state.withLock { s in
            let answer = s.table.register(RouteTable.Registration(
                clusterName: cluster, brokerName: name, brokerAddr: addr, brokerId: id,
                haServerAddr: request.extFields["haServerAddr"] ?? "", dataVersion: version, topics: topics, connection: key), nowMs: nowMs())
            return (answer, s.watched.insert(key).inserted, s.kv["ORDER_TOPIC_CONFIG"] ?? [:])
        }
        if firstOnConnection {
            // A closed channel unregisters its brokers at once (RocketMQ's onChannelDestroy).
            connection.channel.closeFuture.whenComplete { [self] _ in
                let gone = state.withLock { s -> [String] in
                    s.watched.remove(key)
                    return s.table.connectionClosed(key)
                }
                for a in gone { logger.info("the broker's channel closed, remove it from the route table", metadata: ["brokerAddr": "\(a)"]) }
            }
        }
        var ext: ExtFields = [:]
        if let m = answer.masterAddr { ext["masterAddr"] = m }
        if let h = answer.haServerAddr { ext["haServerAddr"] = h }
        return .response(to: request, code: ResponseCode.success, extFields: ext,
                         body: orderConf.isEmpty ? nil : Self.buffer(NameServerBodies.kvTable(orderConf)))
    }

    func dataVersion(_ body: ByteBuffer?) throws(Refusal) -> RouteTable.DataVersion {
        guard var b = body, b.readableBytes > 0 else { return RouteTable.DataVersion(timestamp: 0, counter: 0) }
        let bytes = b.readBytes(length: b.readableBytes) ?? []
        guard let any = try? JSONSerialization.jsonObject(with: Data(bytes)), let v = try? NameServerBodies.dataVersion(any) else {
            throw Refusal(code: ResponseCode.systemError, remark: "the body is not a DataVersion")
        }
        return v
    }

    func kvRequest(_ request: RemotingCommand) throws(Refusal) -> RemotingCommand {
        let namespace = try field(request, "namespace")
        switch request.code {
        case RequestCode.putKVConfig:
            let key = try field(request, "key"), value = request.extFields["value"] ?? ""
            let kv = state.withLock { s -> [String: [String: String]] in
                s.kv[namespace, default: [:]][key] = value
                return s.kv
            }
            save(kv)
            return .response(to: request, code: ResponseCode.success)
        case RequestCode.getKVConfig:
            let key = try field(request, "key")
            guard let value = state.withLock({ $0.kv[namespace]?[key] }) else {
                return .response(to: request, code: ResponseCode.queryNotFound, remark: "No config item, Namespace: \(namespace) Key: \(key)")
            }
            return .response(to: request, code: ResponseCode.success, extFields: ["value": value])
        case RequestCode.deleteKVConfig:
            let key = try field(request, "key")
            let kv = state.withLock { s -> [String: [String: String]] in
                s.kv[namespace]?[key] = nil
                if s.kv[namespace]?.isEmpty == true { s.kv[namespace] = nil }
                return s.kv
            }
            save(kv)
            return .response(to: request, code: ResponseCode.success)
        default:  // GET_KVLIST_BY_NAMESPACE
            guard let table = state.withLock({ $0.kv[namespace] }), !table.isEmpty else {
                return .response(to: request, code: ResponseCode.queryNotFound, remark: "No config item, Namespace: \(namespace)")
            }
            return .response(to: request, code: ResponseCode.success, body: Self.buffer(NameServerBodies.kvTable(table)))
        }
    }

    // MARK: KV config file (`{"configTable":{"ns":{"k":"v"}}}`)

    static func decodeKV(_ data: Data) -> [String: [String: String]]? {
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let table = root["configTable"] as? [String: Any] else { return nil }
        var out: [String: [String: String]] = [:]
        for (ns, entries) in table {
            guard let e = entries as? [String: Any] else { return nil }
            out[ns] = e.compactMapValues { $0 as? String }
        }
        return out
    }

    func save(_ kv: [String: [String: String]]) {
        guard let path = kvConfigPath else { return }
        let text = JSONText.object(["configTable": .object(kv.mapValues { .object($0.mapValues { .string($0) }) })]).serialized
        do {
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            logger.error("cannot save the KV config", metadata: ["path": "\(path)", "error": "\(error)"])
        }
    }

    static func buffer(_ text: String) -> ByteBuffer {
        var b = ByteBuffer()
        b.writeString(text)
        return b
    }
}
