import Foundation
import LogFormat
import Logging
import NIOCore
import Remoting
import Synchronization

/// A message to send.
public struct OutgoingMessage: Sendable {
    public var topic: String
    public var body: [UInt8]
    public var tags: String?
    public var keys: [String]
    public var flag: Int32 = 0
    public var properties: [String: String] = [:]
    public init(topic: String, body: [UInt8], tags: String? = nil, keys: [String] = []) {
        self.topic = topic
        self.body = body
        self.tags = tags
        self.keys = keys
    }
}

/// What a broker answered to a send.
public struct SendResult: Sendable, Equatable {
    /// UNIQ_KEY, the client's id of the message (of each message of a batch).
    public var msgIds: [String]
    /// The broker's ids: store host and commitlog offset.
    public var offsetMsgIds: [String]
    public var queue: MessageQueue
    public var queueOffset: Int64
    public var brokerAddress: String
    /// SEND_OK, or a SYNC_MASTER's "stored on the master, not (yet) on a slave" (Java's SendStatus;
    /// the message is stored either way).
    public var status: SendStatus = .sendOK
}

/// Java's SendStatus.
public enum SendStatus: String, Sendable, Equatable {
    case sendOK = "SEND_OK"
    case flushDiskTimeout = "FLUSH_DISK_TIMEOUT"
    case flushSlaveTimeout = "FLUSH_SLAVE_TIMEOUT"
    case slaveNotAvailable = "SLAVE_NOT_AVAILABLE"

    init?(code: Int32) {
        switch code {
        case ResponseCode.success: self = .sendOK
        case ResponseCode.flushDiskTimeout: self = .flushDiskTimeout
        case ResponseCode.flushSlaveTimeout: self = .flushSlaveTimeout
        case ResponseCode.slaveNotAvailable: self = .slaveNotAvailable
        default: return nil
        }
    }
}

/// A RocketMQ producer: route lookup through the nameservers, round-robin queue selection, SEND_MESSAGE_V2
/// (or SEND_BATCH_MESSAGE), and fast failover: on a connection failure or an answer that says "not
/// here, retry" (SERVICE_NOT_AVAILABLE, SYSTEM_BUSY, SYSTEM_ERROR, TOPIC_NOT_EXIST) it re-reads the
/// route at once and tries again until its deadline, so it follows a new Raft leader as soon as the
/// nameservers know it (stock clients wait for their 30 s route refresh).
public final class Producer: Sendable {
    public struct Options: Sendable {
        public var group = "DEFAULT_PRODUCER"
        /// A send gives up after this long, retries included.
        public var sendTimeout: Duration = .seconds(10)
        /// Each attempt's RPC timeout.
        public var attemptTimeoutMs: Int64 = 3_000
        public var defaultTopicQueueNums = 4
        /// Bodies larger than this are sent zlib-compressed (sysFlag bit 0), as Java's
        /// compressMsgBodyOverHowmuch; 0 turns it off. Consumers inflate them.
        public var compressBodyOver = 4_096
        public init() {}
    }

    public let options: Options
    public let routes: RouteCache
    private let remoting: RemotingClient
    private let logger: Logger
    private let counter = Mutex<UInt64>(0)
    /// The current month's start and end (UNIQ_KEY times count from the start), computed once a month.
    private let month = Mutex<MonthBox>(MonthBox())
    struct MonthBox { var value: (start: Date, end: Date)? }
    private let uniquePrefix: String

    public init(nameServers: [String], remoting: RemotingClient, logger: Logger, options: Options = Options()) {
        self.options = options
        self.remoting = remoting
        self.logger = logger
        self.routes = RouteCache(nameServers: nameServers, remoting: remoting)
        let pid = UInt16(truncatingIfNeeded: getpid())
        // Where Java has its class loader's hash: any 32 bits that tell two producers of one process apart.
        uniquePrefix = String(format: "7F000001%04X%08X", UInt32(pid), UInt32.random(in: 0...UInt32.max))
    }

