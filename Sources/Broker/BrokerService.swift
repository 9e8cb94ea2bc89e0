import Foundation
import LogFormat
import Logging
import NIOCore
import NIOPosix
import RaftCore
import Remoting
import Replication
import Synchronization

/// The RocketMQ broker protocol of one member of a Raft group: send (10/310/320), pull with long
/// polling (11), consumer offsets (14/15), heartbeats and consumer lists (34/35/38), queue locks
/// (41/42), topics (17/21/215) and queue queries (29-33). Writes go through the `WritePath` on the
/// leader; a follower forwards them to the leader and relays the answer, so a client with a stale
/// route rides through a leadership change. Reads (pull, offsets, queries) are served by every
/// member from what it dispatched: only committed entries.
public final class BrokerService: Sendable {
    public struct Options: Sendable {
        public var clusterName: String
        public var brokerName: String
        /// brokerIP1:listenPort, the STOREHOST of every record this group writes.
        public var storeHost: String
        public var maxMessageSize: Int
        public var autoCreateTopicEnable: Bool
        public var autoCreateSubscriptionGroup = true
        public var defaultTopicQueueNums: Int
        public var regionId = "DefaultRegion"
        public var traceOn = true
        /// A send not committed within this is answered SYSTEM_ERROR (its outcome is unknown).
        public var sendTimeout: Duration = .seconds(3)
        /// Long polls end before the client's 30 s RPC timeout whatever it asks.
        public var maxSuspend: Duration = .seconds(20)
        /// Offsets are written to the log in one entry per interval (flushConsumerOffsetInterval).
        public var offsetFlushInterval: Duration = .seconds(1)
        /// Every member's broker address, for forwarding.
        public var clientAddresses: [NodeID: String]
        /// The effective configuration (GET_BROKER_CONFIG), key=value pairs.
        public var configuration: [(String, String)] = []
        /// slaveReadEnable: a consumer far behind (its messages out of memory) is told to pull from a
        /// follower (its group's whichBrokerWhenConsumeSlowly).
        public var slaveReadEnable = false
        /// messageDelayLevel.
        public var delayLevels = DelayLevels("1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h")
        /// A message sent back this many times goes to the group's %DLQ% topic (subscription groups'
        /// retryMaxTimes; the client's maxReconsumeTimes wins when it sends one).
        public var maxReconsumeTimes: Int32 = 16
        /// Told of every stored send and every served pull (mqbroker's /metrics).
        public var observer: (any BrokerObserver)?
        /// Fast-path sends an event loop takes in one turn go to the log as one entry, up to this
        /// many sends and `sendBatchBytes` (the entry limit, when lower); 1 gives every send an
        /// entry of its own (docs/performance.md, seventeenth round).
        public var sendBatchMessages = 128
        public var sendBatchBytes = 128 << 10
        public init(clusterName: String, brokerName: String, storeHost: String, maxMessageSize: Int, autoCreateTopicEnable: Bool,
                    defaultTopicQueueNums: Int, clientAddresses: [NodeID: String]) {
            self.clusterName = clusterName
            self.brokerName = brokerName
            self.storeHost = storeHost
            self.maxMessageSize = maxMessageSize
            self.autoCreateTopicEnable = autoCreateTopicEnable
            self.defaultTopicQueueNums = defaultTopicQueueNums
            self.clientAddresses = clientAddresses
        }
    }

    public let options: Options
    public let store: MessageStore
    public let writes: any BrokerWriter
    public let consumers = ConsumerRegistry()
    let locks = QueueLocks()
    private let forwarder: RemotingClient
    let logger: Logger
    let storeHost: MessageHost
    struct OffsetTables {
        /// Offsets committed on this leader and not yet in the log: "topic@group" -> queue -> offset.
        var pending: [String: [Int32: Int64]] = [:]
        /// The batch being written to the log: still the newest until its entry is applied.
        var flushing: [String: [Int32: Int64]] = [:]
    }
    /// One lock for both, so an offset is always in one of them (or applied) for readers.
    private let offsetTables = Mutex(OffsetTables())
    /// One flush at a time: entries of overlapping flushes could be applied out of order.
    private let flushGate = AsyncGate()
    private let counters = Mutex<(put: Int64, get: Int64)>((0, 0))
    /// Each event loop thread's fast-path sends of its current turn (`sendInline`).
    private let sendBatches = ThreadSpecificVariable<SendBatch>()

    public init(options: Options, store: MessageStore, writes: any BrokerWriter, forwarder: RemotingClient, logger: Logger) {
        self.options = options
        self.store = store
        self.writes = writes
        self.forwarder = forwarder
        self.logger = logger
        self.storeHost = messageHost(options.storeHost)
    }

    /// Messages stored and served since start (GET_BROKER_RUNTIME_INFO).
    public var totals: (put: Int64, get: Int64) { counters.withLock { $0 } }

    public var processors: [RemotingProcessor] {
        let s = self
        return [
            RemotingProcessor(name: "send", codes: [RequestCode.sendMessage, RequestCode.sendMessageV2, RequestCode.sendBatchMessage],
                              maxQueuedRequests: 65_536, workers: 8_192, inline: { r, c in s.sendInline(r, c) }) { r, c in await s.send(r, c) },
            RemotingProcessor(name: "send-back", codes: [RequestCode.consumerSendMsgBack], maxQueuedRequests: 16_384, workers: 1_024) { r, c in
                await s.sendBack(r, c)
            },
            RemotingProcessor(name: "pull", codes: [RequestCode.pullMessage], maxQueuedRequests: 65_536, workers: 65_536) { r, c in await s.pull(r, c) },
            RemotingProcessor(name: "consumer", codes: [
                RequestCode.queryConsumerOffset, RequestCode.updateConsumerOffset, RequestCode.heartBeat, RequestCode.unregisterClient,
                RequestCode.getConsumerListByGroup, RequestCode.lockBatchMQ, RequestCode.unlockBatchMQ,
            ], maxQueuedRequests: 65_536, workers: 64) { r, c in await s.consumer(r, c) },
            RemotingProcessor(name: "admin", codes: [
                RequestCode.updateAndCreateTopic, RequestCode.getAllTopicConfig, RequestCode.deleteTopicInBroker,
                RequestCode.searchOffsetByTimestamp, RequestCode.getMaxOffset, RequestCode.getMinOffset,
                RequestCode.getEarliestMsgStoreTime, RequestCode.viewMessageById, RequestCode.queryMessage,
                RequestCode.getTopicStatsInfo, RequestCode.getConsumeStats, RequestCode.getConsumerConnectionList, RequestCode.getBrokerConfig,
                RequestCode.updateAndCreateSubscriptionGroup, RequestCode.getAllSubscriptionGroupConfig, RequestCode.deleteSubscriptionGroup,
            ], maxQueuedRequests: 4_096, workers: 16) { r, c in await s.admin(r, c) },
        ]
    }

    // MARK: - Forwarding

    static let forwardedField = "raftmqForwarded"
    /// The producer's address on a forwarded send (its BORNHOST), trusted only with `forwardedField`.
    static let bornHostField = "raftmqBornHost"

    /// What a member that cannot take a write answers: the leader's answer (forwarded), or
    /// SERVICE_NOT_AVAILABLE when no leader is known (clients retry).
    func forwardOrRefuse(_ request: RemotingCommand, _ error: WriteError, from connection: RemotingConnection? = nil) async -> RemotingCommand? {
        var leader: NodeID?
        switch error {
        case .notLeader(let l): leader = l
        case .notReady:
            return .response(to: request, code: ResponseCode.serviceNotAvailable, remark: "the new leader is still dispatching its log; retry")
        case .slave:
            return .response(to: request, code: ResponseCode.serviceNotAvailable, remark: "service not available now: \(error)")
        default: return .response(to: request, code: ResponseCode.systemError, remark: "\(error)")
        }
        guard let leader, request.extFields[Self.forwardedField] == nil, let address = options.clientAddresses[leader] else {
            return .response(to: request, code: ResponseCode.serviceNotAvailable,
                             remark: "this broker is not the leader of its group and \(leader == nil ? "no leader is known" : "cannot forward again"); retry")
        }
        var forwarded = request
        forwarded.extFields[Self.forwardedField] = "1"
        if let a = connection?.remoteAddress, let ip = a.ipAddress { forwarded.extFields[Self.bornHostField] = "\(ip):\(a.port ?? 0)" }
        do {
            if request.isOneway {
                try await forwarder.oneway(address, forwarded)
                return nil
            }
            var answer = try await forwarder.request(address, forwarded, timeoutMilliseconds: 6_000)
            answer.opaque = request.opaque
            return answer
        } catch {
            return .response(to: request, code: ResponseCode.serviceNotAvailable, remark: "forwarding to the leader at \(address) failed: \(error); retry")
        }
    }

    // MARK: - Send

    struct SendHeader: Equatable {
        var topic: String
        var defaultTopic: String
        var defaultTopicQueueNums: Int
        var queueId: Int32
        var sysFlag: Int32
        var bornTimestamp: Int64
        var flag: Int32
        var properties: String
        var reconsumeTimes: Int32
        var batch: Bool
        /// The producer's address a forwarding broker stamped (`bornHostField`, read only with
        /// `forwardedField`).
        var forwardedBornHost: String?
    }

