import Remoting

/// A topic as the broker keeps it (RocketMQ's TopicConfig).
public struct TopicConfig: Sendable, Equatable {
    public var topicName: String
    public var readQueueNums: Int
    public var writeQueueNums: Int
    /// 2 = write, 4 = read, 1 = inherit (a template for auto-created topics).
    public var perm: Int
    public var topicFilterType = "SINGLE_TAG"
    public var topicSysFlag = 0
    public var order = false

    public init(topicName: String, readQueueNums: Int = 16, writeQueueNums: Int = 16, perm: Int = 6) {
        self.topicName = topicName
        self.readQueueNums = readQueueNums
        self.writeQueueNums = writeQueueNums
        self.perm = perm
    }

    public static let permInherit = 1, permWrite = 2, permRead = 4

    public var json: JSONText {
        .object([
            "order": .bool(order), "perm": .int(Int64(perm)), "readQueueNums": .int(Int64(readQueueNums)),
            "topicFilterType": .string(topicFilterType), "topicName": .string(topicName), "topicSysFlag": .int(Int64(topicSysFlag)),
            "writeQueueNums": .int(Int64(writeQueueNums)),
        ])
    }
}

/// RocketMQ's DataVersion: a timestamp and a counter that change with the topic table.
public struct DataVersion: Sendable, Equatable {
    public var timestamp: Int64
    public var counter: Int64
    public init(timestamp: Int64, counter: Int64) {
        self.timestamp = timestamp
        self.counter = counter
    }
    var json: JSONText { .object(["counter": .int(counter), "timestamp": .int(timestamp)]) }
}

/// The broker's topics and their data version.
public struct TopicConfigTable: Sendable {
    public private(set) var topics: [String: TopicConfig] = [:]
    public private(set) var dataVersion: DataVersion

    /// The topics a RocketMQ 4.9 broker creates at start (TopicConfigManager's constructor).
    public init(clusterName: String, brokerName: String, defaultTopicQueueNums: Int, autoCreateTopicEnable: Bool,
                clusterTopicEnable: Bool, brokerTopicEnable: Bool, traceTopicEnable: Bool, nowMs: Int64) {
        dataVersion = DataVersion(timestamp: nowMs, counter: 0)
        func add(_ t: TopicConfig) { topics[t.topicName] = t }
        add(TopicConfig(topicName: "SELF_TEST_TOPIC", readQueueNums: 1, writeQueueNums: 1))
        if autoCreateTopicEnable {
            add(TopicConfig(topicName: "TBW102", readQueueNums: defaultTopicQueueNums, writeQueueNums: defaultTopicQueueNums,
                            perm: TopicConfig.permInherit | TopicConfig.permRead | TopicConfig.permWrite))
        }
        add(TopicConfig(topicName: "BenchmarkTest", readQueueNums: 1024, writeQueueNums: 1024))
        add(TopicConfig(topicName: clusterName, perm: TopicConfig.permInherit | (clusterTopicEnable ? 6 : 0)))
        add(TopicConfig(topicName: brokerName, readQueueNums: 1, writeQueueNums: 1, perm: TopicConfig.permInherit | (brokerTopicEnable ? 6 : 0)))
        add(TopicConfig(topicName: "OFFSET_MOVED_EVENT", readQueueNums: 1, writeQueueNums: 1))
        add(TopicConfig(topicName: "SCHEDULE_TOPIC_XXXX", readQueueNums: 18, writeQueueNums: 18))
        if traceTopicEnable { add(TopicConfig(topicName: "RMQ_SYS_TRACE_TOPIC", readQueueNums: 1, writeQueueNums: 1)) }
        add(TopicConfig(topicName: clusterName + "_REPLY_TOPIC", readQueueNums: 1, writeQueueNums: 1))
    }

    /// Adds or replaces a topic and bumps the data version (so every member re-registers).
    public mutating func upsert(_ t: TopicConfig, nowMs: Int64) {
        topics[t.topicName] = t
        dataVersion = DataVersion(timestamp: nowMs, counter: dataVersion.counter + 1)
    }

    /// Removes a topic; returns whether it existed.
    @discardableResult
    public mutating func remove(_ name: String, nowMs: Int64) -> Bool {
        guard topics.removeValue(forKey: name) != nil else { return false }
        dataVersion = DataVersion(timestamp: nowMs, counter: dataVersion.counter + 1)
        return true
    }

    /// The data version as JSON (GET_BROKER_CONFIG's `version`).
    public var dataVersionJSON: String { dataVersion.json.serialized }

    /// GET_ALL_TOPIC_CONFIG's body and topics.json: TopicConfigSerializeWrapper.
    public var serializeWrapper: String {
        JSONText.object(["dataVersion": dataVersion.json, "topicConfigTable": .object(topics.mapValues(\.json))]).serialized
    }

    /// RegisterBrokerBody as the Java broker sends it (uncompressed).
    public func registerBrokerBody(brokerPermission: Int) -> String {
        var table: [String: JSONText] = [:]
        for (name, t) in topics {
            var t = t
            // A broker that is not read-write announces its own permission for every topic.
            if brokerPermission & 6 != 6 { t.perm = brokerPermission }
            table[name] = t.json
        }
        return JSONText.object([
            "filterServerList": .array([]),
            "topicConfigSerializeWrapper": .object(["dataVersion": dataVersion.json, "topicConfigTable": .object(table)]),
        ]).serialized
    }
}
