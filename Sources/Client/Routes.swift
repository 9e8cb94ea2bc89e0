import Synchronization
import Foundation
import NIOCore
import Remoting

/// What the client could not do.
public struct ClientError: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// The broker's response code, when a broker answered.
    public var code: Int32?
    public init(_ d: String, code: Int32? = nil) {
        description = d
        self.code = code
    }
}

/// One queue of one broker group.
public struct MessageQueue: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var topic: String
    public var brokerName: String
    public var queueId: Int32
    public init(topic: String, brokerName: String, queueId: Int32) {
        self.topic = topic
        self.brokerName = brokerName
        self.queueId = queueId
    }
    public static func < (a: Self, b: Self) -> Bool { (a.brokerName, a.queueId) < (b.brokerName, b.queueId) }
    public var description: String { "\(topic)@\(brokerName)@\(queueId)" }
}

/// A topic's route as the nameservers answer it (TopicRouteData).
public struct TopicRoute: Sendable, Equatable {
    public struct Broker: Sendable, Equatable {
        public var brokerName: String
        public var addresses: [Int64: String]
    }
    public struct Queues: Sendable, Equatable {
        public var brokerName: String
        public var readQueueNums: Int
        public var writeQueueNums: Int
        public var perm: Int
    }
    public var brokers: [Broker]
    public var queues: [Queues]

    /// The master's (brokerId 0: the Raft leader's) address of a group.
    public func masterAddress(_ brokerName: String) -> String? { brokers.first { $0.brokerName == brokerName }?.addresses[0] }

    /// Every address of a group, the master first.
    public func addresses(_ brokerName: String) -> [String] {
        guard let b = brokers.first(where: { $0.brokerName == brokerName }) else { return [] }
        return b.addresses.sorted { $0.key < $1.key }.map(\.value)
    }

    /// The queues a producer sends to: writable, of groups with a master now (a classic group whose
    /// master is down, or a Raft group between leaders, takes no sends; its slaves still serve reads).
    public func writeQueues(_ topic: String) -> [MessageQueue] {
        queues.filter { $0.perm & 2 != 0 && masterAddress($0.brokerName) != nil }.sorted { $0.brokerName < $1.brokerName }.flatMap { q in
            (0..<q.writeQueueNums).map { MessageQueue(topic: topic, brokerName: q.brokerName, queueId: Int32($0)) }
        }
    }

    public func readQueues(_ topic: String) -> [MessageQueue] {
        queues.filter { $0.perm & 4 != 0 }.sorted { $0.brokerName < $1.brokerName }.flatMap { q in
            (0..<q.readQueueNums).map { MessageQueue(topic: topic, brokerName: q.brokerName, queueId: Int32($0)) }
        }
    }

    static func parse(_ body: [UInt8]) -> TopicRoute? {
        guard let any = try? JSONSerialization.jsonObject(with: Data(body)), let o = any as? [String: Any] else { return nil }
        var brokers: [Broker] = []
        for b in (o["brokerDatas"] as? [[String: Any]]) ?? [] {
            guard let name = b["brokerName"] as? String else { continue }
            var addrs: [Int64: String] = [:]
            for (k, v) in (b["brokerAddrs"] as? [String: Any]) ?? [:] { if let id = Int64(k), let a = v as? String { addrs[id] = a } }
            brokers.append(Broker(brokerName: name, addresses: addrs))
        }
        let queues: [Queues] = ((o["queueDatas"] as? [[String: Any]]) ?? []).compactMap { q in
            guard let name = q["brokerName"] as? String else { return nil }
            func int(_ k: String) -> Int { (q[k] as? NSNumber)?.intValue ?? 0 }
            return Queues(brokerName: name, readQueueNums: int("readQueueNums"), writeQueueNums: int("writeQueueNums"), perm: int("perm"))
        }
        return TopicRoute(brokers: brokers, queues: queues)
    }
}

/// The route lookups of a client: asks the nameservers in turn, caches per topic.
public actor RouteCache {
    public let nameServers: [String]
    let remoting: RemotingClient
    /// How long one nameserver may take to answer before the next is asked.
    let timeoutMilliseconds: Int64
    /// Readable without a hop to the actor: every send looks its route up here.
    private nonisolated let routes = Mutex<[String: TopicRoute]>([:])

    public init(nameServers: [String], remoting: RemotingClient, timeoutMilliseconds: Int64 = 3_000) {
        self.nameServers = nameServers
        self.remoting = remoting
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// The cached route, or a fresh one.
    public nonisolated func route(_ topic: String) async throws -> TopicRoute {
        if let r = routes.withLock({ $0[topic] }) { return r }
        return try await refresh(topic)
    }

    /// Asks the nameservers again (after a failure: a new leader may have registered since).
    @discardableResult
    public func refresh(_ topic: String) async throws -> TopicRoute {
        var last = "no nameserver configured"
        for ns in nameServers {
            do {
                let answer = try await remoting.request(ns, .request(code: RequestCode.getRouteInfoByTopic, opaque: 0, extFields: ["topic": topic]),
                                                        timeoutMilliseconds: timeoutMilliseconds)
                guard answer.code == ResponseCode.success else {
                    last = "\(ns): code \(answer.code) \(answer.remark ?? "")"
                    if answer.code == ResponseCode.topicNotExist { throw ClientError("no route for topic \(topic): \(answer.remark ?? "")", code: answer.code) }
                    continue
                }
                var b = answer.body ?? ByteBuffer()
                guard let route = TopicRoute.parse(b.readBytes(length: b.readableBytes) ?? []) else {
                    last = "\(ns): the route body is not TopicRouteData JSON"
                    continue
                }
                routes.withLock { $0[topic] = route }
                return route
            } catch let e as ClientError {
                throw e
            } catch {
                last = "\(ns): \(error)"
            }
        }
        throw ClientError("no nameserver answered for topic \(topic) (\(last))")
    }

    public func forget(_ topic: String) { _ = routes.withLock { $0.removeValue(forKey: topic) } }
}
