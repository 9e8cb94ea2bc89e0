import Foundation
import LogFormat
import Logging
import NIOCore
import Remoting
import Synchronization

/// A message as a consumer receives it.
public struct ReceivedMessage: Sendable {
    public var queue: MessageQueue
    /// The topic the producer sent it to (a retried message comes from %RETRY%<group>: its
    /// RETRY_TOPIC).
    public var topic: String { properties["RETRY_TOPIC"] ?? queue.topic }
    public var queueOffset: Int64
    public var physicalOffset: Int64
    public var body: [UInt8]
    public var tags: String?
    public var keys: String?
    /// UNIQ_KEY when the producer set one, else the offsetMsgId.
    public var msgId: String
    public var storeTimestamp: Int64
    public var reconsumeTimes: Int32
    public var properties: [String: String]
}

/// A clustering consumer group member: heartbeats to every broker of its topic, rebalances the
/// topic's read queues across the group's members (sorted ids, averagely, as RocketMQ's default
/// strategy), long-polls each of its queues, hands messages to the handler in queue order, and
/// commits offsets (UPDATE_CONSUMER_OFFSET and in each pull) after the handler returned: at least
/// once, exactly once while nothing fails.
public final class Consumer: Sendable {
    public enum StartFrom: Sendable { case first, last }

    /// What a handler says about a batch: consumed, or to be delivered again later (sent back to the
    /// broker, which redelivers it through `%RETRY%<group>` after a delay, or to `%DLQ%<group>` after
    /// maxReconsumeTimes).
    public enum ConsumeStatus: Sendable { case success, reconsumeLater }

    public struct Options: Sendable {
        public var group: String
        public var topic: String
        public var expression = "*"
        public var startFrom = StartFrom.first
        public var pullBatchSize = 32
        /// How long the broker may hold a pull with no message.
        public var suspendMs: Int64 = 5_000
        public var rebalanceInterval: Duration = .seconds(1)
        public var heartbeatInterval: Duration = .seconds(5)
        public var commitInterval: Duration = .seconds(1)
        /// Also consume `%RETRY%<group>`, where the messages a handler asked to see again come back.
        public var consumeRetryTopic = true
        /// The delay level of a message sent back (0: the broker's 3 + reconsume times).
        public var retryDelayLevel: Int32 = 0
        public var maxReconsumeTimes: Int32 = 16
        /// This member's id in the group (RocketMQ's clientIP@instance); empty: one is made for each
        /// Consumer, so two consumers built from the same options are two members.
        public var clientId = ""
        public init(group: String, topic: String) {
            self.group = group
            self.topic = topic
        }
    }

    public let options: Options
    public let routes: RouteCache
    private let remoting: RemotingClient
    private let logger: Logger
    private let assigned = Mutex<Set<MessageQueue>>([])
    private let active = Mutex<Set<MessageQueue>>([])

    public init(nameServers: [String], remoting: RemotingClient, logger: Logger, options: Options) {
        var options = options
        if options.clientId.isEmpty { options.clientId = "127.0.0.1@\(getpid())#\(UInt64.random(in: 0...UInt64(UInt32.max)))" }
        self.options = options
        self.remoting = remoting
        self.logger = logger
        routes = RouteCache(nameServers: nameServers, remoting: remoting)
    }

    /// The queues this member consumes now.
    public var assignment: Set<MessageQueue> { assigned.withLock { $0 } }

    /// The topics this member consumes: the subscribed one and the group's retry topic.
    var topics: [String] { options.consumeRetryTopic ? [options.topic, "%RETRY%" + options.group] : [options.topic] }

    /// Consumes until cancelled; `handler` gets each pulled batch of one queue, in order.
    public func run(_ handler: @escaping @Sendable ([ReceivedMessage]) async -> Void) async {
        await run { (messages: [ReceivedMessage]) -> ConsumeStatus in
            await handler(messages)
            return .success
        }
    }

