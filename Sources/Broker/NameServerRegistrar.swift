import CChecksum
import Logging
import NIOCore
import Remoting

/// Registers the broker with every nameserver in parallel (RocketMQ's registerBrokerAll): at once on
/// every change of broker id (a Raft role change) and then every `registerNameServerPeriod`;
/// unregisters on shutdown. A nameserver that does not answer delays no one.
public actor NameServerRegistrar {
    public struct Identity: Sendable {
        public var clusterName: String
        public var brokerName: String
        public var brokerAddr: String
        public var haServerAddr: String
        public var brokerPermission: Int
        public init(clusterName: String, brokerName: String, brokerAddr: String, haServerAddr: String, brokerPermission: Int) {
            self.clusterName = clusterName
            self.brokerName = brokerName
            self.brokerAddr = brokerAddr
            self.haServerAddr = haServerAddr
            self.brokerPermission = brokerPermission
        }
    }

    public nonisolated let identity: Identity
    public nonisolated let nameServers: [String]
    private let client: RemotingClient
    private let logger: Logger
    private let timeoutMs: Int64
    private var topics: TopicConfigTable
    /// The id last registered (nil: not registered).
    public private(set) var registeredId: Int64?
    /// What the nameservers answered a slave's registration: its master's broker and HA addresses
    /// (the latest answer that named them; kept while the master is away, as classic masters do
    /// not move).
    public private(set) var master: (brokerAddr: String, haServerAddr: String)?

    public init(identity: Identity, nameServers: [String], topics: TopicConfigTable, client: RemotingClient, logger: Logger,
                timeoutMilliseconds: Int64 = 6_000) {
        self.identity = identity
        self.nameServers = nameServers
        self.topics = topics
        self.client = client
        self.logger = logger
        self.timeoutMs = timeoutMilliseconds
    }

    /// The topics the next registration announces.
    public func update(topics: TopicConfigTable) { self.topics = topics }

    /// Registers as `brokerId` with every nameserver; returns how many accepted.
    @discardableResult
    public func register(brokerId: Int64) async -> Int {
        let changed = registeredId != brokerId
        registeredId = brokerId
        let body = Array(topics.registerBrokerBody(brokerPermission: identity.brokerPermission).utf8)
        let crc = body.withUnsafeBytes { raftmq_crc32_ieee(0, $0.baseAddress, $0.count) } & 0x7FFF_FFFF
        let fields: ExtFields = [
            "brokerName": identity.brokerName, "brokerAddr": identity.brokerAddr, "clusterName": identity.clusterName,
            "haServerAddr": identity.haServerAddr, "brokerId": "\(brokerId)", "compressed": "false", "bodyCrc32": "\(crc)",
        ]
        let ok = await withTaskGroup(of: Bool.self) { group -> Int in
            for ns in nameServers {
                group.addTask { [client, timeoutMs, logger] in
                    var buffer = ByteBuffer()
                    buffer.writeBytes(body)
                    do {
                        let answer = try await client.request(ns, .request(code: RequestCode.registerBroker, opaque: 0, extFields: fields, body: buffer),
                                                              timeoutMilliseconds: timeoutMs)
                        if answer.code != ResponseCode.success {
                            logger.warning("the nameserver refused the registration", metadata: ["namesrv": "\(ns)", "code": "\(answer.code)", "remark": "\(answer.remark ?? "")"])
                            return false
                        }
                        if let m = answer.extFields["masterAddr"], let h = answer.extFields["haServerAddr"], !m.isEmpty, !h.isEmpty {
                            await self.learned(brokerAddr: m, haServerAddr: h)
                        }
                        return true
                    } catch {
                        logger.warning("register broker to name server failed", metadata: ["namesrv": "\(ns)", "error": "\(error)"])
                        return false
                    }
                }
            }
            var n = 0
            for await accepted in group where accepted { n += 1 }
            return n
        }
        if changed {
            logger.info("registered with the nameservers", metadata: [
                "brokerName": "\(identity.brokerName)", "brokerAddr": "\(identity.brokerAddr)", "brokerId": "\(brokerId)",
                "accepted": "\(ok) of \(nameServers.count)"])
        }
        return ok
    }

    private func learned(brokerAddr: String, haServerAddr: String) {
        if master?.brokerAddr != brokerAddr || master?.haServerAddr != haServerAddr {
            logger.info("the nameservers name this slave's master", metadata: ["masterAddr": "\(brokerAddr)", "haServerAddr": "\(haServerAddr)"])
        }
        master = (brokerAddr, haServerAddr)
    }

    /// UNREGISTER_BROKER with every nameserver (on shutdown).
    public func unregister() async {
        guard let id = registeredId else { return }
        let fields: ExtFields = ["brokerName": identity.brokerName, "brokerAddr": identity.brokerAddr, "clusterName": identity.clusterName, "brokerId": "\(id)"]
        await withTaskGroup(of: Void.self) { group in
            for ns in nameServers {
                group.addTask { [client] in
                    _ = try? await client.request(ns, .request(code: RequestCode.unregisterBroker, opaque: 0, extFields: fields), timeoutMilliseconds: 3_000)
                }
            }
        }
        registeredId = nil
    }
}