    /// The fields a send's header is read from: SEND_MESSAGE_V2's one-letter names and
    /// SEND_MESSAGE's long ones, the same field at the same place in both lists.
    static let sendFieldNames: [(short: UInt8, long: StaticString)] = [
        (UInt8(ascii: "b"), "topic"), (UInt8(ascii: "c"), "defaultTopic"), (UInt8(ascii: "d"), "defaultTopicQueueNums"),
        (UInt8(ascii: "e"), "queueId"), (UInt8(ascii: "f"), "sysFlag"), (UInt8(ascii: "g"), "bornTimestamp"),
        (UInt8(ascii: "h"), "flag"), (UInt8(ascii: "i"), "properties"), (UInt8(ascii: "j"), "reconsumeTimes"),
        (UInt8(ascii: "m"), "batch"),
    ]

    /// The send header, in one walk over the fields (no dictionary; a request read from a JSON
    /// header is walked in its text): a name of `sendFieldNames` in the form the request code uses
    /// wins over the other form, as in RocketMQ's SendMessageRequestHeaderV2.
    static func sendHeader(_ fields: ExtFields, v2: Bool) -> SendHeader? {
        let names = sendFieldNames
        let count = names.count
        // Slots 0..<count: the one-letter names; count..<2 count: the long ones; then the two
        // forwarding fields.
        return withUnsafeTemporaryAllocation(of: String?.self, capacity: 2 * count + 2) { slots -> SendHeader? in
            slots.initialize(repeating: nil)
            defer { _ = slots.baseAddress!.deinitialize(count: slots.count) }
            fields.forEachField { name, value in
                var slot: Int?
                if name.count == 1 {
                    slot = names.firstIndex { $0.short == name[0] }
                } else {
                    slot = names.firstIndex { $0.long.utf8CodeUnitCount == name.count && memcmp($0.long.utf8Start, name.baseAddress!, name.count) == 0 }
                        .map { $0 + count }
                    if slot == nil && Self.equals(name, Self.forwardedField) { slot = 2 * count }
                    if slot == nil && Self.equals(name, Self.bornHostField) { slot = 2 * count + 1 }
                }
                if let slot, let v = value() { slots[slot] = v }
            }
            func v(_ k: Int) -> String? { v2 ? (slots[k] ?? slots[k + count]) : (slots[k + count] ?? slots[k]) }
            guard let topic = v(0), let queueId = v(3).flatMap({ Int32($0) }) else { return nil }
            return SendHeader(
                topic: topic, defaultTopic: v(1) ?? "TBW102", defaultTopicQueueNums: v(2).flatMap { Int($0) } ?? 4, queueId: queueId,
                sysFlag: v(4).flatMap { Int32($0) } ?? 0, bornTimestamp: v(5).flatMap { Int64($0) } ?? 0,
                flag: v(6).flatMap { Int32($0) } ?? 0, properties: v(7) ?? "",
                reconsumeTimes: min(max(v(8).flatMap { Int32($0) } ?? 0, 0), 1_000_000), batch: v(9) == "true" || v(9) == "1",
                forwardedBornHost: slots[2 * count] != nil ? slots[2 * count + 1] : nil)
        }
    }

    private static func equals(_ bytes: UnsafeRawBufferPointer, _ text: String) -> Bool {
        var text = text
        return text.withUTF8 { $0.count == bytes.count && memcmp($0.baseAddress!, bytes.baseAddress!, bytes.count) == 0 }
    }

    /// `deadline`: when a send the fast path offered comes back here to be numbered again, the
    /// time it has left (a client that gave up must not find it stored long after).
    func send(_ request: RemotingCommand, _ connection: RemotingConnection, deadline: ContinuousClock.Instant? = nil) async -> RemotingCommand? {
        let h: SendHeader
        switch checkedSendHeader(request) {
        case .success(let header): h = header
        case .failure(let refusal): return refusal.answer
        }
        if !writes.isLeader { return await forwardOrRefuse(request, writes.refusal, from: connection) }
        // The topic, created from its default topic when allowed.
        let topic: TopicConfig
        switch await topicForSend(h) {
        case .success(let t): topic = t
        case .failure(let answer): return answer(request)
        }
        let plan: SendPlan
        switch sendPlan(request, h, topic, connection) {
        case .success(let p): plan = p
        case .failure(let refusal): return refusal.answer
        }
        let result: Appended
        let appendStart = ContinuousClock.now
        do {
            let timeout = deadline.map { max(.milliseconds(1), $0 - .now) } ?? options.sendTimeout
            result = try await writes.append(queue: plan.key, count: plan.count, timeout: timeout) { first, _ in plan.entry(firstQueueOffset: first) }
        } catch {
            return await sendFailure(request, error, connection)
        }
        return sendAnswer(request, plan, result, appendStart: appendStart)
    }

    /// The send processor's fast path, on the connection's event loop: a send to an existing topic
    /// on a leader that numbers its term is offered to the log without a task, and answered from
    /// the commit (`WritePath.offer`). Anything else (not leading yet, a topic to create, a refusal,
    /// a full mailbox) returns false and takes `send`, which answers every case; so does an offer
    /// the replica refused before storing it. Same answers as `send` (the process tests run both).
    ///
    /// The sends an event loop takes in one turn (the frames of its connections' reads) are offered
    /// together, as one entry, when the turn's reads are done (`flushSends`, a task on the same
    /// loop): per-entry work (numbering, the Raft node's bookkeeping, the entry's header, checksums
    /// and index record, the followers' decoding) is paid once per turn instead of once per send.
    func sendInline(_ request: RemotingCommand, _ connection: RemotingConnection) -> Bool {
        guard writes.canOffer, case .success(let h) = checkedSendHeader(request), let topic = store.topic(h.topic),
              case .success(let plan) = sendPlan(request, h, topic, connection) else { return false }
        let receipt = SendReceipt(service: self, request: request, plan: plan, connection: connection)
        let limitBytes = min(options.sendBatchBytes, writes.maxEntryBytes)
        let loop = connection.channel.eventLoop
        loop.preconditionInEventLoop()
        guard options.sendBatchMessages > 1, plan.entryBytes < limitBytes else {
            // Alone and at once; the sends this thread took before it in this turn go first.
            if let pending = sendBatches.currentValue, !pending.receipts.isEmpty { flushSends(pending) }
            return writes.offer(queue: plan.key, count: plan.count, timeout: options.sendTimeout,
                                body: { first, _ in plan.entry(firstQueueOffset: first) }, receipt: receipt)
        }
        let batch: SendBatch
        if let b = sendBatches.currentValue {
            batch = b
        } else {
            batch = SendBatch()
            sendBatches.currentValue = batch
        }
        if !batch.receipts.isEmpty && (batch.receipts.count >= options.sendBatchMessages || batch.bytes + plan.entryBytes > limitBytes) {
            flushSends(batch)
        }
        batch.plans.append(plan)
        batch.receipts.append(receipt)
        batch.bytes += plan.entryBytes
        if !batch.scheduled {
            batch.scheduled = true
            loop.execute {
                batch.scheduled = false
                self.flushSends(batch)
            }
        }
        return true
    }

    /// The fast-path sends one event loop thread took in its current turn; touched on that thread only.
    final class SendBatch: @unchecked Sendable {
        var plans: [SendPlan] = []
        var receipts: [SendReceipt] = []
        /// The records' bytes, the entry's size.
        var bytes = 0
        /// A `flushSends` task is queued on the loop.
        var scheduled = false
    }

    /// Offers the batch's sends as one entry. Sends the write path did not take go on as an
    /// offered send the replica refused would: to the waiting path (the numbering broke or
    /// leadership moved since they were taken, a snapshot is being built), or answered SYSTEM_BUSY
    /// (the replica's mailbox is full).
    private func flushSends(_ batch: SendBatch) {
        guard !batch.receipts.isEmpty else { return }
        let receipts = batch.receipts
        batch.receipts = []
        defer {
            batch.plans.removeAll(keepingCapacity: true)
            batch.bytes = 0
        }
        let bytes = batch.bytes
        let outcome = writes.offer(batch: batch.plans.map { (key: $0.key, count: $0.count) }, receipts: receipts, timeout: options.sendTimeout) { firsts in
            var entry: [UInt8] = []
            entry.reserveCapacity(bytes)
            for (plan, first) in zip(batch.plans, firsts) {
                // Checked when planned; one that fails anyway fails the whole entry (nothing offered).
                guard plan.append(to: &entry, firstQueueOffset: first) else { return [] }
            }
            return entry
        }
        switch outcome {
        case .offered: break
        case .busy: for r in receipts { r.answer(.failed(.busy)) }
        case .again: for r in receipts { r.answer(.again) }
        }
    }

    /// A send on the fast path, until its answer: everything the answer needs, in the one object
    /// the write path and the replica keep for it.
    final class SendReceipt: OfferReceipt, @unchecked Sendable {
        let service: BrokerService
        let request: RemotingCommand
        let plan: SendPlan
        let connection: RemotingConnection
        let appendStart = ContinuousClock.now

        init(service: BrokerService, request: RemotingCommand, plan: SendPlan, connection: RemotingConnection) {
            self.service = service
            self.request = request
            self.plan = plan
            self.connection = connection
        }

