import Foundation
import LogFormat
import LogStore
import Logging
import RaftCore
import Remoting
import Replication
import Synchronization

/// One queue of one topic.
public struct QueueKey: Hashable, Sendable, CustomStringConvertible {
    public var topic: String
    public var queueId: Int32
    public init(_ topic: String, _ queueId: Int32) {
        self.topic = topic
        self.queueId = queueId
    }
    public var description: String { "\(topic)@\(queueId)" }
}

/// The broker's view of the committed log: consume queues, the applied metadata (topics, consumer
/// offsets), and the long-polling pulls waiting for messages.
///
/// Built only from committed entries, in log order (`dispatch(upTo:)`, called by the Raft driver
/// with every batch of newly committed entries, so the driver's applied index is this store's
/// dispatched index and retention never deletes what was not dispatched). A checkpoint
/// (`<storePathRootDir>/raft/dispatch.json`: the last dispatched index, where it ends in the log, and
/// the metadata at that point) is written about once a second after the consume queues are flushed;
/// on start the consume queues are cut back to it and dispatch continues from there. Without a
/// usable checkpoint the consume queues are rebuilt from the log's first entry.
public final class MessageStore: Sendable {
    public struct Options: Sendable {
        public var rootDirectory: String
        /// mappedFileSizeConsumeQueue (bytes, a multiple of 20).
        public var consumeQueueFileBytes: UInt64 = 300_000 * 20
        /// Entries a consume queue keeps in memory before it writes them (ConsumeQueue.writeBehindEntries).
        public var consumeQueueWriteBehind = ConsumeQueue.writeBehindEntries
        /// storePathConsumeQueue (default `<rootDirectory>/consumequeue`).
        public var consumeQueueDirectory: String?
        /// The key index (messageIndexEnable); nil: none.
        public var keyIndex: KeyIndex?
        /// The largest record VIEW_MESSAGE_BY_ID and friends read (maxMessageSize + headers).
        public var recordBytesMax = 4 << 20 + 64 << 10
        /// messageDelayLevel: the tags code of a delayed message is when it is due.
        public var delayLevels = DelayLevels("1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h")
        /// The topics a fresh broker starts with (TBW102 and the system topics).
        public var initialTopics: TopicConfigTable
        /// How often `run` writes the dispatch checkpoint.
        public var checkpointInterval: Duration = .seconds(1)
        public init(rootDirectory: String, initialTopics: TopicConfigTable) {
            self.rootDirectory = rootDirectory
            self.initialTopics = initialTopics
        }
    }

    struct PullWaiter {
        var id: UInt64
        var offset: UInt64
        var deadline: ContinuousClock.Instant
        var continuation: CheckedContinuation<Void, Never>
    }

    struct State {
        var queues: [QueueKey: ConsumeQueue] = [:]
        var topics: TopicConfigTable
        var offsets: [String: [Int32: Int64]] = [:]
        var groups: [String: SubscriptionGroupConfig] = [:]
        var groupsVersion = DataVersion(timestamp: 0, counter: 0)
        /// Store index of the last dispatched entry (firstIndex - 1 before the first).
        var dispatched: Int64
        /// Position just past it.
        var dispatchedEnd: UInt64
        var pullWaiters: [QueueKey: [PullWaiter]] = [:]
        var nextWaiterId: UInt64 = 0
        /// When `run` wakes next, as of its last pass (nil before its first and after its end): a
        /// pull due earlier rings `waiterBell` (while `run` is awake, at worst an extra pass).
        var waiterWake: ContinuousClock.Instant?
        /// `run` has ended: nothing would answer a pull held from now on, so none is held.
        var sweepEnded = false
        var checkpointed: Int64 = -2
        var metadataChanged = false
        /// Next offsets of queues this member holds no entry of (their messages are all before the
        /// log's first entry), from the latest metadata snapshot.
        var queueBases: [QueueKey: Int64] = [:]
        /// First offsets whose message the log still holds, where retention passed a queue's min
        /// (consume-queue files go whole; RocketMQ's correctMinOffset).
        var minCorrections: [QueueKey: Int64] = [:]
        /// Key-index failures since the last one logged (an index is a cache: they never stop dispatch).
        var indexFailures = 0
        /// Store index and position of the latest metadata snapshot dispatched.
        var latestSnapshot: (index: Int64, position: UInt64)?
    }

    public let options: Options
    public let log: LogStore
    private let logger: Logger
    private let state: Mutex<State>
    private let topicsChangedBell = Mutex<Doorbell?>(nil)
    /// Wakes `run` for a pull whose deadline comes before its next wake.
    let waiterBell = Doorbell()
    /// Held by a checkpoint and by a log reset: a checkpoint taken across a reset would describe
    /// consume queues the reset dropped.
    private let persisting = Mutex(0)

    let consumeQueueDirectory: String
    let checkpointPath: String

