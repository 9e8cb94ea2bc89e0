/// The nameserver's tables (RocketMQ's RouteInfoManager, rocketmq-protocol.md §2.4 and §5): which
/// brokers are alive, which cluster and broker group each belongs to, and which topics each master
/// serves with how many queues. A value type with no clock and no I/O: the server owns one, passes
/// the time in, and serializes access.
public struct RouteTable: Sendable {
    public struct QueueData: Sendable, Equatable {
        public var brokerName: String
        public var readQueueNums: Int
        public var writeQueueNums: Int
        public var perm: Int
        public var topicSysFlag: Int
        public init(brokerName: String, readQueueNums: Int, writeQueueNums: Int, perm: Int, topicSysFlag: Int) {
            self.brokerName = brokerName
            self.readQueueNums = readQueueNums
            self.writeQueueNums = writeQueueNums
            self.perm = perm
            self.topicSysFlag = topicSysFlag
        }
    }

    public struct BrokerData: Sendable, Equatable {
        public var cluster: String
        public var brokerName: String
        /// brokerId -> "ip:port"; 0 is the master.
        public var brokerAddrs: [Int64: String]
    }

    /// A topic as a registering master describes it.
    public struct TopicConfig: Sendable, Equatable {
        public var topicName: String
        public var readQueueNums: Int
        public var writeQueueNums: Int
        public var perm: Int
        public var topicSysFlag: Int
        public init(topicName: String, readQueueNums: Int, writeQueueNums: Int, perm: Int, topicSysFlag: Int = 0) {
            self.topicName = topicName
            self.readQueueNums = readQueueNums
            self.writeQueueNums = writeQueueNums
            self.perm = perm
            self.topicSysFlag = topicSysFlag
        }
    }

    /// RocketMQ's DataVersion: changes whenever the broker's topic table changes.
    public struct DataVersion: Sendable, Equatable {
        public var timestamp: Int64
        public var counter: Int64
        public init(timestamp: Int64, counter: Int64) {
            self.timestamp = timestamp
            self.counter = counter
        }
    }

    public struct Registration: Sendable {
        public var clusterName: String
        public var brokerName: String
        public var brokerAddr: String
        public var brokerId: Int64
        public var haServerAddr: String
        public var dataVersion: DataVersion
        public var topics: [TopicConfig]
        /// The connection it came on (its close unregisters the broker, as a channel close does).
        public var connection: ObjectIdentifier?
        public init(clusterName: String, brokerName: String, brokerAddr: String, brokerId: Int64, haServerAddr: String,
                    dataVersion: DataVersion, topics: [TopicConfig], connection: ObjectIdentifier? = nil) {
            self.clusterName = clusterName
            self.brokerName = brokerName
            self.brokerAddr = brokerAddr
            self.brokerId = brokerId
            self.haServerAddr = haServerAddr
            self.dataVersion = dataVersion
            self.topics = topics
            self.connection = connection
        }
    }

    /// What a registering slave learns: its master's addresses, when the master is registered and alive.
    public struct RegistrationAnswer: Sendable, Equatable {
        public var masterAddr: String?
        public var haServerAddr: String?
    }

    struct Live: Sendable {
        var lastUpdateMs: Int64
        var dataVersion: DataVersion
        var haServerAddr: String
        var connection: ObjectIdentifier?
    }

    /// A broker is dropped after this long without registering (RocketMQ's BROKER_CHANNEL_EXPIRED_TIME).
    public static let brokerExpiryMs: Int64 = 120_000

    public private(set) var topicQueueTable: [String: [QueueData]] = [:]
    public private(set) var brokerAddrTable: [String: BrokerData] = [:]
    public private(set) var clusterAddrTable: [String: Set<String>] = [:]
    private(set) var brokerLiveTable: [String: Live] = [:]

    public init() {}

    // MARK: Registration

    public mutating func register(_ r: Registration, nowMs: Int64) -> RegistrationAnswer {
        clusterAddrTable[r.clusterName, default: []].insert(r.brokerName)
        var firstRegistration = false
        var data = brokerAddrTable[r.brokerName] ?? {
            firstRegistration = true
            return BrokerData(cluster: r.clusterName, brokerName: r.brokerName, brokerAddrs: [:])
        }()
        // One address has one id: a slave that became master (or the reverse) drops its old id.
        for (id, addr) in data.brokerAddrs where addr == r.brokerAddr && id != r.brokerId { data.brokerAddrs[id] = nil }
        let previous = data.brokerAddrs[r.brokerId]
        data.brokerAddrs[r.brokerId] = r.brokerAddr
        if previous != r.brokerAddr { firstRegistration = true }
        data.cluster = r.clusterName
        brokerAddrTable[r.brokerName] = data

        if r.brokerId == 0 {
            let stored = brokerLiveTable[r.brokerAddr]?.dataVersion
            if firstRegistration || stored == nil || stored != r.dataVersion {
                for t in r.topics { upsertQueueData(t, brokerName: r.brokerName) }
            }
        }
        brokerLiveTable[r.brokerAddr] = Live(lastUpdateMs: nowMs, dataVersion: r.dataVersion, haServerAddr: r.haServerAddr, connection: r.connection)

        guard r.brokerId != 0, let master = data.brokerAddrs[0], let live = brokerLiveTable[master] else {
            return RegistrationAnswer(masterAddr: nil, haServerAddr: nil)
        }
        return RegistrationAnswer(masterAddr: master, haServerAddr: live.haServerAddr)
    }

