import Foundation
import Remoting

/// A change of the broker's metadata, carried by the Raft log so that every member applies the same
/// changes in the same order (docs/broker-metadata.md):
///
///     TOTALSIZE (4) | MAGIC 0x52414D44 "RAMD" (4) | KIND (2) | VERSION (2) | payload (compact JSON)
public enum MetadataChange: Sendable, Equatable {
    case topicUpsert(TopicConfig)
    case topicDelete(String)
    /// A topic created by a send or a heartbeat: applied only when no such topic exists then, so a
    /// racing UPDATE_AND_CREATE_TOPIC (or another auto-creation) is never overwritten.
    case topicCreate(TopicConfig)
    /// Consumer offsets: "topic@group" (consumerOffset.json's key) -> queue id -> next offset to consume.
    case offsets([String: [Int32: Int64]])
    /// The whole metadata as of the entry before this one, and every queue's next offset: what a
    /// member that lost the log's prefix (reset to the leader's base, or rebuilt after retention)
    /// needs to continue (docs/broker-metadata.md, "Start, retention and resets").
    case snapshot(MetadataSnapshot)
    case groupUpsert(SubscriptionGroupConfig)
    case groupDelete(String)
    /// A group created on first use (autoCreateSubscriptionGroup): applied only when absent.
    case groupCreate(SubscriptionGroupConfig)

    static let version: UInt16 = 1

    var kind: UInt16 {
        switch self {
        case .topicUpsert: return 1
        case .topicDelete: return 2
        case .offsets: return 5
        case .topicCreate: return 7
        case .snapshot: return 6
        case .groupUpsert: return 3
        case .groupDelete: return 4
        case .groupCreate: return 8
        }
    }

