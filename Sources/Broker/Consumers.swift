import Foundation
import Remoting
import Synchronization

/// A subscription as a heartbeat or a pull carries it: `*` or tags joined by `||`.
public struct Subscription: Sendable, Equatable {
    public var topic: String
    public var expression: String
    public var version: Int64
    /// Hash codes of the tags; nil means every message.
    public var codes: Set<Int64>?

    public init(topic: String, expression: String, version: Int64 = 0) {
        self.topic = topic
        self.expression = expression
        self.version = version
        let tags = expression.split(separator: "|", omittingEmptySubsequences: true)
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        codes = expression.trimmingCharacters(in: .whitespaces).isEmpty || tags.contains("*") ? nil : Set(tags.map { Int64(javaHashCode($0)) })
    }

    /// Whether a consume-queue entry with this tags code may match (the client checks the tag string).
    public func matches(_ tagsCode: Int64) -> Bool {
        guard let codes else { return true }
        return tagsCode == 0 || codes.contains(tagsCode) || codes.contains(Int64(Int32(truncatingIfNeeded: tagsCode)))
    }
}

/// The consumers and producers this broker heard from (HEART_BEAT), per group, with their
/// subscriptions. Local to each member: clients heartbeat to every broker of their routes. A client
/// silent for 120 s is dropped.
public final class ConsumerRegistry: Sendable {
    public struct Client: Sendable {
        public var clientId: String
        public var lastSeen: ContinuousClock.Instant
        public var subscriptions: [String: Subscription]
        public var connection: RemotingConnection?
        public var consumeType: String
        public var messageModel: String
        public var consumeFromWhere: String
        public var language: String
        public var version: Int32
        public var address: String
    }

    private let groups = Mutex<[String: [String: Client]]>([:])
    public let expiry: Duration

    public init(expiry: Duration = .seconds(120)) { self.expiry = expiry }

    /// Registers the consumer groups of a HeartbeatData body; returns the groups whose member list
    /// changed and every consumer group named.
    public func heartbeat(_ body: [UInt8], connection: RemotingConnection?, language: String, version: Int32) -> (changed: [String], groups: [String])? {
        guard let any = try? JSONSerialization.jsonObject(with: Data(body)), let o = any as? [String: Any],
              let clientId = o["clientID"] as? String else { return nil }
        var changed: [String] = [], named: [String] = []
        let address = connection?.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "-"
        groups.withLock { g in
            for c in (o["consumerDataSet"] as? [[String: Any]]) ?? [] {
                guard let group = c["groupName"] as? String else { continue }
                named.append(group)
                var subs: [String: Subscription] = [:]
                for s in (c["subscriptionDataSet"] as? [[String: Any]]) ?? [] {
                    guard let topic = s["topic"] as? String else { continue }
                    let version = (s["subVersion"] as? NSNumber)?.int64Value ?? (s["subVersion"] as? String).flatMap { Int64($0) } ?? 0
                    subs[topic] = Subscription(topic: topic, expression: s["subString"] as? String ?? "*", version: version)
                }
                if g[group]?[clientId] == nil { changed.append(group) }
                g[group, default: [:]][clientId] = Client(
                    clientId: clientId, lastSeen: .now, subscriptions: subs, connection: connection,
                    consumeType: Self.enumName(c["consumeType"], ["CONSUME_ACTIVELY", "CONSUME_PASSIVELY"]),
                    messageModel: Self.enumName(c["messageModel"], ["BROADCASTING", "CLUSTERING"]),
                    consumeFromWhere: Self.enumName(c["consumeFromWhere"], [
                        "CONSUME_FROM_LAST_OFFSET", "CONSUME_FROM_LAST_OFFSET_AND_FROM_MIN_WHEN_BOOT_FIRST", "CONSUME_FROM_MIN_OFFSET",
                        "CONSUME_FROM_MAX_OFFSET", "CONSUME_FROM_FIRST_OFFSET", "CONSUME_FROM_TIMESTAMP"]),
                    language: language, version: version, address: address)
            }
        }
        return (changed, named)
    }

    /// C++ sends enums as ordinals, Java and Go as names.
    static func enumName(_ v: Any?, _ names: [String]) -> String {
        if let s = v as? String { return Int(s).flatMap { names.indices.contains($0) ? names[$0] : nil } ?? s }
        if let n = (v as? NSNumber)?.intValue, names.indices.contains(n) { return names[n] }
        return names.last ?? ""
    }

    /// Removes a client from a group (UNREGISTER_CLIENT); returns whether it was there.
    @discardableResult
    public func unregister(clientId: String, group: String) -> Bool {
        groups.withLock { $0[group]?.removeValue(forKey: clientId) != nil }
    }

    /// Drops clients silent for longer than the expiry, and those on a closed connection.
    public func expire(now: ContinuousClock.Instant = .now) {
        groups.withLock { g in
            for (group, clients) in g {
                let alive = clients.filter { now - $0.value.lastSeen < expiry && ($0.value.connection?.channel.isActive ?? true) }
                if alive.isEmpty { g.removeValue(forKey: group) } else { g[group] = alive }
            }
        }
    }

    public func clientIds(group: String) -> [String] { groups.withLock { ($0[group] ?? [:]).keys.sorted() } }
    public func clients(group: String) -> [Client] { groups.withLock { Array(($0[group] ?? [:]).values) } }
    public var groupNames: [String] { groups.withLock { Array($0.keys) } }

    /// The subscription a group's members registered for a topic.
    public func subscription(group: String, topic: String) -> Subscription? {
        groups.withLock { g in g[group]?.values.compactMap { $0.subscriptions[topic] }.max { $0.version < $1.version } }
    }

    /// The connections of a group's members (to tell them the member list changed).
    public func connections(group: String) -> [RemotingConnection] {
        groups.withLock { ($0[group] ?? [:]).values.compactMap(\.connection) }
    }
}

/// Orderly consumers' queue locks (LOCK_BATCH_MQ): group + queue -> client, for 60 s per renewal.
public final class QueueLocks: Sendable {
    struct Lock {
        var clientId: String
        var until: ContinuousClock.Instant
    }

    private let locks = Mutex<[String: Lock]>([:])
    public let lifetime: Duration

    public init(lifetime: Duration = .seconds(60)) { self.lifetime = lifetime }

    /// Locks (or renews) what is free or already this client's; returns what it holds.
    public func lock(group: String, clientId: String, queues: [String]) -> [String] {
        let now = ContinuousClock.now
        return locks.withLock { l in
            // Expired locks go before the table can grow with what clients name.
            if l.count > 4_096 { l = l.filter { $0.value.until > now } }
            return queues.filter { q in
                let key = group + "\u{1}" + q
                if let held = l[key], held.clientId != clientId, held.until > now { return false }
                l[key] = Lock(clientId: clientId, until: now + lifetime)
                return true
            }
        }
    }

    public func unlock(group: String, clientId: String, queues: [String]) {
        locks.withLock { l in
            for q in queues where l[group + "\u{1}" + q]?.clientId == clientId { l.removeValue(forKey: group + "\u{1}" + q) }
        }
    }
}