    private mutating func upsertQueueData(_ t: TopicConfig, brokerName: String) {
        let q = QueueData(brokerName: brokerName, readQueueNums: t.readQueueNums, writeQueueNums: t.writeQueueNums,
                          perm: t.perm, topicSysFlag: t.topicSysFlag)
        var list = topicQueueTable[t.topicName] ?? []
        if let k = list.firstIndex(where: { $0.brokerName == brokerName }) { list[k] = q } else { list.append(q) }
        topicQueueTable[t.topicName] = list
    }

    /// QUERY_DATA_VERSION: whether the broker's topics changed since it last registered (then it
    /// registers in full); refreshes its live timestamp either way. Nil stored version: unknown broker.
    public mutating func queryDataVersion(brokerAddr: String, _ version: DataVersion, nowMs: Int64) -> (changed: Bool, stored: DataVersion?) {
        guard var live = brokerLiveTable[brokerAddr] else { return (true, nil) }
        live.lastUpdateMs = nowMs
        brokerLiveTable[brokerAddr] = live
        return (live.dataVersion != version, live.dataVersion)
    }

    /// UNREGISTER_BROKER, a closed connection, or expiry: the address leaves its group; a group left
    /// with no address leaves its cluster and every topic (topics left with no broker go).
    public mutating func unregister(brokerName: String, brokerAddr: String, brokerId: Int64?) {
        brokerLiveTable[brokerAddr] = nil
        guard var data = brokerAddrTable[brokerName] else { return }
        if let id = brokerId {
            if data.brokerAddrs[id] == brokerAddr { data.brokerAddrs[id] = nil }
        } else {
            for (id, addr) in data.brokerAddrs where addr == brokerAddr { data.brokerAddrs[id] = nil }
        }
        if !data.brokerAddrs.isEmpty {
            brokerAddrTable[brokerName] = data
            return
        }
        brokerAddrTable[brokerName] = nil
        if var names = clusterAddrTable[data.cluster] {
            names.remove(brokerName)
            clusterAddrTable[data.cluster] = names.isEmpty ? nil : names
        }
        for (topic, list) in topicQueueTable {
            let rest = list.filter { $0.brokerName != brokerName }
            topicQueueTable[topic] = rest.isEmpty ? nil : rest
        }
    }

    /// Drops the brokers that registered over `connection` (its channel closed).
    public mutating func connectionClosed(_ connection: ObjectIdentifier) -> [String] {
        let addrs = brokerLiveTable.filter { $0.value.connection == connection }.map(\.key)
        for a in addrs { unregisterAddress(a) }
        return addrs
    }

    /// Drops the brokers silent for more than `brokerExpiryMs`; returns their addresses.
    public mutating func expire(nowMs: Int64) -> [String] {
        let old = brokerLiveTable.filter { nowMs - $0.value.lastUpdateMs > Self.brokerExpiryMs }.map(\.key)
        for a in old { unregisterAddress(a) }
        return old.sorted()
    }

    private mutating func unregisterAddress(_ addr: String) {
        if let name = brokerAddrTable.first(where: { $0.value.brokerAddrs.values.contains(addr) })?.key {
            unregister(brokerName: name, brokerAddr: addr, brokerId: nil)
        } else {
            brokerLiveTable[addr] = nil
        }
    }

    // MARK: Queries

    public struct Route: Sendable, Equatable {
        public var queueDatas: [QueueData]
        public var brokerDatas: [BrokerData]
    }

    /// GET_ROUTEINFO_BY_TOPIC: nil unless the topic has queues on a broker group that has an address.
    public func route(topic: String) -> Route? {
        guard let queues = topicQueueTable[topic], !queues.isEmpty else { return nil }
        let brokers = Set(queues.map(\.brokerName)).sorted().compactMap { brokerAddrTable[$0] }.filter { !$0.brokerAddrs.isEmpty }
        guard !brokers.isEmpty else { return nil }
        return Route(queueDatas: queues.sorted { $0.brokerName < $1.brokerName }, brokerDatas: brokers)
    }

    public var allTopics: [String] { topicQueueTable.keys.sorted() }

    /// WIPE_WRITE_PERM_OF_BROKER: clears the write bit of every queue of `brokerName`; returns how many.
    public mutating func wipeWritePerm(brokerName: String) -> Int {
        var count = 0
        for (topic, list) in topicQueueTable {
            var changed = list
            for k in changed.indices where changed[k].brokerName == brokerName {
                changed[k].perm &= ~0x2
                count += 1
            }
            topicQueueTable[topic] = changed
        }
        return count
    }

    public mutating func deleteTopic(_ topic: String) {
        topicQueueTable[topic] = nil
    }

    /// The topics with a queue on a broker of `cluster` (GET_TOPICS_BY_CLUSTER).
    public func topics(inCluster cluster: String) -> [String] {
        let names = clusterAddrTable[cluster] ?? []
        return topicQueueTable.filter { $0.value.contains { names.contains($0.brokerName) } }.keys.sorted()
    }
}