        override func answer(_ offered: WritePath.Offered) {
            switch offered {
            case .committed(let queueOffset):
                connection.respond(service.sendAnswer(request, plan, Appended(queueOffset: queueOffset), appendStart: appendStart), to: request)
            case .failed(let error):
                // Answered at once unless it is forwarded to a new leader (also when the node
                // stops: before the event loops do).
                if let answer = service.sendFailureAnswer(request, error) {
                    connection.respond(answer, to: request)
                } else {
                    let (service, request, connection) = (service, request, connection)
                    Task { if let answer = await service.sendFailure(request, error, connection) { connection.respond(answer, to: request) } }
                }
            case .again:
                // Not stored: the waiting path numbers it again (or answers why it cannot), within
                // the send's own timeout.
                let deadline = appendStart + service.options.sendTimeout
                let (service, request, connection) = (service, request, connection)
                Task { if let answer = await service.send(request, connection, deadline: deadline) { connection.respond(answer, to: request) } }
            }
        }
    }

    /// An answer instead of a send, with the request it answers.
    struct SendRefusal: Error {
        var answer: RemotingCommand
    }

    /// The send header, read and checked before the topic is looked up.
    func checkedSendHeader(_ request: RemotingCommand) -> Result<SendHeader, SendRefusal> {
        guard let h = Self.sendHeader(request.extFields, v2: request.code != RequestCode.sendMessage) else {
            return .failure(SendRefusal(answer: .response(to: request, code: ResponseCode.systemError, remark: "the send header lacks topic or queueId, or they are not numbers")))
        }
        guard TopicConfig.validName(h.topic) else {
            return .failure(SendRefusal(answer: .response(to: request, code: ResponseCode.systemError, remark: "the topic[\(h.topic)] is not a valid topic name (1-127 characters of %|a-zA-Z0-9_-)")))
        }
        if h.topic == "SCHEDULE_TOPIC_XXXX" {
            return .failure(SendRefusal(answer: .response(to: request, code: ResponseCode.noPermission, remark: "sending to topic \(h.topic) is forbidden")))
        }
        return .success(h)
    }

    /// What a send stores: its records (queue offset and physical offset 0: numbered by the write
    /// path, placed by the log) and the queue they go to (a delayed message's schedule queue).
    struct SendPlan: Sendable {
        var topic: String
        /// The queue asked for, or picked (a delayed message's answer still names it).
        var queueId: Int32
        var key: QueueKey
        var content: Content
        /// The messages' count.
        var count: Int
        var entryBytes: Int

        enum Content: Sendable {
            /// The common send: one message, encoded straight into its entry once it is numbered.
            case one(OneMessage)
            /// Records encoded already: copied into the entry, each numbered there.
            case records([[UInt8]])
        }

        /// The parts of a common send's record, checked (`MessageRecord.encodedSize`).
        struct OneMessage: Sendable {
            var queueId: Int32, flag: Int32, sysFlag: Int32, bornTimestamp: Int64, bornHost: MessageHost
            var storeTimestamp: Int64, storeHost: MessageHost, reconsumeTimes: Int32
            /// The request's body, as it came off the wire.
            var body: ByteBuffer
            var bodyCRC: UInt32
            var topic: String
            var propertyBytes: [UInt8]
        }

        /// The entry, with each record's queue offset written where it lands: the common send's
        /// record is encoded into it (no record built first and copied); records built already are
        /// copied in and patched there (a copy of a record to patch would cost another).
        func entry(firstQueueOffset first: Int64) -> [UInt8] {
            var entry: [UInt8] = []
            // Checked when planned; an entry that failed anyway is empty, which the write path
            // refuses (`WriteError.tooLarge`) rather than storing.
            return append(to: &entry, firstQueueOffset: first) ? entry : []
        }

        /// The records, appended to `entry` (one entry may hold several sends); false, with `entry`
        /// unchanged, when a record does not encode.
        func append(to entry: inout [UInt8], firstQueueOffset first: Int64) -> Bool {
            if entry.isEmpty { entry.reserveCapacity(entryBytes) }
            switch content {
            case .one(let m):
                return m.body.withUnsafeReadableBytes { b in
                    m.propertyBytes.withUnsafeBytes { p in
                        (try? MessageRecord.append(queueId: m.queueId, flag: m.flag, queueOffset: first, sysFlag: m.sysFlag, bornTimestamp: m.bornTimestamp,
                                                   bornHost: m.bornHost, storeTimestamp: m.storeTimestamp, storeHost: m.storeHost,
                                                   reconsumeTimes: m.reconsumeTimes, body: b, bodyCRC: m.bodyCRC, topic: m.topic,
                                                   propertyBytes: p, to: &entry)) != nil
                    }
                }
            case .records(let records):
                for (k, r) in records.enumerated() {
                    let start = entry.count
                    entry.append(contentsOf: r)
                    MessageRecord.patch(queueOffset: first + Int64(k), physicalOffset: nil, in: &entry, at: start)
                }
                return true
            }
        }
    }

    func sendPlan(_ request: RemotingCommand, _ h: SendHeader, _ topic: TopicConfig, _ connection: RemotingConnection) -> Result<SendPlan, SendRefusal> {
        func refuse(_ code: Int32, _ remark: String) -> Result<SendPlan, SendRefusal> {
            .failure(SendRefusal(answer: .response(to: request, code: code, remark: remark)))
        }
        if topic.perm & TopicConfig.permWrite == 0 {
            return refuse(ResponseCode.noPermission, "the topic[\(h.topic)] is not writable")
        }
        let queues = max(topic.writeQueueNums, topic.readQueueNums)
        var queueId = h.queueId
        if queueId < 0 { queueId = Int32.random(in: 0..<Int32(clamping: max(1, topic.writeQueueNums))) }
        guard queueId < queues else {
            return refuse(ResponseCode.systemError,
                          "queueId[\(queueId)] is illegal, topic:[\(h.topic)] topicConfig.writeQueueNums:[\(topic.writeQueueNums)] topicConfig.readQueueNums:[\(topic.readQueueNums)]")
        }
        let bodyBuffer = request.body ?? ByteBuffer()
        let bornHost = h.forwardedBornHost.map(messageHost)
            ?? connection.remoteAddress.map(messageHost) ?? messageHost("127.0.0.1:0")
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        var records: [[UInt8]] = []
        // The queue the records go to (the schedule topic's level queue for a delayed message).
        var key = QueueKey(h.topic, queueId)
        do {
            if !h.batch, let propertyBytes = MessageProperties.rewritten(h.properties, setting: PropertyName.cluster, to: options.clusterName,
                                                                          removing: PropertyName.wait, unlessPresent: PropertyName.delay) {
                // The common send (one message, not delayed, properties as clients encode them): the
                // record from the request's bytes, encoded into its entry once it is numbered (the
                // same bytes as the general path's).
                let size = try MessageRecord.encodedSize(bornHost: bornHost, storeHost: storeHost, bodyBytes: bodyBuffer.readableBytes,
                                                         topic: h.topic, propertyBytes: propertyBytes.count)
                if size > options.maxMessageSize {
                    return refuse(ResponseCode.messageIllegal, "the message is \(size) bytes stored, over maxMessageSize \(options.maxMessageSize)")
                }
                if size > writes.maxEntryBytes {
                    return refuse(ResponseCode.messageIllegal, "the message is \(size) bytes stored, over the largest log entry this group takes (\(writes.maxEntryBytes) bytes)")
                }
                let one = SendPlan.OneMessage(
                    queueId: queueId, flag: h.flag, sysFlag: h.sysFlag, bornTimestamp: h.bornTimestamp, bornHost: bornHost,
                    storeTimestamp: now, storeHost: storeHost, reconsumeTimes: h.reconsumeTimes, body: bodyBuffer,
                    bodyCRC: bodyBuffer.withUnsafeReadableBytes { CRC32IEEE.rocketMQBodyCRC($0) }, topic: h.topic, propertyBytes: propertyBytes)
                return .success(SendPlan(topic: h.topic, queueId: queueId, key: key, content: .one(one), count: 1, entryBytes: size))
            } else {
                let body = bodyBuffer.getBytes(at: bodyBuffer.readerIndex, length: bodyBuffer.readableBytes) ?? []
                var batchProperties = MessageProperties()
                if let p = Self.properties(h.properties) { batchProperties = p }
                if h.batch {
                    for item in try Self.batchItems(body) {
                        var props = item.properties
                        for (k, v) in batchProperties where props[k] == nil { props[k] = v }
                        props[PropertyName.cluster] = options.clusterName
                        props[PropertyName.wait] = nil
                        records.append(try MessageRecord(queueId: queueId, flag: item.flag, sysFlag: h.sysFlag, bornTimestamp: h.bornTimestamp,
                                                         bornHost: bornHost, storeTimestamp: now, storeHost: storeHost, reconsumeTimes: h.reconsumeTimes,
                                                         body: item.body, topic: h.topic, properties: props).encoded())
                    }
                    guard !records.isEmpty else { throw SendInputError("a batch without messages") }
                } else {
                    var props = batchProperties
                    props[PropertyName.cluster] = options.clusterName
                    props[PropertyName.wait] = nil
                    var (topicName, queue) = (h.topic, queueId)
                    // A delayed message waits in the schedule topic, its level's queue (ScheduleMessageService).
                    if let level = props[PropertyName.delay].flatMap({ Int($0) }), level > 0, options.delayLevels.maxLevel > 0, !h.topic.hasPrefix("%DLQ%") {
                        let l = min(level, options.delayLevels.maxLevel)
                        props[PropertyName.delay] = "\(l)"
                        props[PropertyName.realTopic] = h.topic
                        props[PropertyName.realQueueId] = "\(queueId)"
                        (topicName, queue) = (DelayLevels.topic, Int32(l - 1))
                    }
                    key = QueueKey(topicName, queue)
                    records.append(try MessageRecord(queueId: queue, flag: h.flag, sysFlag: h.sysFlag, bornTimestamp: h.bornTimestamp,
                                                     bornHost: bornHost, storeTimestamp: now, storeHost: storeHost, reconsumeTimes: h.reconsumeTimes,
                                                     body: body, topic: topicName, properties: props).encoded())
                }
            }
        } catch {
            return refuse(ResponseCode.messageIllegal, "the message is malformed: \(error)")
        }
        for r in records where r.count > options.maxMessageSize {
            return refuse(ResponseCode.messageIllegal, "the message is \(r.count) bytes stored, over maxMessageSize \(options.maxMessageSize)")
        }
        let entryBytes = records.reduce(0) { $0 + $1.count }
        if entryBytes > min(options.maxMessageSize, writes.maxEntryBytes) {
            return refuse(ResponseCode.messageIllegal,
                          "the batch is \(entryBytes) bytes stored, over maxMessageSize \(options.maxMessageSize); send it in smaller batches")
        }
        return .success(SendPlan(topic: h.topic, queueId: queueId, key: key, content: .records(records), count: records.count, entryBytes: entryBytes))
    }