    public init(options: Options, log: LogStore, logger: Logger) throws {
        self.options = options
        self.log = log
        self.logger = logger
        let consumeQueueDirectory = options.consumeQueueDirectory ?? options.rootDirectory + "/consumequeue"
        let checkpointPath = options.rootDirectory + "/raft/dispatch.json"
        self.consumeQueueDirectory = consumeQueueDirectory
        self.checkpointPath = checkpointPath
        let first = Int64(log.firstIndex.rawValue)
        var s = State(topics: options.initialTopics, dispatched: first - 1, dispatchedEnd: log.firstPosition.rawValue)
        let fm = FileManager.default
        try fm.createDirectory(atPath: options.rootDirectory + "/raft", withIntermediateDirectories: true)
        let checkpoint = Self.loadCheckpoint(checkpointPath, log: log, logger: logger)
        if checkpoint == nil {
            if fm.fileExists(atPath: consumeQueueDirectory) { try fm.removeItem(atPath: consumeQueueDirectory) }
            options.keyIndex?.removeAll()
        }
        try fm.createDirectory(atPath: consumeQueueDirectory, withIntermediateDirectories: true)
        if let c = checkpoint {
            s.dispatched = c.index
            s.dispatchedEnd = c.end
            for t in c.topics.values { s.topics.upsert(t, nowMs: Self.nowMs) }
            s.offsets = c.offsets
            s.queueBases = c.queueBases
            s.latestSnapshot = c.latestSnapshot
            s.groups = c.groups
        }
        // Open what is on disk and cut it back to the checkpoint.
        for topic in (try? fm.contentsOfDirectory(atPath: consumeQueueDirectory)) ?? [] {
            for q in (try? fm.contentsOfDirectory(atPath: consumeQueueDirectory + "/" + topic)) ?? [] {
                guard let id = Int32(q) else { continue }
                let cq = try ConsumeQueue(directory: "\(consumeQueueDirectory)/\(topic)/\(q)", fileBytes: options.consumeQueueFileBytes, writeBehind: options.consumeQueueWriteBehind)
                try cq.truncate(fromCommitLogOffset: Int64(s.dispatchedEnd))
                s.queues[QueueKey(topic, id)] = cq
            }
        }
        s.checkpointed = s.dispatched
        state = Mutex(s)
        logger.info("message store opened", metadata: [
            "dispatchedIndex": "\(s.dispatched)", "queues": "\(s.queues.count)", "topics": "\(s.topics.topics.count)",
            "from": "\(checkpoint == nil ? "the log's first entry (no usable checkpoint)" : "checkpoint")"])
    }

    static var nowMs: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    // MARK: - Views

    /// Store index of the last dispatched entry.
    public var dispatchedIndex: Int64 { state.withLock { $0.dispatched } }
    /// Where the last dispatched entry ends in the log.
    var dispatchedEnd: UInt64 { state.withLock { $0.dispatchedEnd } }
    public var topics: TopicConfigTable { state.withLock { $0.topics } }
    public func topic(_ name: String) -> TopicConfig? { state.withLock { $0.topics.topics[name] } }
    public func group(_ name: String) -> SubscriptionGroupConfig? { state.withLock { $0.groups[name] } }
    /// GET_ALL_SUBSCRIPTIONGROUP_CONFIG's body and subscriptionGroup.json.
    public var groupsWrapper: String {
        state.withLock { s in
            JSONText.object(["dataVersion": s.groupsVersion.json, "subscriptionGroupTable": .object(s.groups.mapValues(\.json))]).serialized
        }
    }

    /// Messages dispatch could not put every key of into the key index since the start (each is
    /// logged as it happens, once per 10,000); they stay consumable.
    public var keyIndexFailures: Int { state.withLock { $0.indexFailures } }

    /// Next offset to be written in the queue (0 for a queue never written).
    public func maxOffset(_ key: QueueKey) -> Int64 {
        state.withLock { s in max(s.queues[key].map { Int64($0.maxOffset) } ?? 0, s.queueBases[key] ?? 0) }
    }
    public func minOffset(_ key: QueueKey) -> Int64 {
        state.withLock { s in
            guard let q = s.queues[key], q.maxOffset > q.minOffset else { return s.queueBases[key] ?? s.queues[key].map { Int64($0.minOffset) } ?? 0 }
            return min(max(Int64(q.minOffset), s.minCorrections[key] ?? 0), Int64(q.maxOffset))
        }
    }

    /// Store index of the latest metadata snapshot dispatched (retention keeps it).
    public var latestSnapshotIndex: Int64? { state.withLock { $0.latestSnapshot?.index } }
    public var latestSnapshotPosition: UInt64? { state.withLock { $0.latestSnapshot?.position } }

    /// The metadata as this member applied it, with every queue's next offset (`numbered` overrides
    /// the consume queues' ends for queues the leader numbered past what was dispatched).
    public func snapshot(numbered: [QueueKey: Int64]) -> MetadataSnapshot {
        state.withLock { s in
            var ends: [String: [Int32: Int64]] = [:]
            for (k, q) in s.queues { ends[k.topic, default: [:]][k.queueId] = Int64(q.maxOffset) }
            for (k, b) in s.queueBases where (ends[k.topic]?[k.queueId] ?? -1) < b { ends[k.topic, default: [:]][k.queueId] = b }
            for (k, n) in numbered { ends[k.topic, default: [:]][k.queueId] = n }
            return MetadataSnapshot(topics: s.topics.topics, offsets: s.offsets, queueEnds: ends, groups: s.groups)
        }
    }
    func queue(_ key: QueueKey) -> ConsumeQueue? { state.withLock { $0.queues[key] } }

    /// The committed offset of a consumer group on a queue, if any.
    public func consumerOffset(group: String, _ key: QueueKey) -> Int64? {
        state.withLock { $0.offsets["\(key.topic)@\(group)"]?[key.queueId] }
    }

    /// Every committed offset of a group: topic -> queue -> offset.
    public func consumerOffsets(group: String) -> [String: [Int32: Int64]] {
        state.withLock { s in
            var out: [String: [Int32: Int64]] = [:]
            for (k, v) in s.offsets where k.hasSuffix("@" + group) { out[String(k.dropLast(group.count + 1))] = v }
            return out
        }
    }

    public var queueKeys: [QueueKey] { state.withLock { Array($0.queues.keys) } }

    // MARK: - Dispatch

    /// Dispatches every committed entry up to store index `upTo`, in order. Throws on a storage
    /// failure (the node stops).
    public func dispatch(upTo: Int64) throws {
        while true {
            let next = state.withLock { $0.dispatched } + 1
            guard next <= upTo else { return }
            let entries = try log.read(from: LogIndex(UInt64(next)), maxBytes: 4 << 20)
            guard !entries.isEmpty else { return }
            try dispatch(entries.compactMap { Int64($0.index.rawValue) <= upTo ? CommittedEntry($0) : nil })
        }
    }

    /// A committed entry the caller already holds, with where its header sits in the log.
    public struct CommittedEntry: Sendable {
        /// The store index.
        public var index: Int64
        public var position: UInt64
        /// The body as written, or as proposed before the physical-offset patch: dispatch reads no
        /// physical offset from a record (it has the position).
        public var body: [UInt8]
        public init(index: Int64, position: UInt64, body: [UInt8]) {
            self.index = index
            self.position = position
            self.body = body
        }
        init(_ e: LogEntry) {
            self.init(index: Int64(e.index.rawValue), position: e.position.rawValue, body: e.body)
        }
        /// Where the entry ends in the log (header and body).
        var end: UInt64 { position + UInt64(EntryHeader.byteCount + body.count) }
    }

    /// Dispatches committed entries the caller holds, in order, without reading them back from the
    /// log (the Raft driver's apply step, for what it wrote lately). Entries dispatched already are
    /// skipped; if they do not follow the last dispatched entry, or skip an index, dispatch reads
    /// the log up to the last of them instead. Throws on a storage failure (the node stops).
    public func dispatch(committed: [CommittedEntry]) throws {
        guard let last = committed.last else { return }
        let done = state.withLock { $0.dispatched }
        let fresh = committed.drop { $0.index <= done }
        guard !fresh.isEmpty else { return }
        var expected = done + 1
        for e in fresh {
            guard e.index == expected else { return try dispatch(upTo: last.index) }
            expected += 1
        }
        try dispatch(Array(fresh))
    }

    /// The Raft replica's apply step (`RaftReplica`'s `apply`): the entries this member wrote lately
    /// come with their positions and are dispatched as they are; others are read back from the log.
    /// `storeIndexOfEmptyLog` maps Raft indexes to store indexes (`RaftReplicaOptions`).
    public func apply(_ batch: CommittedEntries, storeIndexOfEmptyLog: UInt64) throws {
        guard let last = batch.entries.last else { return }
        func storeIndex(_ i: RaftCore.LogIndex) -> Int64 { Int64(i.rawValue) - 1 + Int64(storeIndexOfEmptyLog) }
        guard let positions = batch.positions else { return try dispatch(upTo: storeIndex(last.index)) }
        try dispatch(committed: zip(batch.entries, positions).map {
            CommittedEntry(index: storeIndex($0.index), position: $1.rawValue, body: $0.data)
        })
    }

    /// What dispatch reads of one record.
    private struct Dispatched {
        var topic: String
        var queueId: Int32
        var queueOffset: Int64
        var storeTimestamp: Int64
        /// The tags' hash code (0 without tags).
        var tagsCode: Int64
        /// DELAY, read on the delay topic only.
        var delay: String?
    }

    /// A message's consume-queue entry in a dispatch batch, chained to the next one for its queue.
    private struct Dispatching {
        var offset: UInt64
        var entry: ConsumeQueue.Entry
        var next: Int
    }

    private func dispatch(_ entries: [CommittedEntry]) throws {
        // The batch's consume-queue entries in temporary memory (on the stack for a small batch),
        // each queue's chained in log order, its first and last in `queues`: an array per queue
        // cost an allocation or more per queue per batch, about one per message with small
        // batches over many queues.
        var records = 0
        for e in entries where EntryBody.classify(e.body) == .messages {
            for _ in EntryBody.recordRanges(e.body) { records += 1 }
        }
        try withUnsafeTemporaryAllocation(of: Dispatching.self, capacity: max(records, 1)) { dispatching in
            try withUnsafeTemporaryAllocation(of: ConsumeQueue.Entry.self, capacity: max(records, 1)) { run in
                try dispatch(entries, into: dispatching, runs: run)
            }
        }
    }

    /// `dispatch`, with room for every message record of `entries` in `dispatching` and `run`.
    private func dispatch(_ entries: [CommittedEntry], into dispatching: UnsafeMutableBufferPointer<Dispatching>,
                          runs run: UnsafeMutableBufferPointer<ConsumeQueue.Entry>) throws {
        var count = 0
        var queues: [QueueKey: (first: Int, last: Int)] = [:]
        var changes: [(MetadataChange, CommittedEntry)] = []
        // Java hash codes of "topic#key" for each message's unique key and each of its KEYS (with a
        // key index): put in one call for the batch (one lock, one array).
        var keyed: [KeyIndex.Put] = []
        if options.keyIndex != nil { keyed.reserveCapacity(dispatching.count) }
        for e in entries {
            switch EntryBody.classify(e.body) {
            case .opaque: continue
            case .metadata:
                if let change = MetadataChange.decode(e.body) {
                    changes.append((change, e))
                } else {
                    logger.warning("skipping a metadata entry of an unknown kind or shape", metadata: ["index": "\(e.index)"])
                }
            case .messages:
                for r in EntryBody.recordRanges(e.body) {
                    // Read in place: the fields and the four properties dispatch uses, no body copy
                    // and no decoding of the other properties (this runs on every member for every
                    // message).
                    let record: Dispatched
                    let commitLogOffset = Int64(e.position) + Int64(EntryHeader.byteCount) + Int64(r.lowerBound)
                    do {
                        record = try e.body[r].withUnsafeBytes { bytes throws(LogFormatError) in
                            let routing = try MessageRecord.routing(bytes)
                            let text = UnsafeRawBufferPointer(rebasing: bytes[routing.properties])
                            let found = DispatchProperties(text)
                            func value(_ range: Range<Int>?) -> UnsafeRawBufferPointer? { range.map { UnsafeRawBufferPointer(rebasing: text[$0]) } }
                            let tagsCode = value(found.tags).flatMap { javaHashCode(utf8: $0) }.map(Int64.init) ?? 0
                            let delay = routing.topic == DelayLevels.topic ? value(found.delay).flatMap { String(validating: $0, as: UTF8.self) } : nil
                            if options.keyIndex != nil && (found.uniqueKey != nil || found.keys != nil) {
                                // Hashes of "topic#key" from the bytes, without building the strings.
                                func put(_ h: Int32) { keyed.append(KeyIndex.Put(keyHash: h, phyOffset: commitLogOffset, storeTimestamp: routing.storeTimestamp)) }
                                let prefix = javaHashCode("#", continuing: javaHashCode(routing.topic))
                                if let u = value(found.uniqueKey), let h = javaHashCode(utf8: u, continuing: prefix) { put(h) }
                                // KEYS is split at each space (empty pieces dropped), as RocketMQ splits it;
                                // text that is not UTF-8 is no KEYS at all, as for any property.
                                if let k = value(found.keys), k.allSatisfy({ $0 < 0x80 }) || String(validating: k, as: UTF8.self) != nil {
                                    for piece in k.split(separator: 0x20) {
                                        if let h = javaHashCode(utf8: UnsafeRawBufferPointer(rebasing: piece), continuing: prefix) { put(h) }
                                    }
                                }
                            }
                            return Dispatched(topic: routing.topic, queueId: routing.queueId, queueOffset: routing.queueOffset,
                                              storeTimestamp: routing.storeTimestamp, tagsCode: tagsCode, delay: delay)
                        }
                    } catch {
                        logger.warning("skipping a malformed message record", metadata: ["index": "\(e.index)", "error": "\(error)"])
                        continue
                    }
                    let key = QueueKey(record.topic, record.queueId)
                    var tags = record.tagsCode
                    if let level = record.delay.flatMap({ Int($0) }), level > 0 {
                        tags = options.delayLevels.due(level: level, storeTimestamp: record.storeTimestamp)
                    }
                    let entry = ConsumeQueue.Entry(commitLogOffset: commitLogOffset, size: Int32(r.count), tagsCode: tags)
                    let offset = UInt64(max(0, record.queueOffset))
                    // Every record counted above is one classify and recordRanges also find here.
                    let at = count
                    precondition(at < dispatching.count, "dispatch found more records than it counted")
                    dispatching.initializeElement(at: at, to: Dispatching(offset: offset, entry: entry, next: -1))
                    count += 1
                    // Not `queues[key, default:]`: its autoclosure cost two allocations per message.
                    if let last = queues[key]?.last {
                        dispatching[last].next = at
                        queues[key]!.last = at
                    } else {
                        queues[key] = (first: at, last: at)
                    }
                }
            }
        }
        if let index = options.keyIndex, !keyed.isEmpty {
            let (failed, error) = index.add(keyed)
            if let error {
                let n = state.withLock { s -> Int in
                    s.indexFailures += failed
                    return s.indexFailures
                }
                if n == failed || n / 10_000 != (n - failed) / 10_000 {
                    logger.error("the key index cannot be written; messages stay consumable but queryMsgByKey misses them", metadata: [
                        "error": "\(error)", "failures": "\(n)"])
                }
            }
        }
        // Each queue's entries in runs of consecutive offsets (a gap flushes the run before it).
        // Dispatching and ConsumeQueue.Entry are plain values: nothing to deinitialize.
        for (key, chain) in queues {
            var length = 0
            var start: UInt64 = 0
            var at = chain.first
            while at >= 0 {
                let d = dispatching[at]
                if length > 0 && d.offset != start + UInt64(length) {
                    try flushPending(key, start: start, UnsafeBufferPointer(rebasing: run[0..<length]))
                    length = 0
                }
                if length == 0 { start = d.offset }
                run.initializeElement(at: length, to: d.entry)
                length += 1
                at = d.next
            }
            if length > 0 { try flushPending(key, start: start, UnsafeBufferPointer(rebasing: run[0..<length])) }
        }
        let last = entries.last!
        var topicsChanged = false
        let wake = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            if !changes.isEmpty {
                let version = s.topics.dataVersion
                for (c, e) in changes { apply(c, at: e, to: &s) }
                topicsChanged = s.topics.dataVersion != version
            }
            s.dispatched = last.index
            s.dispatchedEnd = last.end
            var out: [CheckedContinuation<Void, Never>] = []
            for key in queues.keys {
                guard let waiters = s.pullWaiters.removeValue(forKey: key) else { continue }
                out.append(contentsOf: waiters.map(\.continuation))
            }
            return out
        }
        for c in wake { c.resume() }
        if topicsChanged { topicsChangedBell.withLock { $0 }?.ring() }
    }

    /// Rung (after dispatch applied it) whenever the topic table changes: the broker re-registers
    /// its topics with the nameservers at once. One bell; setting another replaces it.
    public func ringOnTopicChange(_ bell: Doorbell) { topicsChangedBell.withLock { $0 = bell } }

    private func flushPending(_ key: QueueKey, start first: UInt64, _ run: UnsafeBufferPointer<ConsumeQueue.Entry>) throws {
        let cq = try state.withLock { (s) throws -> ConsumeQueue in
            if let q = s.queues[key] { return q }
            let q = try ConsumeQueue(directory: "\(consumeQueueDirectory)/\(key.topic)/\(key.queueId)", fileBytes: options.consumeQueueFileBytes, writeBehind: options.consumeQueueWriteBehind)
            s.queues[key] = q
            return q
        }
        let max = cq.maxOffset
        var start = first
        var entries = run
        if start < max {
            // Already dispatched (a replay from an older checkpoint).
            let skip = Int(min(UInt64(entries.count), max - start))
            entries = UnsafeBufferPointer(rebasing: entries[skip...])
            start += UInt64(skip)
        }
        guard !entries.isEmpty else { return }
        if start > max && (max > 0 || cq.minOffset != 0) && max != cq.minOffset {
            logger.error("a gap in queue offsets: these messages are not consumable", metadata: [
                "queue": "\(key)", "queueEnds": "\(max)", "messageOffset": "\(start)"])
            return
        }
        try cq.append(entries, at: start)
    }

    private func apply(_ change: MetadataChange, at entry: CommittedEntry, to s: inout State) {
        s.metadataChanged = true
        switch change {
        case .snapshot(let snap):
            // The state as of the entry before: what this member applied already agrees with it,
            // unless it lost the log's prefix; either way it is now exactly the leader's.
            var topics = s.topics
            for name in topics.topics.keys where snap.topics[name] == nil { topics.remove(name, nowMs: Self.nowMs) }
            for t in snap.topics.values where topics.topics[t.topicName] != t { topics.upsert(t, nowMs: Self.nowMs) }
            s.topics = topics
            s.offsets = snap.offsets
            s.groups = snap.groups
            for (topic, queues) in snap.queueEnds {
                for (id, end) in queues {
                    let key = QueueKey(topic, id)
                    let have = s.queues[key].map { Int64($0.maxOffset) } ?? 0
                    if have < end { s.queueBases[key] = end }
                }
            }
            s.latestSnapshot = (entry.index, entry.position)
        case .topicUpsert(let t): s.topics.upsert(t, nowMs: Self.nowMs)
        case .topicCreate(let t): if s.topics.topics[t.topicName] == nil { s.topics.upsert(t, nowMs: Self.nowMs) }
        case .groupUpsert(let g): s.groups[g.groupName] = g; s.groupsVersion = DataVersion(timestamp: Self.nowMs, counter: s.groupsVersion.counter + 1)
        case .groupCreate(let g):
            if s.groups[g.groupName] == nil {
                s.groups[g.groupName] = g
                s.groupsVersion = DataVersion(timestamp: Self.nowMs, counter: s.groupsVersion.counter + 1)
            }
        case .groupDelete(let name):
            if s.groups.removeValue(forKey: name) != nil { s.groupsVersion = DataVersion(timestamp: Self.nowMs, counter: s.groupsVersion.counter + 1) }
        case .topicDelete(let name): s.topics.remove(name, nowMs: Self.nowMs)
        case .offsets(let table):
            for (k, queues) in table {
                for (q, o) in queues { s.offsets[k, default: [:]][q] = o }
            }
        }
    }

    /// The log was reset to the leader's base (this member had fallen behind the leader's retention
    /// start): every consume queue is dropped (their messages are gone) and dispatch continues after
    /// the base. The metadata stays as this member last applied it.
    public func logReset(toStoreIndex base: Int64) throws {
        try persisting.withLock { _ in try resetLocked(base) }
    }

    private func resetLocked(_ base: Int64) throws {
        let (queues, waiters) = state.withLock { s -> ([ConsumeQueue], [CheckedContinuation<Void, Never>]) in
            let q = Array(s.queues.values)
            let w = s.pullWaiters.values.flatMap { $0.map(\.continuation) }
            s.queues.removeAll()
            s.pullWaiters.removeAll()
            s.minCorrections.removeAll()
            // What the next snapshot after the base says replaces these; until then they are the
            // best known ends (never below what was true).
            s.latestSnapshot = nil
            s.dispatched = base
            s.dispatchedEnd = log.firstPosition.rawValue
            return (q, w)
        }
        _ = queues
        for c in waiters { c.resume() }
        try? FileManager.default.removeItem(atPath: consumeQueueDirectory)
        try FileManager.default.createDirectory(atPath: consumeQueueDirectory, withIntermediateDirectories: true)
        options.keyIndex?.removeAll()
        logger.warning("consume queues dropped after a log reset; dispatch continues from the leader's base", metadata: ["base": "\(base)"])
    }

    // MARK: - Reads

    public enum GetStatus: String, Sendable {
        case found = "FOUND"
        case noMatchedMessage = "NO_MATCHED_MESSAGE"
        case messageWasRemoving = "MESSAGE_WAS_REMOVING"
        case offsetFoundNull = "OFFSET_FOUND_NULL"
        case offsetOverflowBadly = "OFFSET_OVERFLOW_BADLY"
        case offsetOverflowOne = "OFFSET_OVERFLOW_ONE"
        case offsetTooSmall = "OFFSET_TOO_SMALL"
        case noMatchedLogicQueue = "NO_MATCHED_LOGIC_QUEUE"
        case noMessageInQueue = "NO_MESSAGE_IN_QUEUE"
    }

    public struct GetResult: Sendable {
        public var status: GetStatus
        public var nextBeginOffset: Int64
        public var minOffset: Int64
        public var maxOffset: Int64
        /// The raw records, back to back (a PULL_MESSAGE body).
        public var records: [UInt8] = []
        public var count = 0
    }

    /// DefaultMessageStore.getMessage: up to `maxCount` messages (and about `maxBytes`) from `offset`
    /// whose tags code `matches`.
    public func getMessages(_ key: QueueKey, offset: Int64, maxCount: Int, maxBytes: Int = 256 << 10,
                            matches: (Int64) -> Bool) -> GetResult {
        let (found, base) = state.withLock { ($0.queues[key], $0.queueBases[key]) }
        guard let cq = found, cq.maxOffset > cq.minOffset || base == nil else {
            // No entry here: none ever, or all before the log's first entry (the snapshot's end).
            guard let base else { return GetResult(status: .noMatchedLogicQueue, nextBeginOffset: 0, minOffset: 0, maxOffset: 0) }
            var r = GetResult(status: .offsetOverflowOne, nextBeginOffset: offset, minOffset: base, maxOffset: base)
            if offset < base { r.status = .offsetTooSmall; r.nextBeginOffset = base }
            if offset > base { r.status = .offsetOverflowBadly; r.nextBeginOffset = base }
            return r
        }
        let lo = minOffset(key), hi = Int64(cq.maxOffset)
        var r = GetResult(status: .noMessageInQueue, nextBeginOffset: 0, minOffset: lo, maxOffset: hi)
        if hi == 0 { return r }
        if offset < lo { r.status = .offsetTooSmall; r.nextBeginOffset = lo; return r }
        if offset == hi { r.status = .offsetOverflowOne; r.nextBeginOffset = offset; return r }
        if offset > hi { r.status = .offsetOverflowBadly; r.nextBeginOffset = lo == 0 ? lo : hi; return r }
        let scan = max(maxCount, min(Int(hi - offset), max(800, maxCount * 20)))
        guard let entries = try? cq.read(from: UInt64(offset), maxCount: scan) else {
            r.status = .offsetFoundNull
            r.nextBeginOffset = offset
            return r
        }
        var next = offset
        var removing = false, unreadable = false
        let first = log.firstPosition.rawValue
        for e in entries {
            if r.count >= maxCount || (r.count > 0 && r.records.count + Int(e.size) > maxBytes) { break }
            if e.isBlank || !matches(e.tagsCode) { next += 1; continue }
            guard let at = UInt64(exactly: e.commitLogOffset), e.size > 0, at >= first else {
                // Retention deleted it (or the entry is not a message's): gone for every member.
                removing = true
                next += 1
                continue
            }
            guard let bytes = try? log.readBytes(at: at, count: Int(e.size)) else {
                // Still in the log but not readable now (the store failed, an I/O error): the batch
                // ends before it, so the consumer asks for it again instead of stepping over it.
                unreadable = true
                break
            }
            next += 1
            r.records.append(contentsOf: bytes)
            r.count += 1
        }
        r.nextBeginOffset = next
        if r.count > 0 {
            r.status = .found
        } else if unreadable {
            r.status = .offsetFoundNull
        } else {
            r.status = removing ? .messageWasRemoving : .noMatchedMessage
        }
        return r
    }

    /// QUERY_MESSAGE: the records of `topic` with `key` (a UNIQ_KEY or a KEYS token) stored within
    /// [begin, end] ms, newest first, at most `maxNum`; every candidate of the index is read and
    /// checked (the index holds hashes only).
    public func queryByKey(topic: String, key: String, maxNum: Int, begin: Int64, end: Int64) -> [[UInt8]] {
        guard let index = options.keyIndex else { return [] }
        var out: [[UInt8]] = []
        for offset in index.query(topic: topic, key: key, maxNum: maxNum, begin: begin, end: end) where out.count < maxNum {
            guard let bytes = record(atPhysicalOffset: offset),
                  let r = try? bytes.withUnsafeBytes({ try MessageRecord.decode($0, verifyBodyCRC: false) }), r.topic == topic,
                  r.properties[PropertyName.uniqueKey] == key || (r.properties[PropertyName.keys]?.split(separator: " ").contains { $0 == key } ?? false),
                  r.storeTimestamp >= begin, r.storeTimestamp <= end
            else { continue }
            out.append(bytes)
        }
        return out
    }

    /// The record at a commitlog offset (VIEW_MESSAGE_BY_ID), read through its size field.
    public func record(atPhysicalOffset offset: Int64) -> [UInt8]? {
        guard offset >= 0, let head = try? log.readBytes(at: UInt64(offset), count: 8),
              head.readBE(4, bytes: 4) == UInt64(MessageRecord.magic) else { return nil }
        let size = Int(head.readBE(0, bytes: 4))
        guard size >= 36, size <= options.recordBytesMax else { return nil }
        return try? log.readBytes(at: UInt64(offset), count: size)
    }

    /// Retention of the consume queues: files whose entries all point before the log's first
    /// position go (the messages are gone), so min offsets move as in RocketMQ.
    public func pruneConsumeQueues() {
        let first = Int64(log.firstPosition.rawValue)
        options.keyIndex?.deleteFiles(before: first)
        for (key, q) in state.withLock({ Array($0.queues) }) {
            do { try q.deleteFiles(beforeCommitLogOffset: first) } catch {
                logger.warning("pruning a consume queue failed", metadata: ["queue": "\(q.directory)", "error": "\(error)"])
            }
            // The first entry whose message is still in the log (entries point in log order).
            var lo = q.minOffset, hi = q.maxOffset
            while lo < hi {
                let mid = lo + (hi - lo) / 2
                guard let e = try? q.read(from: mid, maxCount: 1).first else { break }
                if e.isBlank || e.commitLogOffset < first { lo = mid + 1 } else { hi = mid }
            }
            state.withLock { s in
                if lo > q.minOffset { s.minCorrections[key] = Int64(lo) } else { s.minCorrections[key] = nil }
            }
        }
    }

    /// RocketMQ's accessMessageInMemoryMaxRatio (40 %) of physical memory: messages further than
    /// this behind the log's end are "in disk".
    static let memoryWindowBytes: UInt64 = {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), size = sysconf(Int32(_SC_PAGESIZE))
        return pages > 0 && size > 0 ? UInt64(pages) * UInt64(size) * 40 / 100 : 1 << 30
    }()

