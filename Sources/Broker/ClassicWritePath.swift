import ClassicHA
import LogFormat
import LogStore
import RaftCore
import Synchronization

/// The write path of a classic group (brokerRole ASYNC_MASTER, SYNC_MASTER or SLAVE), on the same
/// log format as a Raft group. The master numbers entries and queue offsets under one lock while it
/// appends them with its epoch as their term, dispatches them to its consume queues (after the
/// fsync under SYNC_FLUSH), and under SYNC_MASTER waits until a slave acknowledged them. A slave
/// takes no writes: its log is the master's, streamed by `HASlave`.
public final class ClassicWritePath: BrokerWriter {
    public enum Role: Sendable, Equatable {
        case master(sync: Bool)
        case slave
    }

    struct Numbering {
        /// Next queue offset of every queue written since start.
        var offsets: [QueueKey: Int64] = [:]
    }

    public let role: Role
    public let brokerName: String
    /// The term of every entry this master writes: one more than the log's last term at start, so
    /// each master run's entries are told apart (and a Raft group started on this log later
    /// continues above it).
    public let epoch: LogFormat.Term
    private let log: LogStore
    private let store: MessageStore
    private let ha: HAMaster?
    /// SYNC_MASTER: how long a send waits for a slave (syncFlushTimeout).
    private let slaveTimeout: Duration
    private let numbering = Mutex(Numbering())
    /// Dispatch reads the log in order; one caller at a time.
    private let dispatching = Mutex(())

    public let maxEntryBytes: Int

    public init(role: Role, brokerName: String, log: LogStore, store: MessageStore, ha: HAMaster?, slaveTimeout: Duration) {
        self.role = role
        self.brokerName = brokerName
        self.log = log
        self.store = store
        self.ha = ha
        self.slaveTimeout = slaveTimeout
        epoch = LogFormat.Term(log.lastTerm.rawValue + 1)
        maxEntryBytes = log.options.entryBodyBytesMax
    }

    public var isLeader: Bool { role != .slave }
    public var leader: NodeID? { nil }
    public var isCaughtUpLeader: Bool { role != .slave }
    public var refusal: WriteError { .slave(brokerName: brokerName) }
    public var keepsLocalOffsets: Bool { role == .slave }
    public func confirmLeadership(timeout: Duration) async -> Bool { isLeader }

    /// Dispatches what the log holds up to `index` (a slave calls it after each transfer).
    public func dispatch(upTo index: LogFormat.LogIndex) throws {
        try dispatching.withLock { _ in try store.dispatch(upTo: Int64(index.rawValue)) }
    }

    public func append(queue key: QueueKey?, count: Int, timeout: Duration, kind: WritePath.EntryKind,
                       body: (_ firstQueueOffset: Int64, _ numbered: [QueueKey: Int64]) -> [UInt8]) async throws(WriteError) -> Appended {
        guard case .master(let syncMaster) = role else { throw .slave(brokerName: brokerName) }
        let written: Result<(Int64, AppendResult), WriteError> = numbering.withLock { s in
            var first: Int64 = 0
            if let key { first = s.offsets[key] ?? store.maxOffset(key) }
            let data: [UInt8]
            if kind == .snapshot {
                // The metadata as of the entry before this one: everything written is dispatched first.
                do {
                    // Under SYNC_FLUSH the newest entries wait in the write-behind buffer: sync them so dispatch can read them.
                    if log.options.flushMode == .sync { try log.syncNow() }
                    if let last = log.lastIndex { try dispatch(upTo: last) }
                } catch { return .failure(.storage("\(error)")) }
                data = MetadataChange.snapshot(store.snapshot(numbered: s.offsets)).encoded()
            } else {
                data = body(first, s.offsets)
            }
            guard !data.isEmpty, data.count <= maxEntryBytes else { return .failure(.tooLarge(bytes: data.count, limit: maxEntryBytes)) }
            do {
                let r = try log.write([EntryToAppend(term: epoch, body: data)], patch: BrokerLogHooks.bodyPatch)
                if let key { s.offsets[key] = first + Int64(count) }
                return .success((first, r))
            } catch {
                return .failure(.storage("\(error)"))
            }
        }
        let (first, result) = try written.get()
        if log.options.flushMode == .sync {
            do { try await log.waitUntilDurable(result.endPosition) } catch { throw .storage("\(error)") }
        }
        ha?.appended()
        do { try dispatch(upTo: result.lastIndex) } catch { throw .storage("dispatching entry \(result.lastIndex): \(error)") }
        guard syncMaster, let ha, kind == .messages else { return Appended(queueOffset: first) }
        // RocketMQ's handleHA: stored here either way; the answer says whether a slave has it.
        guard ha.isSlaveOK(end: result.endPosition.rawValue) else { return Appended(queueOffset: first, outcome: .slaveNotAvailable) }
        let acknowledged = await ha.waitForSlave(result.endPosition.rawValue, timeout: slaveTimeout)
        return Appended(queueOffset: first, outcome: acknowledged ? .stored : .flushSlaveTimeout)
    }

    public func appendSnapshot(timeout: Duration) async throws(WriteError) {
        _ = try await append(queue: nil, count: 0, timeout: timeout, kind: .snapshot) { _, _ in [] }
    }
}