    /// The answer to a send the writer did not store (or whose outcome is unknown).
    func sendFailure(_ request: RemotingCommand, _ error: WriteError, _ connection: RemotingConnection) async -> RemotingCommand? {
        if let answer = sendFailureAnswer(request, error) { return answer }
        return await forwardOrRefuse(request, error, from: connection)
    }

    /// `sendFailure`'s answers that need no forwarding (nil: forward or refuse as not the leader).
    func sendFailureAnswer(_ request: RemotingCommand, _ error: WriteError) -> RemotingCommand? {
        switch error {
        case .notLeader, .notReady, .slave: return nil
        case .busy: return .response(to: request, code: ResponseCode.systemBusy, remark: "[RAFT]broker busy: \(error)")
        case .tooLarge: return .response(to: request, code: ResponseCode.messageIllegal, remark: "\(error)")
        case .timedOut: return .response(to: request, code: ResponseCode.systemError, remark: "the message was not committed in time; it may still be stored")
        case .failed, .storage: return .response(to: request, code: ResponseCode.systemError, remark: "\(error)")
        }
    }

    /// The answer to a stored send: committed and dispatched, so the consume queue says where each
    /// message is.
    func sendAnswer(_ request: RemotingCommand, _ plan: SendPlan, _ result: Appended, appendStart: ContinuousClock.Instant) -> RemotingCommand {
        counters.withLock { $0.put += Int64(plan.count) }
        options.observer?.stored(topic: plan.topic, messages: plan.count, bytes: plan.entryBytes, appendDuration: ContinuousClock.now - appendStart)
        let queue = store.queue(plan.key)
        let id: SendResponseFields.MessageID
        if plan.count == 1 {
            // The common send: its one entry from the queue's tail, without arrays; an IPv4 store
            // host's id is kept as two words until the header is written (no string).
            let offset = (try? queue?.entry(at: UInt64(result.queueOffset))).flatMap { $0 }?.commitLogOffset
            id = offset.map { offsetMessageID(storeHost: storeHost, physicalOffset: $0) } ?? .text("")
        } else {
            let placed = (try? queue?.read(from: UInt64(result.queueOffset), maxCount: plan.count)) ?? []
            id = .text(placed.map { offsetMessageId(storeHost: storeHost, physicalOffset: $0.commitLogOffset) }.joined(separator: ","))
        }
        // SYNC_MASTER's "sent, but not on a slave" answers carry the message's place too (clients
        // count them as sent; retryAnotherBrokerWhenNotStoreOK decides).
        let code: Int32
        switch result.outcome {
        case .stored: code = ResponseCode.success
        case .slaveNotAvailable: code = ResponseCode.slaveNotAvailable
        case .flushSlaveTimeout: code = ResponseCode.flushSlaveTimeout
        }
        // The queue asked for (a delayed message's offset is its schedule queue's, as in RocketMQ).
        return .response(to: request, code: code, extFields: ExtFields(SendResponseFields(
            msgId: id, queueId: plan.queueId, queueOffset: result.queueOffset, region: options.regionId, traceOn: options.traceOn)))
    }

    struct SendInputError: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    static func properties(_ text: String) -> MessageProperties? {
        let bytes = Array(text.utf8)
        return try? bytes.withUnsafeBytes { try MessageProperties.decode($0) }
    }

    /// The items of a batch body (MessageDecoder.encodeMessages).
    static func batchItems(_ body: [UInt8]) throws -> [(flag: Int32, body: [UInt8], properties: MessageProperties)] {
        var out: [(Int32, [UInt8], MessageProperties)] = []
        var at = 0
        while at < body.count {
            guard at + 20 <= body.count else { throw SendInputError("a batch item is cut short at byte \(at)") }
            let total = Int(Int32(bitPattern: UInt32(body.readBE(at, bytes: 4))))
            let flag = Int32(bitPattern: UInt32(body.readBE(at + 12, bytes: 4)))
            let bodyLength = Int(Int32(bitPattern: UInt32(body.readBE(at + 16, bytes: 4))))
            guard bodyLength >= 0, at + 20 + bodyLength + 2 <= body.count else { throw SendInputError("a batch item's body overruns the batch at byte \(at)") }
            let itemBody = Array(body[(at + 20)..<(at + 20 + bodyLength)])
            let propLength = Int(Int16(bitPattern: UInt16(body.readBE(at + 20 + bodyLength, bytes: 2))))
            let propStart = at + 22 + bodyLength
            guard propLength >= 0, propStart + propLength <= body.count, total == 22 + bodyLength + propLength else {
                throw SendInputError("a batch item's sizes disagree at byte \(at)")
            }
            let props = try body[propStart..<(propStart + propLength)].withUnsafeBytes { try MessageProperties.decode($0) }
            out.append((flag, itemBody, props))
            at = propStart + propLength
        }
        return out
    }

    enum TopicLookup {
        case success(TopicConfig)
        case failure(@Sendable (RemotingCommand) -> RemotingCommand)
    }

    /// The topic of a send, auto-created from its default topic (TopicConfigManager.createTopicInSendMessageMethod).
    func topicForSend(_ h: SendHeader) async -> TopicLookup {
        if let t = store.topic(h.topic) { return .success(t) }
        var created: TopicConfig
        if h.topic.hasPrefix("%RETRY%") {
            created = TopicConfig(topicName: h.topic, readQueueNums: 1, writeQueueNums: 1, perm: 6)
        } else {
            guard let template = store.topic(h.defaultTopic), template.perm & TopicConfig.permInherit != 0,
                  options.autoCreateTopicEnable || h.defaultTopic != "TBW102" else {
                let topic = h.topic
                return .failure { .response(to: $0, code: ResponseCode.topicNotExist, remark: "topic[\(topic)] not exist, apply first please!") }
            }
            let n = max(1, min(h.defaultTopicQueueNums, template.writeQueueNums))
            created = TopicConfig(topicName: h.topic, readQueueNums: n, writeQueueNums: n, perm: template.perm & ~TopicConfig.permInherit)
        }
        created.topicSysFlag = 0
        do {
            _ = try await writes.append(.topicCreate(created), timeout: options.sendTimeout)
            logger.info("auto-created a topic", metadata: ["topic": "\(h.topic)", "queues": "\(created.writeQueueNums)"])
        } catch {
            let e = "\(error)"
            return .failure { .response(to: $0, code: ResponseCode.systemError, remark: "creating the topic failed: \(e)") }
        }
        guard let t = store.topic(h.topic) else {
            return .failure { .response(to: $0, code: ResponseCode.systemError, remark: "the created topic was not applied") }
        }
        return .success(t)
    }

    // MARK: - Send back (consumer retries)