    /// A fresh UNIQ_KEY in Java's layout (MessageClientIDSetter): 32 upper-case hex digits, host 8,
    /// pid 4, a per-producer 8, milliseconds since the start of the month 8 (Java's tools read the
    /// time from there to bound a search by id), a counter 4.
    public func nextUniqueKey() -> String {
        let n = counter.withLock { c -> UInt64 in
            c &+= 1
            return c
        }
        let now = Date()
        let monthStart = month.withLock { m -> Date in
            if let m = m.value, now >= m.start, now < m.end { return m.start }
            var calendar = Calendar(identifier: .gregorian)
            calendar.timeZone = TimeZone.current
            let start = calendar.date(from: calendar.dateComponents([.year, .month], from: now)) ?? now
            let end = calendar.date(byAdding: .month, value: 1, to: start) ?? now.addingTimeInterval(86_400)
            m.value = (start, end)
            return start
        }
        let sinceMonth = UInt32(truncatingIfNeeded: Int64(now.timeIntervalSince(monthStart) * 1000))
        return uniquePrefix + Self.hex(UInt64(sinceMonth), digits: 8) + Self.hex(UInt64(UInt16(truncatingIfNeeded: n)), digits: 4)
    }

    /// `value` in `digits` upper-case hex digits (String(format:) costs a few microseconds a call).
    static func hex(_ value: UInt64, digits: Int) -> String {
        let table = Array("0123456789ABCDEF".utf8)
        return String(unsafeUninitializedCapacity: digits) { out in
            for k in 0..<digits { out[k] = table[Int((value >> UInt64(4 * (digits - 1 - k))) & 0xF)] }
            return digits
        }
    }

    static func propertyString(_ pairs: [(String, String)]) -> String {
        pairs.map { "\($0.0)\u{1}\($0.1)" }.joined(separator: "\u{2}")
    }

    func properties(of m: OutgoingMessage, uniqueKey: String, wait: Bool) -> String {
        var pairs: [(String, String)] = []
        if let t = m.tags { pairs.append(("TAGS", t)) }
        if !m.keys.isEmpty { pairs.append(("KEYS", m.keys.joined(separator: " "))) }
        if wait { pairs.append(("WAIT", "true")) }
        pairs.append(("UNIQ_KEY", uniqueKey))
        for (k, v) in m.properties.sorted(by: { $0.key < $1.key }) { pairs.append((k, v)) }
        return Self.propertyString(pairs)
    }

    /// Sends one message; the answer comes once the group committed it.
    public func send(_ message: OutgoingMessage) async throws -> SendResult {
        let key = nextUniqueKey()
        let props = properties(of: message, uniqueKey: key, wait: true)
        var body = ByteBuffer()
        var sysFlag: Int32 = 0
        if options.compressBodyOver > 0, message.body.count > options.compressBodyOver, let packed = Zlib.deflate(message.body) {
            body.writeBytes(packed)
            sysFlag = 0x1
        } else {
            body.writeBytes(message.body)
        }
        return try await sendWithRetries(topic: message.topic, ids: [key]) { queue in
            var f = self.header(topic: message.topic, queue: queue, flag: message.flag, batch: false)
            f["f"] = "\(sysFlag)"
            f["i"] = props
            return .request(code: RequestCode.sendMessageV2, opaque: 0, extFields: f, body: body)
        }
    }

    /// Sends one message one-way: no answer, no retry, no failover (RocketMQ's sendOneway, for logs
    /// and metrics that can lose a message). Throws only when no broker could be reached.
    public func sendOneway(_ message: OutgoingMessage) async throws {
        let key = nextUniqueKey()
        var f: ExtFields = [:]
        let route: TopicRoute
        do { route = try await routes.route(message.topic) } catch { route = try await routes.route("TBW102") }
        let queues = route.writeQueues(message.topic).isEmpty ? route.writeQueues("TBW102") : route.writeQueues(message.topic)
        guard !queues.isEmpty else { throw ClientError("the route of \(message.topic) has no writable queue") }
        let n = counter.withLock { $0 }
        let queue = queues[Int(n % UInt64(queues.count))]
        guard let address = route.masterAddress(queue.brokerName) else { throw ClientError("no master of \(queue.brokerName) in the route") }
        f = header(topic: message.topic, queue: queue, flag: message.flag, batch: false)
        f["i"] = properties(of: message, uniqueKey: key, wait: false)
        var body = ByteBuffer()
        body.writeBytes(message.body)
        try await remoting.oneway(address, .request(code: RequestCode.sendMessageV2, opaque: 0, extFields: f, body: body, oneway: true))
    }