    /// Consumes until cancelled; a batch the handler answers `.reconsumeLater` comes back later.
    public func run(_ handler: @escaping @Sendable ([ReceivedMessage]) async -> ConsumeStatus) async {
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                while !Task.isCancelled {
                    await self.heartbeat()
                    try? await Task.sleep(for: self.options.heartbeatInterval)
                }
            }
            while !Task.isCancelled {
                await heartbeatIfNeeded()
                if let mine = await rebalance() {
                    let before = assigned.withLock { a -> Set<MessageQueue> in
                        defer { a = mine }
                        return a
                    }
                    if before != mine {
                        logger.info("rebalanced", metadata: ["group": "\(options.group)", "queues": "\(mine.sorted { $0.description < $1.description }.map(\.description))"])
                    }
                    for q in mine {
                        let start = active.withLock { $0.insert(q).inserted }
                        guard start else { continue }
                        tasks.addTask {
                            await self.consume(q, handler)
                            _ = self.active.withLock { $0.remove(q) }
                        }
                    }
                }
                try? await Task.sleep(for: options.rebalanceInterval)
            }
            tasks.cancelAll()
        }
        // Leave the group, so the others take the queues at once.
        await unregister()
    }

    private let heartbeatSent = Mutex(false)

    private func heartbeatIfNeeded() async {
        if !heartbeatSent.withLock({ $0 }) { await heartbeat() }
    }

    private func brokerAddresses() async -> [String] {
        var all = Set<String>()
        for t in topics { if let route = try? await routes.route(t) { all.formUnion(route.brokers.flatMap { $0.addresses.values }) } }
        return all.sorted()
    }

    func heartbeatBody() -> String {
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        func sub(_ topic: String, _ expr: String) -> JSONText {
            .object(["classFilterMode": .bool(false), "codeSet": .array([]), "expressionType": .string("TAG"), "subString": .string(expr),
                     "subVersion": .int(now), "tagsSet": .array([]), "topic": .string(topic)])
        }
        return JSONText.object([
            "clientID": .string(options.clientId),
            "consumerDataSet": .array([.object([
                "consumeFromWhere": .string(options.startFrom == .first ? "CONSUME_FROM_FIRST_OFFSET" : "CONSUME_FROM_LAST_OFFSET"),
                "consumeType": .string("CONSUME_PASSIVELY"), "groupName": .string(options.group), "messageModel": .string("CLUSTERING"),
                "subscriptionDataSet": .array([sub(options.topic, options.expression), sub("%RETRY%" + options.group, "*")]), "unitMode": .bool(false),
            ])]),
            "producerDataSet": .array([]),
        ]).serialized
    }

    func heartbeat() async {
        let text = heartbeatBody()
        var ok = false
        for address in await brokerAddresses() {
            var body = ByteBuffer()
            body.writeString(text)
            if let r = try? await remoting.request(address, .request(code: RequestCode.heartBeat, opaque: 0, body: body), timeoutMilliseconds: 3_000),
               r.code == ResponseCode.success { ok = true }
        }
        if ok { heartbeatSent.withLock { $0 = true } }
    }

    func unregister() async {
        for address in await brokerAddresses() {
            _ = try? await remoting.request(address, .request(code: RequestCode.unregisterClient, opaque: 0, extFields: [
                "clientID": options.clientId, "consumerGroup": options.group]), timeoutMilliseconds: 1_000)
        }
    }

    /// AllocateMessageQueueAveragely over the group's members as a broker knows them, per topic.
    /// nil: keep the current assignment (no route could be read).
    func rebalance() async -> Set<MessageQueue>? {
        var mine = Set<MessageQueue>()
        var any = false
        for topic in topics {
            guard let route = try? await routes.refresh(topic) else {
                // The retry topic exists once the group's first heartbeat reached the leader.
                mine.formUnion(assigned.withLock { $0.filter { $0.topic == topic } })
                continue
            }
            let queues = route.readQueues(topic).sorted()
            // Between a leader's death and its successor's registration the route has no queues: keep
            // consuming what this member had (followers serve committed data meanwhile).
            guard !queues.isEmpty else {
                mine.formUnion(assigned.withLock { $0.filter { $0.topic == topic } })
                continue
            }
            any = true
            var ids: [String]?
            for b in Set(queues.map(\.brokerName)).sorted() {
                for address in route.addresses(b) {
                    guard let r = try? await remoting.request(address, .request(code: RequestCode.getConsumerListByGroup, opaque: 0,
                                                                                  extFields: ["consumerGroup": options.group]), timeoutMilliseconds: 3_000),
                          r.code == ResponseCode.success, var body = r.body,
                          let o = try? JSONSerialization.jsonObject(with: Data(body.readBytes(length: body.readableBytes) ?? [])) as? [String: Any],
                          let list = o["consumerIdList"] as? [String] else { continue }
                    ids = list.sorted()
                    break
                }
                if ids != nil { break }
            }
            let members = ids ?? [options.clientId]
            guard let me = members.firstIndex(of: options.clientId) else { continue }
            let n = members.count
            let mod = queues.count % n
            let size = queues.count <= n ? 1 : (mod > 0 && me < mod ? queues.count / n + 1 : queues.count / n)
            let start = mod > 0 && me < mod ? me * size : me * size + mod
            if start < queues.count { mine.formUnion(queues[start..<min(queues.count, start + size)]) }
        }
        return any ? mine : nil
    }

    /// Asks the group's members in turn (the master first, or the member `preferring` names: a pull
    /// follows the broker's suggestWhichBrokerId, as Java's PullAPIWrapper does).
    private func request(_ q: MessageQueue, _ command: RemotingCommand, timeoutMs: Int64, preferring brokerId: Int64 = 0) async throws -> RemotingCommand {
        var last: any Error = ClientError("no address for \(q.brokerName)")
        for attempt in 0..<2 {
            let route = attempt == 0 ? try await routes.route(q.topic) : try await routes.refresh(q.topic)
            var addresses = route.addresses(q.brokerName)
            if brokerId != 0, let b = route.brokers.first(where: { $0.brokerName == q.brokerName }) {
                // The suggested member, else any slave (Java's findBrokerAddressInSubscribe).
                let preferred = b.addresses[brokerId] ?? b.addresses.filter { $0.key != 0 }.sorted { $0.key < $1.key }.first?.value
                if let preferred { addresses = [preferred] + addresses.filter { $0 != preferred } }
            }
            for address in addresses {
                do {
                    return try await remoting.request(address, command, timeoutMilliseconds: timeoutMs)
                } catch {
                    last = error
                }
            }
        }
        throw last
    }

    func fetchOffset(_ q: MessageQueue) async -> Int64? {
        guard let r = try? await request(q, .request(code: RequestCode.queryConsumerOffset, opaque: 0, extFields: [
            "consumerGroup": options.group, "topic": q.topic, "queueId": "\(q.queueId)"]), timeoutMs: 3_000) else { return nil }
        if r.code == ResponseCode.success, let o = r.extFields["offset"].flatMap({ Int64($0) }) { return o }
        if r.code == ResponseCode.queryNotFound {
            // A retry topic always starts at its beginning (Java's computePullFromWhere).
            if options.startFrom == .first || q.topic.hasPrefix("%RETRY%") { return 0 }
            let m = try? await request(q, .request(code: RequestCode.getMaxOffset, opaque: 0, extFields: ["topic": q.topic, "queueId": "\(q.queueId)"]), timeoutMs: 3_000)
            return m?.extFields["offset"].flatMap { Int64($0) }
        }
        return nil
    }

    func commit(_ q: MessageQueue, _ offset: Int64) async {
        _ = try? await request(q, .request(code: RequestCode.updateConsumerOffset, opaque: 0, extFields: [
            "consumerGroup": options.group, "topic": q.topic, "queueId": "\(q.queueId)", "commitOffset": "\(offset)"]), timeoutMs: 3_000)
    }

    /// What a single pull found (the pull consumer's API: the caller keeps its own offsets).
    public struct PullResult: Sendable {
        public var messages: [ReceivedMessage]
        /// Where the next pull starts.
        public var nextOffset: Int64
        public var minOffset: Int64
        public var maxOffset: Int64
    }

    /// Pulls up to `max` messages of a queue from `offset`, holding up to `suspendMs` when there is
    /// none yet (RocketMQ's DefaultMQPullConsumer.pullBlockIfNotFound).
    public func pull(_ q: MessageQueue, from offset: Int64, max: Int = 32, suspendMs: Int64 = 0) async throws -> PullResult {
        let f: ExtFields = [
            "consumerGroup": options.group, "topic": q.topic, "queueId": "\(q.queueId)", "queueOffset": "\(offset)", "maxMsgNums": "\(max)",
            "sysFlag": "\((suspendMs > 0 ? 0x2 : 0) | 0x4)", "commitOffset": "0", "suspendTimeoutMillis": "\(suspendMs)",
            "subscription": q.topic == options.topic ? options.expression : "*", "subVersion": "0", "expressionType": "TAG",
        ]
        let answer = try await request(q, .request(code: RequestCode.pullMessage, opaque: 0, extFields: f), timeoutMs: suspendMs + 10_000)
        let e = answer.extFields.dictionary
        var result = PullResult(messages: [], nextOffset: e["nextBeginOffset"].flatMap { Int64($0) } ?? offset,
                                minOffset: e["minOffset"].flatMap { Int64($0) } ?? 0, maxOffset: e["maxOffset"].flatMap { Int64($0) } ?? 0)
        switch answer.code {
        case ResponseCode.success:
            var body = answer.body ?? ByteBuffer()
            let (messages, complete) = Self.decode(body.readBytes(length: body.readableBytes) ?? [], queue: q)
            result.messages = messages
            // A record that does not decode ends the batch: the next pull starts there, not past it.
            if !complete { result.nextOffset = messages.last.map { $0.queueOffset + 1 } ?? offset }
        case ResponseCode.pullNotFound, ResponseCode.pullRetryImmediately, ResponseCode.pullOffsetMoved:
            break
        default:
            throw ClientError("pull of \(q) answered \(answer.code): \(answer.remark ?? "")", code: answer.code)
        }
        return result
    }

    /// CONSUMER_SEND_MSG_BACK for each message; returns those that could not be sent back.
    func sendBack(_ messages: [ReceivedMessage], _ q: MessageQueue) async -> [ReceivedMessage] {
        var failed: [ReceivedMessage] = []
        for m in messages {
            let r = try? await request(q, .request(code: RequestCode.consumerSendMsgBack, opaque: 0, extFields: [
                "offset": "\(m.physicalOffset)", "group": options.group, "delayLevel": "\(options.retryDelayLevel)", "originMsgId": m.msgId,
                "originTopic": m.topic, "unitMode": "false", "maxReconsumeTimes": "\(options.maxReconsumeTimes)",
            ]), timeoutMs: 5_000)
            if r?.code != ResponseCode.success { failed.append(m) }
        }
        return failed
    }

    /// Hands `messages` to the handler; what it wants again and cannot be sent back is handed to it
    /// again (only those), a second later, until it consumes them or the member stops.
    private func deliver(_ messages: [ReceivedMessage], _ q: MessageQueue, _ handler: @Sendable ([ReceivedMessage]) async -> ConsumeStatus) async {
        var batch = messages
        while !batch.isEmpty && !Task.isCancelled {
            guard await handler(batch) == .reconsumeLater else { return }
            batch = await sendBack(batch, q)
            if !batch.isEmpty { try? await Task.sleep(for: .seconds(1)) }
        }
    }

    /// What to do about a record that does not decode, pull after pull: pull it again, up to
    /// `tries` pulls in all, then skip it. A broker may serve a record it has not finished writing
    /// (a defect, but a skipped message is lost to this group), so one bad pull is not the end.
    struct UndecodableRecord {
        /// Pulls of one record that does not decode before it is skipped (logged as an error).
        static let tries = 5
        private(set) var offset: Int64 = -1
        private(set) var pulls = 0

        enum Action: Equatable {
            /// Pull the same offset again (after a pause); `pulls` so far.
            case pullAgain(pulls: Int)
            /// Give it up: go on at the next offset.
            case skip(pulls: Int)
        }

        /// A pull at `offset` brought nothing that decodes (its first record did not).
        mutating func failed(at offset: Int64) -> Action {
            pulls = self.offset == offset ? pulls + 1 : 1
            self.offset = offset
            guard pulls >= Self.tries else { return .pullAgain(pulls: pulls) }
            let action = Action.skip(pulls: pulls)
            reset()
            return action
        }

        /// A pull that decoded whole: the count starts again.
        mutating func reset() {
            offset = -1
            pulls = 0
        }
    }

    private func consume(_ q: MessageQueue, _ handler: @Sendable ([ReceivedMessage]) async -> ConsumeStatus) async {
        // The client's exact-tag check after the broker's hash filter, built once.
        let wantedTags = Set(options.expression.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) })
        var offset: Int64?
        var committed: Int64 = -1
        var lastCommit = ContinuousClock.now
        // Where the broker suggests the next pull goes (0: the master).
        var suggested: Int64 = 0
        var undecodable = UndecodableRecord()
        while !Task.isCancelled && assigned.withLock({ $0.contains(q) }) {
            guard let current = offset else {
                offset = await fetchOffset(q)
                if offset == nil { try? await Task.sleep(for: .milliseconds(200)) }
                continue
            }
            let f: ExtFields = [
                "consumerGroup": options.group, "topic": q.topic, "queueId": "\(q.queueId)", "queueOffset": "\(current)",
                // The offset rides along only once this member committed one (as Java's: never 0 by default).
                "maxMsgNums": "\(options.pullBatchSize)", "sysFlag": "\((committed > 0 ? 0x1 : 0) | 0x2 | 0x4)", "commitOffset": "\(max(committed, 0))",
                "suspendTimeoutMillis": "\(options.suspendMs)", "subscription": q.topic == options.topic ? options.expression : "*", "subVersion": "0", "expressionType": "TAG",
            ]
            let answer: RemotingCommand
            do {
                answer = try await request(q, .request(code: RequestCode.pullMessage, opaque: 0, extFields: f), timeoutMs: options.suspendMs + 10_000,
                                           preferring: suggested)
            } catch {
                suggested = 0
                try? await Task.sleep(for: .milliseconds(100))
                continue
            }
            suggested = answer.extFields["suggestWhichBrokerId"].flatMap { Int64($0) } ?? 0
            let next = answer.extFields["nextBeginOffset"].flatMap { Int64($0) }
            switch answer.code {
            case ResponseCode.success:
                var body = answer.body ?? ByteBuffer()
                let (messages, complete) = Self.decode(body.readBytes(length: body.readableBytes) ?? [], queue: q)
                let wanted = options.expression == "*" || q.topic != options.topic ? messages : messages.filter { wantedTags.contains($0.tags ?? "") }
                if !wanted.isEmpty { await deliver(wanted, q, handler) }
                if Task.isCancelled { break }
                if complete {
                    undecodable.reset()
                    offset = next ?? (messages.last.map { $0.queueOffset + 1 } ?? current)
                } else if let last = messages.last {
                    // Continue right after the last good one: the bad one is pulled alone next time.
                    offset = last.queueOffset + 1
                } else {
                    switch undecodable.failed(at: current) {
                    case .pullAgain(let pulls):
                        logger.warning("a message does not decode; pulling it again", metadata: ["queue": "\(q)", "offset": "\(current)", "pulls": "\(pulls)"])
                        try? await Task.sleep(for: .milliseconds(200))
                    case .skip(let pulls):
                        logger.error("skipping a message that does not decode", metadata: ["queue": "\(q)", "offset": "\(current)", "pulls": "\(pulls)"])
                        offset = current + 1
                    }
                }
            case ResponseCode.pullNotFound, ResponseCode.pullRetryImmediately:
                offset = next ?? current
            case ResponseCode.pullOffsetMoved:
                offset = next ?? current
            default:
                try? await Task.sleep(for: .milliseconds(100))
            }
            if let o = offset, o != committed, ContinuousClock.now - lastCommit >= options.commitInterval {
                await commit(q, o)
                committed = o
                lastCommit = .now
            }
        }
        // Unassigned or stopping: the next owner starts where this one ended.
        if let o = offset, o != committed { await commit(q, o) }
    }

    /// The records of a pull body, and whether all of them decoded (a record that does not ends the
    /// batch there).
    static func decode(_ bytes: [UInt8], queue: MessageQueue) -> (messages: [ReceivedMessage], complete: Bool) {
        var out: [ReceivedMessage] = []
        var at = 0
        while at < bytes.count {
            guard at + 8 <= bytes.count else { return (out, false) }
            let size = bytes[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) }
            guard size > 0, at + size <= bytes.count,
                  let r = try? bytes[at..<(at + size)].withUnsafeBytes({ try MessageRecord.decode($0, verifyBodyCRC: true) }) else { return (out, false) }
            var props: [String: String] = [:]
            for (k, v) in r.properties { props[k] = v }
            var body = r.body
            // sysFlag bit 0: the producer compressed the body (Java does above 4 KiB).
            if r.sysFlag & 0x1 != 0 {
                guard case .inflated(let plain) = Zlib.inflate(r.body) else { return (out, false) }
                body = plain
            }
            out.append(ReceivedMessage(queue: MessageQueue(topic: r.topic, brokerName: queue.brokerName, queueId: r.queueId),
                                       queueOffset: r.queueOffset, physicalOffset: r.physicalOffset, body: body, tags: props["TAGS"],
                                       keys: props["KEYS"], msgId: props["UNIQ_KEY"] ?? "\(r.physicalOffset)", storeTimestamp: r.storeTimestamp,
                                       reconsumeTimes: r.reconsumeTimes, properties: props))
            at += size
        }
        return (out, true)
    }
}