    /// CONSUMER_SEND_MSG_BACK: a message the consumer failed goes to `%RETRY%<group>` after its delay
    /// level (3 + reconsume times when 0), or to `%DLQ%<group>` once it was retried
    /// maxReconsumeTimes times or the level is negative.
    func sendBack(_ request: RemotingCommand, _ connection: RemotingConnection) async -> RemotingCommand? {
        let f = request.extFields.dictionary
        guard let group = f["group"], let offset = f["offset"].flatMap({ Int64($0) }), let level = f["delayLevel"].flatMap({ Int32($0) }) else {
            return .response(to: request, code: ResponseCode.systemError, remark: "CONSUMER_SEND_MSG_BACK needs offset, group and delayLevel")
        }
        guard TopicConfig.validName("%RETRY%" + group) else {
            return .response(to: request, code: ResponseCode.systemError, remark: "the group name \(group) is not valid")
        }
        if !writes.isLeader { return await forwardOrRefuse(request, writes.refusal, from: connection) }
        let groupConfig = store.group(group)
        if groupConfig == nil && !options.autoCreateSubscriptionGroup {
            return .response(to: request, code: ResponseCode.subscriptionGroupNotExist, remark: "subscription group not exist, \(group)")
        }
        if let g = groupConfig, g.retryQueueNums <= 0 { return .response(to: request, code: ResponseCode.success) }
        guard let bytes = store.record(atPhysicalOffset: offset), var r = try? bytes.withUnsafeBytes({ try MessageRecord.decode($0, verifyBodyCRC: false) }) else {
            return .response(to: request, code: ResponseCode.systemError, remark: "look message by offset failed, \(offset)")
        }
        let maxTimes = f["maxReconsumeTimes"].flatMap { Int32($0) } ?? groupConfig.map { Int32(clamping: $0.retryMaxTimes) } ?? options.maxReconsumeTimes
        if r.properties[PropertyName.retryTopic] == nil { r.properties[PropertyName.retryTopic] = r.topic }
        if r.properties[PropertyName.originMessageId] == nil {
            r.properties[PropertyName.originMessageId] = f["originMsgId"] ?? r.properties[PropertyName.uniqueKey] ?? offsetMessageId(storeHost: r.storeHost, physicalOffset: offset)
        }
        r.properties[PropertyName.wait] = "false"
        var topic = "%RETRY%" + group
        var delay: Int32 = 0
        if r.reconsumeTimes >= maxTimes || level < 0 {
            topic = "%DLQ%" + group
            // RocketMQ's DLQ: one queue, write only (consumers must be told to read it on purpose).
            guard await ensureTopic(TopicConfig(topicName: topic, readQueueNums: 1, writeQueueNums: 1, perm: TopicConfig.permWrite)) else {
                return .response(to: request, code: ResponseCode.systemError, remark: "creating \(topic) failed")
            }
        } else {
            delay = level == 0 ? Int32(clamping: 3 + Int64(r.reconsumeTimes)) : level
            guard await ensureTopic(TopicConfig(topicName: topic, readQueueNums: 1, writeQueueNums: 1, perm: 6)) else {
                return .response(to: request, code: ResponseCode.systemError, remark: "creating \(topic) failed")
            }
        }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        var queue: Int32 = 0
        var props = r.properties
        var stored = topic
        if delay > 0, options.delayLevels.maxLevel > 0 {
            let l = min(Int(delay), options.delayLevels.maxLevel)
            props[PropertyName.delay] = "\(l)"
            props[PropertyName.realTopic] = topic
            props[PropertyName.realQueueId] = "0"
            (stored, queue) = (DelayLevels.topic, Int32(l - 1))
        }
        let record: [UInt8]
        do {
            record = try MessageRecord(queueId: queue, flag: r.flag, sysFlag: r.sysFlag, bornTimestamp: r.bornTimestamp, bornHost: r.bornHost,
                                       storeTimestamp: now, storeHost: storeHost, reconsumeTimes: r.reconsumeTimes < Int32.max ? r.reconsumeTimes + 1 : Int32.max, body: r.body,
                                       topic: stored, properties: props).encoded()
        } catch {
            return .response(to: request, code: ResponseCode.systemError, remark: "\(error)")
        }
        do {
            _ = try await writes.append(queue: QueueKey(stored, queue), count: 1, timeout: options.sendTimeout) { first, _ in
                var out = record
                MessageRecord.patch(queueOffset: first, physicalOffset: nil, in: &out)
                return out
            }
            return .response(to: request, code: ResponseCode.success)
        } catch {
            switch error {
            case .notLeader, .notReady: return await forwardOrRefuse(request, error, from: connection)
            default: return .response(to: request, code: ResponseCode.systemError, remark: "PUT_MESSAGE failed: \(error)")
            }
        }
    }

    /// A topic that must exist (created if absent); false when it could not be.
    func ensureTopic(_ t: TopicConfig) async -> Bool {
        if store.topic(t.topicName) != nil { return true }
        _ = try? await writes.append(.topicCreate(t), timeout: options.sendTimeout)
        return store.topic(t.topicName) != nil
    }

    // MARK: - Pull

    static let flagCommitOffset: Int32 = 0x1, flagSuspend: Int32 = 0x2, flagSubscription: Int32 = 0x4

    func pull(_ request: RemotingCommand, _ connection: RemotingConnection) async -> RemotingCommand? {
        let f = request.extFields.dictionary
        guard let group = f["consumerGroup"], let topic = f["topic"], let queueId = f["queueId"].flatMap({ Int32($0) }),
              let offset = f["queueOffset"].flatMap({ Int64($0) }) else {
            return .response(to: request, code: ResponseCode.systemError, remark: "the pull header needs consumerGroup, topic, queueId and queueOffset")
        }
        let maxNums = max(1, min(f["maxMsgNums"].flatMap { Int($0) } ?? 32, 1024))
        let sysFlag = f["sysFlag"].flatMap { Int32($0) } ?? 0
        let pullStart = ContinuousClock.now
        var suspended = Duration.zero
        guard let config = store.topic(topic) else {
            return .response(to: request, code: ResponseCode.topicNotExist, remark: "topic[\(topic)] not exist, apply first please!")
        }
        if config.perm & TopicConfig.permRead == 0 {
            return .response(to: request, code: ResponseCode.noPermission, remark: "the topic[\(topic)] pulling message is forbidden")
        }
        guard queueId >= 0, queueId < max(config.readQueueNums, config.writeQueueNums) else {
            return .response(to: request, code: ResponseCode.systemError,
                             remark: "queueId[\(queueId)] is illegal, topic:[\(topic)] topicConfig.readQueueNums:[\(config.readQueueNums)] consumer:[\(connection.remoteAddress.map { "\($0)" } ?? "?")]")
        }
        if let g = store.group(group) {
            if !g.consumeEnable {
                return .response(to: request, code: ResponseCode.noPermission, remark: "subscription group no permission, \(group)")
            }
        } else if !options.autoCreateSubscriptionGroup {
            return .response(to: request, code: ResponseCode.subscriptionGroupNotExist, remark: "subscription group [\(group)] does not exist")
        }
        let subscription: Subscription
        if sysFlag & Self.flagSubscription != 0 {
            subscription = Subscription(topic: topic, expression: f["subscription"] ?? "*")
        } else {
            // Java push consumers rely on the heartbeat's subscription; without one, every message.
            subscription = consumers.subscription(group: group, topic: topic) ?? Subscription(topic: topic, expression: "*")
        }
        if sysFlag & Self.flagCommitOffset != 0, let commit = f["commitOffset"].flatMap({ Int64($0) }), commit >= 0, writes.isLeader {
            commitOffset(group: group, QueueKey(topic, queueId), commit)
        }
        let key = QueueKey(topic, queueId)
        var result = store.getMessages(key, offset: offset, maxCount: maxNums, matches: subscription.matches)
        let wouldBeNotFound = result.status == .offsetOverflowOne || ((result.status == .noMessageInQueue || result.status == .noMatchedLogicQueue) && offset == 0)
        if wouldBeNotFound && sysFlag & Self.flagSuspend != 0 {
            let asked = Duration.milliseconds(f["suspendTimeoutMillis"].flatMap { Int64($0) } ?? 15_000)
            let waitStart = ContinuousClock.now
            await store.waitForMessages(key, offset: offset, deadline: .now + min(max(asked, .zero), options.maxSuspend))
            suspended = ContinuousClock.now - waitStart
            result = store.getMessages(key, offset: offset, maxCount: maxNums, matches: subscription.matches)
        }
        // Only the group's authority corrects a consumer's offset (PULL_OFFSET_MOVED): a leader that
        // still leads and has dispatched everything committed until now, confirmed by ReadIndex. A
        // follower may not have dispatched that far yet (just restarted, catching up), and a leader
        // deposed without knowing it yet (partitioned, paused) may hold a shorter queue than the one
        // the consumer read from its successor: moved, the consumer would read the queue again from
        // 0 and commit that. Both answer "retry" and keep the offset (RocketMQ's slave rule).
        if Self.pullCode(result.status, offset: offset) == ResponseCode.pullOffsetMoved {
            if writes.isCaughtUpLeader, await writes.confirmLeadership(timeout: options.sendTimeout) {
                // Confirmed: what was dispatched meanwhile counts (the queue may reach the offset now).
                result = store.getMessages(key, offset: offset, maxCount: maxNums, matches: subscription.matches)
            } else {
                return .response(to: request, code: ResponseCode.pullRetryImmediately, remark: result.status.rawValue, extFields: [
                    "suggestWhichBrokerId": "0", "nextBeginOffset": "\(offset)", "minOffset": "\(result.minOffset)", "maxOffset": "\(result.maxOffset)",
                ])
            }
        }
        let code = Self.pullCode(result.status, offset: offset)
        var body: ByteBuffer?
        if code == ResponseCode.success {
            var b = ByteBuffer()
            b.writeBytes(result.records)
            body = b
            counters.withLock { $0.get += Int64(result.count) }
        }
        options.observer?.served(topic: topic, messages: code == ResponseCode.success ? result.count : 0,
                                 bytes: code == ResponseCode.success ? result.records.count : 0,
                                 duration: ContinuousClock.now - pullStart - suspended, suspended: suspended > .zero)
        // RocketMQ's isSuggestPullingFromSlave: a consumer whose next message is out of memory goes to
        // a follower (every member serves committed data), if the broker allows it.
        var suggest: Int64 = 0
        if options.slaveReadEnable, code == ResponseCode.success, store.isInDisk(key, offset: offset) {
            suggest = store.group(group)?.whichBrokerWhenConsumeSlowly ?? 1
        } else if options.slaveReadEnable {
            suggest = store.group(group)?.brokerId ?? 0
        }
        return .response(to: request, code: code, remark: result.status.rawValue, extFields: [
            "suggestWhichBrokerId": "\(suggest)", "nextBeginOffset": "\(result.nextBeginOffset)",
            "minOffset": "\(result.minOffset)", "maxOffset": "\(result.maxOffset)",
        ], body: body)
    }