    /// Sends messages of one topic as one batch (one entry in the log, one queue).
    public func send(batch messages: [OutgoingMessage]) async throws -> SendResult {
        guard let topic = messages.first?.topic, messages.allSatisfy({ $0.topic == topic }) else {
            throw ClientError("a batch holds messages of one topic")
        }
        var keys: [String] = []
        var body: [UInt8] = []
        for m in messages {
            let k = nextUniqueKey()
            keys.append(k)
            let props = Array(properties(of: m, uniqueKey: k, wait: false).utf8)
            guard props.count <= Int(Int16.max) else { throw ClientError("a message's properties are \(props.count) bytes, over 32767") }
            let total = 22 + m.body.count + props.count
            for v in [UInt32(total), 0, 0, UInt32(bitPattern: m.flag), UInt32(m.body.count)] {
                withUnsafeBytes(of: v.bigEndian) { body.append(contentsOf: $0) }
            }
            body.append(contentsOf: m.body)
            withUnsafeBytes(of: UInt16(props.count).bigEndian) { body.append(contentsOf: $0) }
            body.append(contentsOf: props)
        }
        var buffer = ByteBuffer()
        buffer.writeBytes(body)
        return try await sendWithRetries(topic: topic, ids: keys) { queue in
            var f = self.header(topic: topic, queue: queue, flag: 0, batch: true)
            f["i"] = Self.propertyString([("WAIT", "true")])
            return .request(code: RequestCode.sendBatchMessage, opaque: 0, extFields: f, body: buffer)
        }
    }

    func header(topic: String, queue: MessageQueue, flag: Int32, batch: Bool) -> ExtFields {
        ["a": options.group, "b": topic, "c": "TBW102", "d": "\(options.defaultTopicQueueNums)", "e": "\(queue.queueId)", "f": "0",
         "g": "\(Int64(Date().timeIntervalSince1970 * 1000))", "h": "\(flag)", "j": "0", "k": "false", "m": batch ? "true" : "false"]
    }

    /// Codes after which another attempt may succeed (RocketMQ's retryResponseCodes, plus the Raft
    /// group's "no leader yet").
    static let retryCodes: Set<Int32> = [ResponseCode.systemError, ResponseCode.systemBusy, ResponseCode.serviceNotAvailable,
                                         ResponseCode.topicNotExist, ResponseCode.noPermission]

    private func sendWithRetries(topic: String, ids: [String], build: (MessageQueue) -> RemotingCommand) async throws -> SendResult {
        let deadline = ContinuousClock.now + options.sendTimeout
        var attempt = 0
        var last = ClientError("no attempt made")
        while ContinuousClock.now < deadline {
            attempt += 1
            let route: TopicRoute
            do {
                route = attempt == 1 ? try await routes.route(topic) : try await routes.refresh(topic)
            } catch let e as ClientError where e.code == ResponseCode.topicNotExist {
                // Not created yet: send through the default topic's route; the broker creates it.
                route = try await routes.route("TBW102")
            } catch {
                last = ClientError("\(error)")
                try await Task.sleep(for: .milliseconds(min(20 * attempt, 200)))
                continue
            }
            let queues = route.writeQueues(topic).isEmpty ? route.writeQueues("TBW102").map { MessageQueue(topic: topic, brokerName: $0.brokerName, queueId: $0.queueId) } : route.writeQueues(topic)
            guard !queues.isEmpty else {
                last = ClientError("the route of \(topic) has no writable queue")
                try await Task.sleep(for: .milliseconds(min(20 * attempt, 200)))
                continue
            }
            let n = counter.withLock { $0 }
            let queue = queues[Int((n &+ UInt64(attempt)) % UInt64(queues.count))]
            guard let address = route.masterAddress(queue.brokerName) else {
                last = ClientError("no master of \(queue.brokerName) in the route")
                try await Task.sleep(for: .milliseconds(min(20 * attempt, 200)))
                continue
            }
            do {
                let answer = try await remoting.request(address, build(queue), timeoutMilliseconds: options.attemptTimeoutMs)
                if let status = SendStatus(code: answer.code) {
                    let f = answer.extFields.dictionary
                    let q = MessageQueue(topic: topic, brokerName: queue.brokerName, queueId: f["queueId"].flatMap { Int32($0) } ?? queue.queueId)
                    return SendResult(msgIds: ids, offsetMsgIds: (f["msgId"] ?? "").split(separator: ",").map(String.init), queue: q,
                                      queueOffset: f["queueOffset"].flatMap { Int64($0) } ?? -1, brokerAddress: address, status: status)
                }
                last = ClientError("\(address) answered \(answer.code): \(answer.remark ?? "")", code: answer.code)
                guard Self.retryCodes.contains(answer.code) else { throw last }
            } catch let e as ClientError {
                throw e
            } catch {
                last = ClientError("\(address): \(error)")
            }
            try await Task.sleep(for: .milliseconds(min(10 * attempt, 100)))
        }
        throw last
    }
}
