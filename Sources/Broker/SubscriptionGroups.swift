import Foundation
import Remoting

/// A consumer group as the broker keeps it (RocketMQ's SubscriptionGroupConfig), replicated through
/// the log like topics.
public struct SubscriptionGroupConfig: Sendable, Equatable {
    public var groupName: String
    public var consumeEnable = true
    public var consumeFromMinEnable = true
    public var consumeBroadcastEnable = true
    public var retryQueueNums = 1
    public var retryMaxTimes = 16
    public var brokerId: Int64 = 0
    public var whichBrokerWhenConsumeSlowly: Int64 = 1
    public var notifyConsumerIdsChangedEnable = true

    public init(groupName: String) { self.groupName = groupName }

    public var json: JSONText {
        .object([
            "brokerId": .int(brokerId), "consumeBroadcastEnable": .bool(consumeBroadcastEnable), "consumeEnable": .bool(consumeEnable),
            "consumeFromMinEnable": .bool(consumeFromMinEnable), "groupName": .string(groupName),
            "notifyConsumerIdsChangedEnable": .bool(notifyConsumerIdsChangedEnable), "retryMaxTimes": .int(Int64(retryMaxTimes)),
            "retryQueueNums": .int(Int64(retryQueueNums)), "whichBrokerWhenConsumeSlowly": .int(whichBrokerWhenConsumeSlowly),
        ])
    }

    /// From SubscriptionGroupConfig JSON (an admin request body, a metadata entry); nil without a name.
    public init?(json o: [String: Any]) {
        guard let name = o["groupName"] as? String, !name.isEmpty else { return nil }
        groupName = name
        func bool(_ k: String, _ d: Bool) -> Bool { (o[k] as? Bool) ?? (o[k] as? String).map { $0 == "true" } ?? d }
        func int(_ k: String, _ d: Int64) -> Int64 { (o[k] as? NSNumber)?.int64Value ?? (o[k] as? String).flatMap { Int64($0) } ?? d }
        consumeEnable = bool("consumeEnable", true)
        consumeFromMinEnable = bool("consumeFromMinEnable", true)
        consumeBroadcastEnable = bool("consumeBroadcastEnable", true)
        retryQueueNums = Int(max(0, min(int("retryQueueNums", 1), 1024)))
        retryMaxTimes = Int(max(-1, min(int("retryMaxTimes", 16), 10_000)))
        brokerId = int("brokerId", 0)
        whichBrokerWhenConsumeSlowly = int("whichBrokerWhenConsumeSlowly", 1)
        notifyConsumerIdsChangedEnable = bool("notifyConsumerIdsChangedEnable", true)
    }

    /// RocketMQ's group name rule: 1-255 characters of `%|a-zA-Z0-9_-`.
    public static func validName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 255 && TopicConfig.validName(String(name.prefix(127))) && TopicConfig.validName(String(name.suffix(127)))
    }
}