    /// PULL_MESSAGE's response code for what the store found.
    static func pullCode(_ status: MessageStore.GetStatus, offset: Int64) -> Int32 {
        switch status {
        case .found: return ResponseCode.success
        case .noMatchedMessage, .messageWasRemoving: return ResponseCode.pullRetryImmediately
        case .offsetOverflowOne, .offsetFoundNull: return ResponseCode.pullNotFound
        case .noMatchedLogicQueue, .noMessageInQueue: return offset != 0 ? ResponseCode.pullOffsetMoved : ResponseCode.pullNotFound
        case .offsetTooSmall, .offsetOverflowBadly: return ResponseCode.pullOffsetMoved
        }
    }

    // MARK: - Consumer offsets and clients

    /// Records a consumer offset on the leader; `flushOffsets` writes them to the log.
    func commitOffset(group: String, _ key: QueueKey, _ offset: Int64) {
        offsetTables.withLock { $0.pending["\(key.topic)@\(group)", default: [:]][key.queueId] = offset }
    }

    /// The offset a group consumes a queue from: the leader's newest (not yet in the log), else the
    /// applied one.
    func offset(group: String, _ key: QueueKey) -> Int64? {
        let k = "\(key.topic)@\(group)"
        if writes.keepsLocalOffsets {
            // A classic slave: what consumers committed here while the master was away, unless the
            // master's (from the log) is further.
            let local = offsetTables.withLock { $0.pending[k]?[key.queueId] }
            let applied = store.consumerOffset(group: group, key)
            if let local, let applied { return max(local, applied) }
            return local ?? applied
        }
        if let o = offsetTables.withLock({ $0.pending[k]?[key.queueId] ?? $0.flushing[k]?[key.queueId] }) { return o }
        return store.consumerOffset(group: group, key)
    }

    /// Writes what is pending (this queue's commit among it) to the log after any flush under way,
    /// and waits until it is applied; false when that failed or leadership was lost.
    func committedPendingOffset(group: String, _ key: QueueKey) async -> Bool {
        await flushOffsets() && writes.isLeader
    }

    /// Writes the pending offsets as one metadata entry (on the leader, every offsetFlushInterval,
    /// and before an offset query is answered). One flush at a time; true once the entry is applied
    /// (or nothing was pending).
    @discardableResult
    public func flushOffsets() async -> Bool {
        await flushGate.acquire()
        defer { flushGate.release() }
        let batch = offsetTables.withLock { t -> [String: [Int32: Int64]] in
            // Visible to offset(group:) until applied: the schedule service and queries run meanwhile.
            t.flushing = t.pending
            t.pending = [:]
            return t.flushing
        }
        guard !batch.isEmpty else { return true }
        do {
            _ = try await writes.append(.offsets(batch), timeout: .seconds(3))
            offsetTables.withLock { $0.flushing = [:] }
            return true
        } catch {
            offsetTables.withLock { t in
                t.flushing = [:]
                // Not the leader any more: the offsets go with the leadership. Not committed: keep
                // what no newer commit replaced, for the next flush.
                if case .notLeader = error { return }
                for (k, q) in batch { for (id, o) in q where t.pending[k]?[id] == nil { t.pending[k, default: [:]][id] = o } }
            }
            return false
        }
    }

    func consumer(_ request: RemotingCommand, _ connection: RemotingConnection) async -> RemotingCommand? {
        let f = request.extFields.dictionary
        switch request.code {
        case RequestCode.queryConsumerOffset:
            guard let group = f["consumerGroup"], let topic = f["topic"], let q = f["queueId"].flatMap({ Int32($0) }) else {
                return .response(to: request, code: ResponseCode.systemError, remark: "QUERY_CONSUMER_OFFSET needs consumerGroup, topic and queueId")
            }
            // The leader answers (a follower asks it); a leader still dispatching its log asks for a retry.
            if writes.isLeader && !writes.isCaughtUpLeader {
                return .response(to: request, code: ResponseCode.serviceNotAvailable, remark: "the new leader is still dispatching its log; retry")
            }
            if !writes.isLeader, writes.leader != nil, request.extFields[Self.forwardedField] == nil,
               let answer = await forwardOrRefuse(request, writes.refusal), answer.code != ResponseCode.serviceNotAvailable {
                return answer
            }
            let key = QueueKey(topic, q)
            let known: Int64?
            if writes.keepsLocalOffsets {
                known = offset(group: group, key)
            } else if writes.isLeader {
                // The leader answers only what its log committed, after writing the pending commits,
                // and only once a majority confirmed it still leads (ReadIndex): a leader deposed with
                // commits it could not replicate, or not yet aware it was replaced, would otherwise
                // show an offset its successor does not have, and the offset would seem to go back.
                guard await committedPendingOffset(group: group, key), await writes.confirmLeadership(timeout: .seconds(3)) else {
                    return .response(to: request, code: ResponseCode.serviceNotAvailable, remark: "this leader cannot confirm the group's offset now (no majority answered); retry")
                }
                known = store.consumerOffset(group: group, key)
            } else {
                // A Raft follower's applied offsets may be behind what the leader answered already.
                return .response(to: request, code: ResponseCode.serviceNotAvailable, remark: "no leader answered for the group's offset; retry")
            }
            if let o = known, o >= 0 {
                return .response(to: request, code: ResponseCode.success, extFields: ["offset": "\(o)"])
            }
            // A new group on a young queue starts at 0 (rocketmq-protocol.md §9 item 9): its first
            // message is still in memory. Otherwise the client decides (consumeFromWhere).
            if store.minOffset(key) <= 0 && !store.isInDisk(key, offset: 0) {
                return .response(to: request, code: ResponseCode.success, extFields: ["offset": "0"])
            }
            return .response(to: request, code: ResponseCode.queryNotFound, remark: "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first")
        case RequestCode.updateConsumerOffset:
            guard let group = f["consumerGroup"], let topic = f["topic"], let q = f["queueId"].flatMap({ Int32($0) }),
                  let o = f["commitOffset"].flatMap({ Int64($0) }) else {
                return .response(to: request, code: ResponseCode.systemError, remark: "UPDATE_CONSUMER_OFFSET needs consumerGroup, topic, queueId and commitOffset")
            }
            guard writes.isLeader || writes.keepsLocalOffsets else { return await forwardOrRefuse(request, writes.refusal) }
            commitOffset(group: group, QueueKey(topic, q), o)
            return .response(to: request, code: ResponseCode.success)
        case RequestCode.heartBeat:
            var b = request.body ?? ByteBuffer()
            let bytes = b.readBytes(length: b.readableBytes) ?? []
            guard let r = consumers.heartbeat(bytes, connection: connection, language: request.language.name, version: request.version) else {
                return .response(to: request, code: ResponseCode.systemError, remark: "the heartbeat body is not HeartbeatData JSON")
            }
            if writes.isLeader {
                for group in r.groups where options.autoCreateSubscriptionGroup && store.group(group) == nil && SubscriptionGroupConfig.validName(group) {
                    _ = try? await writes.append(.groupCreate(SubscriptionGroupConfig(groupName: group)), timeout: .seconds(2))
                }
                for group in r.groups where store.topic("%RETRY%" + group) == nil {
                    _ = try? await writes.append(.topicCreate(TopicConfig(topicName: "%RETRY%" + group, readQueueNums: 1, writeQueueNums: 1, perm: 6)),
                                                 timeout: .seconds(2))
                }
            }
            for group in r.changed { notifyIdsChanged(group) }
            return .response(to: request, code: ResponseCode.success)
        case RequestCode.unregisterClient:
            if let id = f["clientID"] {
                if let g = f["consumerGroup"], consumers.unregister(clientId: id, group: g) { notifyIdsChanged(g) }
            }
            return .response(to: request, code: ResponseCode.success)
        case RequestCode.getConsumerListByGroup:
            let group = f["consumerGroup"] ?? ""
            let ids = consumers.clientIds(group: group)
            guard !ids.isEmpty else {
                return .response(to: request, code: ResponseCode.systemError, remark: "no consumer for this group, \(group)")
            }
            var body = ByteBuffer()
            body.writeString(JSONText.object(["consumerIdList": .array(ids.map { .string($0) })]).serialized)
            return .response(to: request, code: ResponseCode.success, body: body)
        case RequestCode.lockBatchMQ, RequestCode.unlockBatchMQ:
            // One lock table per group, the leader's: two members granting the same queue would let
            // two orderly consumers process it.
            guard writes.isLeader else { return await forwardOrRefuse(request, writes.refusal) }
            var b = request.body ?? ByteBuffer()
            guard let any = try? JSONSerialization.jsonObject(with: Data(b.readBytes(length: b.readableBytes) ?? [])),
                  let o = any as? [String: Any], let client = o["clientId"] as? String, let group = o["consumerGroup"] as? String else {
                return .response(to: request, code: ResponseCode.systemError, remark: "the lock body needs clientId, consumerGroup and mqSet")
            }
            let mqs = ((o["mqSet"] as? [[String: Any]]) ?? []).compactMap { m -> (String, JSONText)? in
                guard let t = m["topic"] as? String, let b = m["brokerName"] as? String, let q = (m["queueId"] as? NSNumber)?.int64Value else { return nil }
                return ("\(t)@\(b)@\(q)", .object(["brokerName": .string(b), "queueId": .int(q), "topic": .string(t)]))
            }
            if request.code == RequestCode.unlockBatchMQ {
                locks.unlock(group: group, clientId: client, queues: mqs.map(\.0))
                return .response(to: request, code: ResponseCode.success)
            }
            let held = Set(locks.lock(group: group, clientId: client, queues: mqs.map(\.0)))
            var body = ByteBuffer()
            body.writeString(JSONText.object(["lockOKMQSet": .array(mqs.filter { held.contains($0.0) }.map(\.1))]).serialized)
            return .response(to: request, code: ResponseCode.success, body: body)
        default:
            return .response(to: request, code: ResponseCode.requestCodeNotSupported, remark: "request type \(request.code) not supported")
        }
    }