    /// Whether the message at `offset` of a queue is far enough behind the log's end to have left
    /// the page cache (checkInDiskByConsumeOffset); false when there is no such message.
    public func isInDisk(_ key: QueueKey, offset: Int64) -> Bool {
        guard offset >= 0, offset >= minOffset(key), let e = try? queue(key)?.read(from: UInt64(offset), maxCount: 1).first, !e.isBlank,
              let at = UInt64(exactly: e.commitLogOffset), at >= log.firstPosition.rawValue else { return false }
        return log.writePosition.rawValue > at + Self.memoryWindowBytes
    }

    // MARK: - Long polling

    /// Returns once the queue holds a message at or after `offset`, or at `deadline`.
    public func waitForMessages(_ key: QueueKey, offset: Int64, deadline: ContinuousClock.Instant) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let (ready, early) = state.withLock { s -> (Bool, Bool) in
                if s.sweepEnded { return (true, false) }
                if let q = s.queues[key], Int64(q.maxOffset) > offset { return (true, false) }
                s.nextWaiterId += 1
                s.pullWaiters[key, default: []].append(PullWaiter(id: s.nextWaiterId, offset: UInt64(max(0, offset)), deadline: deadline, continuation: c))
                return (false, s.waiterWake.map { deadline < $0 } ?? false)
            }
            if ready { c.resume() }
            if early { waiterBell.ring() }
        }
    }

    /// How many pulls wait on a queue.
    func waiterCount(_ key: QueueKey) -> Int { state.withLock { $0.pullWaiters[key]?.count ?? 0 } }

    /// Resumes the waiters whose deadline passed; returns how many still wait.
    @discardableResult
    func expireWaiters(now: ContinuousClock.Instant) -> Int { expireWaiters(now: now, wakeBy: nil).left }

    /// `expireWaiters`, and the next wake of `run`: the earliest deadline still waiting, or `wakeBy`
    /// if that comes first (recorded, so that a pull due earlier rings `waiterBell`).
    func expireWaiters(now: ContinuousClock.Instant, wakeBy: ContinuousClock.Instant?) -> (left: Int, wake: ContinuousClock.Instant?) {
        let (expired, left, wake) = state.withLock { s -> ([CheckedContinuation<Void, Never>], Int, ContinuousClock.Instant?) in
            var out: [CheckedContinuation<Void, Never>] = []
            var left = 0
            var wake = wakeBy
            for (key, waiters) in s.pullWaiters {
                let keep = waiters.filter { $0.deadline > now }
                out.append(contentsOf: waiters.filter { $0.deadline <= now }.map(\.continuation))
                if keep.isEmpty { s.pullWaiters.removeValue(forKey: key) } else { s.pullWaiters[key] = keep }
                left += keep.count
                for w in keep where wake.map({ w.deadline < $0 }) ?? true { wake = w.deadline }
            }
            if wakeBy != nil { s.waiterWake = wake }
            return (out, left, wake)
        }
        for c in expired { c.resume() }
        return (left, wake)
    }

    // MARK: - Checkpoints

    struct Checkpoint {
        var index: Int64
        var end: UInt64
        var topics: [String: TopicConfig]
        var offsets: [String: [Int32: Int64]]
        var queueBases: [QueueKey: Int64] = [:]
        var latestSnapshot: (index: Int64, position: UInt64)?
        var groups: [String: SubscriptionGroupConfig] = [:]
    }

    static func loadCheckpoint(_ path: String, log: LogStore, logger: Logger) -> Checkpoint? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        guard let o = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let index = (o["index"] as? NSNumber)?.int64Value, let end = (o["endPosition"] as? NSNumber)?.uint64Value
        else {
            logger.warning("ignoring an unreadable dispatch checkpoint; consume queues are rebuilt from the log", metadata: ["path": "\(path)"])
            return nil
        }
        // It must describe this log: the entry at `index` ends at `end` (or the log is empty before it).
        let first = Int64(log.firstIndex.rawValue)
        if index < first - 1 || index > Int64(log.lastIndex.map { $0.rawValue } ?? UInt64(first - 1)) {
            logger.warning("the dispatch checkpoint is outside the log; consume queues are rebuilt", metadata: ["checkpoint": "\(index)"])
            return nil
        }
        if index >= first {
            guard let e = try? log.read(from: LogIndex(UInt64(index)), maxBytes: 0).first,
                  e.position.rawValue + UInt64(e.header.totalByteCount) == end else {
                logger.warning("the dispatch checkpoint does not match the log; consume queues are rebuilt", metadata: ["checkpoint": "\(index)"])
                return nil
            }
        }
        var topics: [String: TopicConfig] = [:]
        for (name, t) in (o["topics"] as? [String: Any]) ?? [:] {
            if let d = t as? [String: Any], let c = TopicConfig(json: d) { topics[name] = c }
        }
        var offsets: [String: [Int32: Int64]] = [:]
        for (k, v) in (o["offsets"] as? [String: Any]) ?? [:] {
            for (q, off) in (v as? [String: Any]) ?? [:] {
                if let id = Int32(q), let n = (off as? NSNumber)?.int64Value { offsets[k, default: [:]][id] = n }
            }
        }
        var c = Checkpoint(index: index, end: end, topics: topics, offsets: offsets)
        for (topic, queues) in MetadataChange.parseQueueTable(o["queueBases"]) ?? [:] {
            for (id, b) in queues { c.queueBases[QueueKey(topic, id)] = b }
        }
        for (name, g) in (o["groups"] as? [String: Any]) ?? [:] {
            if let d = g as? [String: Any], let config = SubscriptionGroupConfig(json: d) { c.groups[name] = config }
        }
        if let i = (o["snapshotIndex"] as? NSNumber)?.int64Value, let p = (o["snapshotPosition"] as? NSNumber)?.uint64Value, i >= first {
            c.latestSnapshot = (i, p)
        }
        return c
    }

    /// Flushes the consume queues and writes the checkpoint (and RocketMQ's topics.json and
    /// consumerOffset.json, caches for operators) when something was dispatched since the last one.
    public func checkpoint() throws {
        try persisting.withLock { _ in try checkpointLocked() }
    }

    private func checkpointLocked() throws {
        let (index, end, topics, offsets, queues, changed, last, bases, snap, groups) = state.withLock {
            ($0.dispatched, $0.dispatchedEnd, $0.topics, $0.offsets, Array($0.queues.values), $0.metadataChanged, $0.checkpointed, $0.queueBases, $0.latestSnapshot, $0.groups)
        }
        guard index != last || changed else { return }
        for q in queues { try q.flush() }
        do { try options.keyIndex?.flush() } catch {
            // A cache: its failure must not hold the checkpoint back.
            logger.error("flushing the key index failed", metadata: ["error": "\(error)"])
        }
        let offsetJSON = Self.offsetsJSON(offsets)
        var baseTable: [String: [Int32: Int64]] = [:]
        for (k, b) in bases { baseTable[k.topic, default: [:]][k.queueId] = b }
        let text = JSONText.object([
            "index": .int(index), "endPosition": .int(Int64(end)),
            "topics": .object(topics.topics.mapValues(\.json)), "offsets": offsetJSON,
            "queueBases": MetadataChange.queueTable(baseTable), "groups": .object(groups.mapValues(\.json)),
            "snapshotIndex": snap.map { .int($0.index) } ?? .null, "snapshotPosition": snap.map { .int(Int64($0.position)) } ?? .null,
        ]).serialized
        try Self.writeAtomically(text, to: checkpointPath)
        let config = options.rootDirectory + "/config"
        try? FileManager.default.createDirectory(atPath: config, withIntermediateDirectories: true)
        try? Self.writeAtomically(topics.serializeWrapper, to: config + "/topics.json")
        try? Self.writeAtomically(JSONText.object(["offsetTable": offsetJSON]).serialized, to: config + "/consumerOffset.json")
        try? Self.writeAtomically(groupsWrapper, to: config + "/subscriptionGroup.json")
        state.withLock {
            $0.checkpointed = index
            $0.metadataChanged = false
        }
    }

    static func offsetsJSON(_ offsets: [String: [Int32: Int64]]) -> JSONText {
        var table: [String: JSONText] = [:]
        for (k, queues) in offsets {
            var q: [String: JSONText] = [:]
            for (id, o) in queues { q["\(id)"] = .int(o) }
            table[k] = .object(q)
        }
        return .object(table)
    }

    static func writeAtomically(_ text: String, to path: String) throws {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: tmp]) }
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard n == bytes.count, synced, rename(tmp, path) == 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path]) }
    }

    /// Checkpoints every second, prunes consume queues every 10 s and answers long-polling waiters
    /// at their deadlines, until cancelled.
    public func run() async {
        var lastCheckpoint = ContinuousClock.now
        var lastPrune = ContinuousClock.now
        while !Task.isCancelled {
            if ContinuousClock.now - lastPrune >= .seconds(10) {
                lastPrune = .now
                pruneConsumeQueues()
            }
            if ContinuousClock.now - lastCheckpoint >= options.checkpointInterval {
                lastCheckpoint = .now
                do { try checkpoint() } catch { logger.error("writing the dispatch checkpoint failed", metadata: ["error": "\(error)"]) }
            }
            // Asleep until the next checkpoint or prune, or the earliest pull's deadline: a pull that
            // comes due earlier rings the bell (no polling: an idle broker stays asleep).
            let (_, wake) = expireWaiters(now: .now, wakeBy: min(lastCheckpoint + options.checkpointInterval, lastPrune + .seconds(10)))
            await waiterBell.wait(upTo: max((wake ?? .now) - .now, .milliseconds(1)))
        }
        state.withLock {
            $0.waiterWake = nil
            $0.sweepEnded = true
        }
        expireWaiters(now: .now + .seconds(3_600))
        try? checkpoint()
    }
}