    public func encoded() -> [UInt8] {
        let payload: JSONText
        switch self {
        case .topicUpsert(let t), .topicCreate(let t): payload = t.json
        case .topicDelete(let name): payload = .object(["topicName": .string(name)])
        case .offsets(let table):
            payload = .object(["offsetTable": Self.queueTable(table)])
        case .snapshot(let snap):
            payload = .object(["topics": .object(snap.topics.mapValues(\.json)), "offsetTable": Self.queueTable(snap.offsets),
                               "queueEnds": Self.queueTable(snap.queueEnds), "groups": .object(snap.groups.mapValues(\.json))])
        case .groupUpsert(let g), .groupCreate(let g): payload = g.json
        case .groupDelete(let name): payload = .object(["groupName": .string(name)])
        }
        let json = Array(payload.serialized.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(12 + json.count)
        out.appendBE(UInt64(12 + json.count), bytes: 4)
        out.appendBE(UInt64(EntryBody.metadataMagic), bytes: 4)
        out.appendBE(UInt64(kind), bytes: 2)
        out.appendBE(UInt64(Self.version), bytes: 2)
        out.append(contentsOf: json)
        return out
    }

    /// {"key": {"queueId": n}} with quoted numeric keys.
    static func queueTable(_ table: [String: [Int32: Int64]]) -> JSONText {
        .object(table.mapValues { q in .object(Dictionary(uniqueKeysWithValues: q.map { ("\($0.key)", JSONText.int($0.value)) })) })
    }

    static func parseQueueTable(_ any: Any?) -> [String: [Int32: Int64]]? {
        guard let table = any as? [String: Any] else { return nil }
        var out: [String: [Int32: Int64]] = [:]
        for (key, value) in table {
            guard let queues = value as? [String: Any] else { return nil }
            var q: [Int32: Int64] = [:]
            for (id, offset) in queues {
                guard let i = Int32(id), let o = (offset as? NSNumber)?.int64Value else { return nil }
                q[i] = o
            }
            out[key] = q
        }
        return out
    }

    /// The change in an entry body that `EntryBody.classify` called `.metadata`; nil (and the entry
    /// is skipped, with a warning by the caller) when it is of an unknown kind or malformed.
    public static func decode(_ body: [UInt8]) -> MetadataChange? {
        guard body.count >= 12, body.readBE(4, bytes: 4) == UInt64(EntryBody.metadataMagic),
              Int(body.readBE(0, bytes: 4)) == body.count,
              let any = try? JSONSerialization.jsonObject(with: Data(body[12...])), let object = any as? [String: Any]
        else { return nil }
        switch body.readBE(8, bytes: 2) {
        case 1: return TopicConfig(json: object).map { .topicUpsert($0) }
        case 2: return (object["topicName"] as? String).map { .topicDelete($0) }
        case 7: return TopicConfig(json: object).map { .topicCreate($0) }
        case 5:
            return parseQueueTable(object["offsetTable"]).map { .offsets($0) }
        case 6:
            guard let topicsJSON = object["topics"] as? [String: Any], let offsets = parseQueueTable(object["offsetTable"]),
                  let ends = parseQueueTable(object["queueEnds"]) else { return nil }
            var topics: [String: TopicConfig] = [:]
            for (name, t) in topicsJSON {
                guard let o = t as? [String: Any], let c = TopicConfig(json: o) else { return nil }
                topics[name] = c
            }
            var groups: [String: SubscriptionGroupConfig] = [:]
            for (name, g) in (object["groups"] as? [String: Any]) ?? [:] {
                guard let o = g as? [String: Any], let c = SubscriptionGroupConfig(json: o) else { return nil }
                groups[name] = c
            }
            return .snapshot(MetadataSnapshot(topics: topics, offsets: offsets, queueEnds: ends, groups: groups))
        case 3: return SubscriptionGroupConfig(json: object).map { .groupUpsert($0) }
        case 4: return (object["groupName"] as? String).map { .groupDelete($0) }
        case 8: return SubscriptionGroupConfig(json: object).map { .groupCreate($0) }
        default: return nil
        }
    }
}

/// The whole broker metadata at one point of the log.
public struct MetadataSnapshot: Sendable, Equatable {
    public var topics: [String: TopicConfig]
    /// "topic@group" -> queue -> offset.
    public var offsets: [String: [Int32: Int64]]
    /// topic -> queue -> next queue offset.
    public var queueEnds: [String: [Int32: Int64]]
    public var groups: [String: SubscriptionGroupConfig]
    public init(topics: [String: TopicConfig], offsets: [String: [Int32: Int64]], queueEnds: [String: [Int32: Int64]],
                groups: [String: SubscriptionGroupConfig] = [:]) {
        self.topics = topics
        self.offsets = offsets
        self.queueEnds = queueEnds
        self.groups = groups
    }
}

extension TopicConfig {
    /// From TopicConfig JSON (topics.json, a metadata entry); nil without a name.
    init?(json o: [String: Any]) {
        guard let name = o["topicName"] as? String, !name.isEmpty else { return nil }
        func int(_ k: String, _ d: Int) -> Int { (o[k] as? NSNumber)?.intValue ?? (o[k] as? String).flatMap { Int($0) } ?? d }
        // Queue counts as RocketMQ bounds them (a log entry is not to be trusted to).
        self.init(topicName: name, readQueueNums: min(max(int("readQueueNums", 16), 0), 65_535),
                  writeQueueNums: min(max(int("writeQueueNums", 16), 0), 65_535), perm: int("perm", 6) & 7)
        topicFilterType = o["topicFilterType"] as? String ?? "SINGLE_TAG"
        topicSysFlag = int("topicSysFlag", 0)
        order = (o["order"] as? Bool) ?? ((o["order"] as? String) == "true")
    }

    /// RocketMQ's topic name rule (TopicValidator): 1-127 characters of `%|a-zA-Z0-9_-`.
    public static func validName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= 127 else { return false }
        return name.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x25 || c == 0x7C || c == 0x5F || c == 0x2D
        }
    }
}