    /// NOTIFY_CONSUMER_IDS_CHANGED to every member of a group, so they rebalance at once.
    func notifyIdsChanged(_ group: String) {
        for c in consumers.connections(group: group) {
            c.oneway(.request(code: RequestCode.notifyConsumerIdsChanged, opaque: 0, extFields: ["consumerGroup": group], oneway: true))
        }
    }

    // MARK: - Admin

    func admin(_ request: RemotingCommand, _ connection: RemotingConnection) async -> RemotingCommand? {
        let f = request.extFields.dictionary
        switch request.code {
        case RequestCode.getAllTopicConfig:
            var body = ByteBuffer()
            body.writeString(store.topics.serializeWrapper)
            return .response(to: request, code: ResponseCode.success, body: body)
        case RequestCode.updateAndCreateTopic:
            guard let name = f["topic"], TopicConfig.validName(name) else {
                return .response(to: request, code: ResponseCode.systemError, remark: "the topic[\(f["topic"] ?? "")] is not a valid topic name")
            }
            if Self.systemTopics(options).contains(name) || name.hasPrefix("rmq_sys_") {
                return .response(to: request, code: ResponseCode.systemError, remark: "The topic[\(name)] is conflict with system topic.")
            }
            var t = TopicConfig(topicName: name, readQueueNums: f["readQueueNums"].flatMap { Int($0) } ?? 16,
                                writeQueueNums: f["writeQueueNums"].flatMap { Int($0) } ?? 16, perm: f["perm"].flatMap { Int($0) } ?? 6)
            t.topicFilterType = f["topicFilterType"] ?? "SINGLE_TAG"
            t.topicSysFlag = f["topicSysFlag"].flatMap { Int($0) } ?? 0
            t.order = f["order"] == "true"
            guard t.readQueueNums > 0, t.writeQueueNums > 0, t.readQueueNums <= 1024, t.writeQueueNums <= 1024 else {
                return .response(to: request, code: ResponseCode.systemError, remark: "queue counts must be 1...1024")
            }
            return await metadataWrite(request, .topicUpsert(t))
        case RequestCode.deleteTopicInBroker:
            guard let name = f["topic"] else { return .response(to: request, code: ResponseCode.systemError, remark: "DELETE_TOPIC_IN_BROKER needs topic") }
            return await metadataWrite(request, .topicDelete(name))
        case RequestCode.getMaxOffset, RequestCode.getMinOffset, RequestCode.getEarliestMsgStoreTime, RequestCode.searchOffsetByTimestamp:
            guard let topic = f["topic"], let q = f["queueId"].flatMap({ Int32($0) }) else {
                return .response(to: request, code: ResponseCode.systemError, remark: "the request needs topic and queueId")
            }
            let key = QueueKey(topic, q)
            switch request.code {
            case RequestCode.getMaxOffset: return .response(to: request, code: ResponseCode.success, extFields: ["offset": "\(store.maxOffset(key))"])
            case RequestCode.getMinOffset: return .response(to: request, code: ResponseCode.success, extFields: ["offset": "\(store.minOffset(key))"])
            case RequestCode.getEarliestMsgStoreTime:
                let t = storeTime(key, store.minOffset(key)) ?? -1
                return .response(to: request, code: ResponseCode.success, extFields: ["timestamp": "\(t)"])
            default:
                let ts = f["timestamp"].flatMap { Int64($0) } ?? 0
                return .response(to: request, code: ResponseCode.success, extFields: ["offset": "\(searchOffset(key, timestamp: ts))"])
            }
        case RequestCode.queryMessage:
            guard let topic = f["topic"], let key = f["key"] else {
                return .response(to: request, code: ResponseCode.systemError, remark: "QUERY_MESSAGE needs topic and key")
            }
            var maxNum = max(1, min(f["maxNum"].flatMap { Int($0) } ?? 32, 64))
            if f["_UNIQUE_KEY_QUERY"] == "true" { maxNum = 32 }
            let found = store.queryByKey(topic: topic, key: key, maxNum: maxNum, begin: f["beginTimestamp"].flatMap { Int64($0) } ?? 0,
                                         end: f["endTimestamp"].flatMap { Int64($0) } ?? Int64.max)
            let last = store.options.keyIndex?.lastUpdate ?? (timestamp: 0, phyOffset: 0)
            let fields: ExtFields = ["indexLastUpdateTimestamp": "\(last.timestamp)", "indexLastUpdatePhyoffset": "\(last.phyOffset)"]
            guard !found.isEmpty else {
                return .response(to: request, code: ResponseCode.queryNotFound, remark: "can not find message, maybe time range not correct", extFields: fields)
            }
            var body = ByteBuffer()
            for r in found { body.writeBytes(r) }
            return .response(to: request, code: ResponseCode.success, extFields: fields, body: body)
        case RequestCode.updateAndCreateSubscriptionGroup:
            var b = request.body ?? ByteBuffer()
            guard let o = (try? JSONSerialization.jsonObject(with: Data(b.readBytes(length: b.readableBytes) ?? []))) as? [String: Any],
                  let g = SubscriptionGroupConfig(json: o), SubscriptionGroupConfig.validName(g.groupName) else {
                return .response(to: request, code: ResponseCode.systemError, remark: "the body is not a SubscriptionGroupConfig with a valid groupName")
            }
            return await metadataWrite(request, .groupUpsert(g))
        case RequestCode.getAllSubscriptionGroupConfig:
            var body = ByteBuffer()
            body.writeString(store.groupsWrapper)
            return .response(to: request, code: ResponseCode.success, body: body)
        case RequestCode.deleteSubscriptionGroup:
            guard let name = f["groupName"] else { return .response(to: request, code: ResponseCode.systemError, remark: "DELETE_SUBSCRIPTIONGROUP needs groupName") }
            return await metadataWrite(request, .groupDelete(name))
        case RequestCode.getTopicStatsInfo:
            guard let topic = f["topic"], let config = store.topic(topic) else {
                return .response(to: request, code: ResponseCode.topicNotExist, remark: "topic[\(f["topic"] ?? "")] not exist")
            }
            var entries: [(JSONText, JSONText)] = []
            for q in 0..<Int32(clamping: config.writeQueueNums) {
                let key = QueueKey(topic, q)
                let (lo, hi) = (store.minOffset(key), store.maxOffset(key))
                let last = hi > 0 ? storeTime(key, hi - 1) ?? 0 : 0
                entries.append((messageQueueJSON(topic, q), .object(["lastUpdateTimestamp": .int(last), "maxOffset": .int(hi), "minOffset": .int(lo)])))
            }
            var body = ByteBuffer()
            body.writeString("{\"offsetTable\":" + Self.objectKeyMap(entries) + "}")
            return .response(to: request, code: ResponseCode.success, body: body)
        case RequestCode.getConsumeStats:
            guard let group = f["consumerGroup"] else { return .response(to: request, code: ResponseCode.systemError, remark: "GET_CONSUME_STATS needs consumerGroup") }
            let offsets = store.consumerOffsets(group: group)
            let topics = (f["topic"].map { $0.isEmpty ? nil : [$0] } ?? nil) ?? offsets.keys.sorted()
            var entries: [(JSONText, JSONText)] = []
            for topic in topics {
                guard let config = store.topic(topic) else { continue }
                for q in 0..<Int32(clamping: config.readQueueNums) {
                    let key = QueueKey(topic, q)
                    let consumer = max(0, offset(group: group, key) ?? 0)
                    let last = consumer > 0 ? storeTime(key, consumer - 1) ?? 0 : 0
                    entries.append((messageQueueJSON(topic, q), .object([
                        "brokerOffset": .int(store.maxOffset(key)), "consumerOffset": .int(consumer), "lastTimestamp": .int(last)])))
                }
            }
            var body = ByteBuffer()
            body.writeString("{\"consumeTps\":0.0,\"offsetTable\":" + Self.objectKeyMap(entries) + "}")
            return .response(to: request, code: ResponseCode.success, body: body)
        case RequestCode.getConsumerConnectionList:
            let group = f["consumerGroup"] ?? ""
            let clients = consumers.clients(group: group)
            guard let first = clients.first else {
                return .response(to: request, code: 206, remark: "the consumer group[\(group)] not online")
            }
            var subs: [String: JSONText] = [:]
            for c in clients {
                for (topic, sub) in c.subscriptions {
                    subs[topic] = .object(["classFilterMode": .bool(false), "codeSet": .array((sub.codes ?? []).sorted().map { .int($0) }),
                                           "expressionType": .string("TAG"), "subString": .string(sub.expression), "subVersion": .int(sub.version),
                                           "tagsSet": .array([]), "topic": .string(topic)])
                }
            }
            let text = JSONText.object([
                "connectionSet": .array(clients.sorted { $0.clientId < $1.clientId }.map { c in
                    .object(["clientAddr": .string(c.address), "clientId": .string(c.clientId), "language": .string(c.language), "version": .int(Int64(c.version))])
                }),
                "consumeFromWhere": .string(first.consumeFromWhere), "consumeType": .string(first.consumeType),
                "messageModel": .string(first.messageModel), "subscriptionTable": .object(subs),
            ]).serialized
            var body = ByteBuffer()
            body.writeString(text)
            return .response(to: request, code: ResponseCode.success, body: body)
        case RequestCode.getBrokerConfig:
            var body = ByteBuffer()
            body.writeString(options.configuration.map { "\($0.0)=\($0.1)\n" }.joined())
            return .response(to: request, code: ResponseCode.success, extFields: ["version": store.topics.dataVersionJSON], body: body)
        case RequestCode.viewMessageById:
            guard let o = f["offset"].flatMap({ Int64($0) }), let record = store.record(atPhysicalOffset: o) else {
                return .response(to: request, code: ResponseCode.systemError, remark: "can not find message by the offset, \(f["offset"] ?? "")")
            }
            var body = ByteBuffer()
            body.writeBytes(record)
            return .response(to: request, code: ResponseCode.success, body: body)
        default:
            return .response(to: request, code: ResponseCode.requestCodeNotSupported, remark: "request type \(request.code) not supported")
        }
    }

    /// A MessageQueue as fastjson writes it.
    func messageQueueJSON(_ topic: String, _ queueId: Int32) -> JSONText {
        .object(["brokerName": .string(options.brokerName), "queueId": .int(Int64(queueId)), "topic": .string(topic)])
    }

    /// fastjson's map with object keys (rocketmq-protocol.md §2.5 item 2), which the Java admin tools
    /// parse: `{{"brokerName":...}:{...},...}`. Not standard JSON, by design.
    static func objectKeyMap(_ entries: [(JSONText, JSONText)]) -> String {
        "{" + entries.map { $0.0.serialized + ":" + $0.1.serialized }.joined(separator: ",") + "}"
    }

    /// A metadata change proposed on the leader (forwarded from a follower), answered once applied.
    func metadataWrite(_ request: RemotingCommand, _ change: MetadataChange) async -> RemotingCommand? {
        do {
            _ = try await writes.append(change, timeout: options.sendTimeout)
            return .response(to: request, code: ResponseCode.success)
        } catch {
            switch error {
            case .notLeader, .notReady: return await forwardOrRefuse(request, error)
            default: return .response(to: request, code: ResponseCode.systemError, remark: "\(error)")
            }
        }
    }

    static func systemTopics(_ o: Options) -> Set<String> {
        ["TBW102", "SCHEDULE_TOPIC_XXXX", "BenchmarkTest", "RMQ_SYS_TRANS_HALF_TOPIC", "RMQ_SYS_TRACE_TOPIC", "RMQ_SYS_TRANS_OP_HALF_TOPIC",
         "TRANS_CHECK_MAX_TIME_TOPIC", "SELF_TEST_TOPIC", "OFFSET_MOVED_EVENT", o.clusterName, o.brokerName, o.clusterName + "_REPLY_TOPIC"]
    }

    /// The store timestamp of the message at a queue offset.
    func storeTime(_ key: QueueKey, _ offset: Int64) -> Int64? {
        guard let e = try? store.queue(key)?.read(from: UInt64(max(0, offset)), maxCount: 1).first,
              let bytes = store.record(atPhysicalOffset: e.commitLogOffset),
              let r = try? bytes.withUnsafeBytes({ try MessageRecord.decode($0, verifyBodyCRC: false) }) else { return nil }
        return r.storeTimestamp
    }

    /// SEARCH_OFFSET_BY_TIMESTAMP: the first offset whose message was stored at or after `timestamp`
    /// (the queue's end when none was).
    func searchOffset(_ key: QueueKey, timestamp: Int64) -> Int64 {
        var lo = store.minOffset(key), hi = store.maxOffset(key)
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if (storeTime(key, mid) ?? Int64.max) >= timestamp { hi = mid } else { lo = mid + 1 }
        }
        return lo
    }

    /// Whether the leader should write a metadata snapshot: none in the log yet, or the log moved to
    /// another segment since the latest (so retention, which keeps the latest, can always delete
    /// all but about one segment before it).
    func snapshotDue() -> Bool {
        guard writes.isCaughtUpLeader else { return false }
        guard let at = store.latestSnapshotPosition else { return true }
        let segment = store.log.options.segmentBytes
        return store.log.writePosition.rawValue / segment != at / segment
    }

    /// Flushes offsets and writes snapshots on the leader, and expires silent clients, until cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { tasks in
            // The schedule service on its own: a backlog of due messages must not hold up offsets,
            // snapshots or client expiry.
            tasks.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(100))
                    if Task.isCancelled { break }
                    await self.deliverDueMessages()
                }
            }
            tasks.addTask { await self.housekeeping() }
            await tasks.waitForAll()
        }
        if writes.isLeader { await flushOffsets() }
    }

    private func housekeeping() async {
        var lastExpiry = ContinuousClock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: options.offsetFlushInterval)
            // Stopping: run() writes the last offsets; nothing else is written (a classic master
            // hands its log's end to its slaves after this).
            if Task.isCancelled { break }
            if writes.isLeader { await flushOffsets() } else if !writes.keepsLocalOffsets { offsetTables.withLock { $0.pending.removeAll() } }
            if snapshotDue() {
                do {
                    _ = try await writes.appendSnapshot(timeout: .seconds(3))
                } catch {
                    if case .tooLarge = error {
                        logger.error("the metadata snapshot is over the entry limit: retention is held back at the last snapshot until there are fewer topics, groups or queues", metadata: ["error": "\(error)"])
                    } else {
                        logger.warning("writing a metadata snapshot failed; retried", metadata: ["error": "\(error)"])
                    }
                }
            }
            if ContinuousClock.now - lastExpiry >= .seconds(10) {
                lastExpiry = .now
                consumers.expire()
            }
        }
    }
}

/// A lock for async code: `acquire` waits (without a thread) until `release` hands it over, in order.
final class AsyncGate: Sendable {
    private let state = Mutex<(busy: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func acquire() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if !s.busy { s.busy = true; return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty { s.busy = false; return nil }
            return s.waiters.removeFirst()
        }
        next?.resume()
    }
}

/// A peer's address as a record's host, straight from the socket address (every send has one; the
/// string round trip cost two allocations and a split per message). IPv6 peers keep what the text
/// form gave before: the loopback address with port 0.
func messageHost(_ address: SocketAddress) -> MessageHost {
    if case .v4(let a) = address {
        let ip = UInt32(bigEndian: a.address.sin_addr.s_addr)
        return .v4(address: (UInt8(truncatingIfNeeded: ip >> 24), UInt8(truncatingIfNeeded: ip >> 16), UInt8(truncatingIfNeeded: ip >> 8), UInt8(truncatingIfNeeded: ip)),
                   port: UInt32(UInt16(bigEndian: a.address.sin_port)))
    }
    return messageHost("\(address.ipAddress ?? "127.0.0.1"):\(address.port ?? 0)")
}

/// What a broker tells its metrics (mqbroker's /metrics) about the traffic it serves. Called on the
/// request path: implementations must be cheap and never block.
public protocol BrokerObserver: Sendable {
    /// A send stored and committed: its topic (the one the producer named), message count, stored
    /// bytes, and the time from handing it to the write path until it was committed.
    func stored(topic: String, messages: Int, bytes: Int, appendDuration: Duration)
    /// A pull answered: the messages and stored bytes it carried (0 when none), and the time spent
    /// serving it, a long poll's wait excluded (`suspended` says whether it waited).
    func served(topic: String, messages: Int, bytes: Int, duration: Duration, suspended: Bool)
}
