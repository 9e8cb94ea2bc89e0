import LogFormat
import LogStore
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The master's HA port: every slave that connects reports where its log ends, and the master
/// streams its segment files from there (RocketMQ's HAService/HAConnection, rocketmq-protocol.md
/// §6.2). It keeps every slave's acknowledged position for SYNC_MASTER (§6.3).
public final class HAMaster: Sendable {
    public struct Options: Sendable {
        public var host: String
        public var port: Int
        /// Bytes per transfer at most (haTransferBatchSize).
        public var batchBytes = 32 << 10
        /// A slave silent this long is dropped (haHousekeepingInterval).
        public var housekeeping: Duration = .seconds(20)
        /// A heartbeat transfer after this long without data.
        public var heartbeat: Duration = .seconds(5)
        /// SYNC_MASTER: a slave further behind than this does not count (haSlaveFallbehindMax).
        public var fallBehindMax: UInt64 = 256 << 20
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    /// One slave connection as `/raft/state` shows it.
    public struct Slave: Sendable {
        public var address: String
        public var ackOffset: UInt64
    }

    struct Connection {
        var address: String
        var ack: UInt64?
    }

    struct AckWaiter {
        var target: UInt64
        var deadline: ContinuousClock.Instant
        var continuation: CheckedContinuation<Bool, Never>
    }

    struct State {
        var connections: [UInt64: Connection] = [:]
        var nextConnection: UInt64 = 0
        var ackWaiters: [UInt64: AckWaiter] = [:]
        var nextWaiter: UInt64 = 0
        /// Streamers waiting for new bytes, woken by `appended()` or their deadline.
        var dataWaiters: [UInt64: (ContinuousClock.Instant, CheckedContinuation<Void, Never>)] = [:]
        /// The best acknowledged position of any slave connected now.
        var bestAck: UInt64 {
            connections.values.compactMap(\.ack).max() ?? 0
        }
    }

    public let options: Options
    private let store: LogStore
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())

    public init(options: Options, store: LogStore, group: any EventLoopGroup, logger: Logger) {
        self.options = options
        self.store = store
        self.group = group
        self.logger = logger
    }

    // MARK: - For the write path

    /// New bytes are in the log: wake the streamers.
    public func appended() {
        let woken = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            guard !s.dataWaiters.isEmpty else { return [] }
            defer { s.dataWaiters.removeAll() }
            return s.dataWaiters.values.map(\.1)
        }
        for c in woken { c.resume() }
    }

    /// RocketMQ's isSlaveOK: a slave is connected and not more than `fallBehindMax` behind `end`.
    public func isSlaveOK(end: UInt64) -> Bool {
        state.withLock { s in
            guard !s.connections.isEmpty else { return false }
            return end <= s.bestAck || end - s.bestAck < options.fallBehindMax
        }
    }

    /// Waits until some slave acknowledged `position`, at most `timeout`. False on timeout or when
    /// the task is cancelled.
    public func waitForSlave(_ position: UInt64, timeout: Duration) async -> Bool {
        let id = state.withLock { s -> UInt64 in
            defer { s.nextWaiter &+= 1 }
            return s.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
                let done = state.withLock { s -> Bool? in
                    if s.bestAck >= position { return true }
                    if Task.isCancelled { return false }
                    s.ackWaiters[id] = AckWaiter(target: position, deadline: .now + timeout, continuation: c)
                    return nil
                }
                if let done { c.resume(returning: done) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.ackWaiters.removeValue(forKey: id) }
            waiter?.continuation.resume(returning: false)
        }
    }

    /// Waits until every connected slave acknowledged `position`, at most `timeout` (a clean stop
    /// hands the master's last entries to its slaves). True when they all did.
    public func drain(to position: UInt64, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if state.withLock({ s in s.connections.values.allSatisfy { ($0.ack ?? 0) >= position } }) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    /// The connected slaves.
    public var slaves: [Slave] {
        state.withLock { s in
            s.connections.sorted { $0.key < $1.key }.map { Slave(address: $0.value.address, ackOffset: $0.value.ack ?? 0) }
        }
    }

    private func acknowledged(_ id: UInt64, _ position: UInt64) {
        let woken = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            s.connections[id]?.ack = position
            let best = s.bestAck
            var out: [CheckedContinuation<Bool, Never>] = []
            for (k, w) in s.ackWaiters where w.target <= best {
                out.append(w.continuation)
                s.ackWaiters[k] = nil
            }
            return out
        }
        for c in woken { c.resume(returning: true) }
    }

    /// Resumes the waiters whose time is up.
    private func expireWaiters() {
        let now = ContinuousClock.now
        let (acks, data) = state.withLock { s -> ([CheckedContinuation<Bool, Never>], [CheckedContinuation<Void, Never>]) in
            var acks: [CheckedContinuation<Bool, Never>] = []
            for (k, w) in s.ackWaiters where w.deadline <= now {
                acks.append(w.continuation)
                s.ackWaiters[k] = nil
            }
            var data: [CheckedContinuation<Void, Never>] = []
            for (k, w) in s.dataWaiters where w.0 <= now {
                data.append(w.1)
                s.dataWaiters[k] = nil
            }
            return (acks, data)
        }
        for c in acks { c.resume(returning: false) }
        for c in data { c.resume() }
    }

    /// Waits for new bytes past `position`, until `deadline`, or until the task is cancelled.
    private func waitForData(after position: UInt64, id: UInt64, deadline: ContinuousClock.Instant) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { s -> Bool in
                    // Checked under the lock `appended()` takes, so a wake-up between the check and
                    // the registration is not lost.
                    if store.fileEndPosition.rawValue > position || Task.isCancelled { return true }
                    s.dataWaiters[id] = (deadline, c)
                    return false
                }
                if ready { c.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.dataWaiters.removeValue(forKey: id) }
            waiter?.1.resume()
        }
    }

    // MARK: - Serving

    /// Binds the HA port and serves slaves until cancelled.
    public func run(onBound: @Sendable (SocketAddress) -> Void = { _ in }) async throws {
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: options.host, port: options.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        if let a = server.channel.localAddress { onBound(a) }
        logger.info("HA service listening", metadata: ["haListen": "\(options.host):\(options.port)"])
        try await withThrowingDiscardingTaskGroup { tasks in
            tasks.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(20))
                    self.expireWaiters()
                }
            }
            try await withTaskCancellationHandler {
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        tasks.addTask { await self.serve(connection) }
                    }
                }
            } onCancel: {
                server.channel.close(promise: nil)
            }
            tasks.cancelAll()
        }
    }

    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        let address = connection.channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
        let id = state.withLock { s -> UInt64 in
            defer { s.nextConnection &+= 1 }
            s.connections[s.nextConnection] = Connection(address: address)
            return s.nextConnection
        }
        logger.info("HA slave connected", metadata: ["slave": "\(address)"])
        let lastRead = LastSeen()
        do {
            try await withTaskCancellationHandler {
                try await connection.executeThenClose { inbound, outbound in
                    try await withThrowingTaskGroup(of: Void.self) { tasks in
                        var pending = ByteBuffer()
                        var started = false
                        for try await var chunk in inbound {
                            lastRead.touch()
                            pending.writeBuffer(&chunk)
                            // The last complete report counts.
                            var report: Int64?
                            while pending.readableBytes >= HAWire.reportBytes { report = pending.readInteger(as: Int64.self) }
                            pending.discardReadBytes()
                            guard let report else { continue }
                            guard report >= 0 else { throw HAError.protocolViolation("a slave reported position \(report)") }
                            acknowledged(id, UInt64(report))
                            if !started {
                                started = true
                                let channel = connection.channel
                                tasks.addTask {
                                    try await self.stream(from: UInt64(report), id: id, to: outbound, lastRead: lastRead, channel: channel, slave: address)
                                }
                            }
                        }
                        tasks.cancelAll()
                    }
                }
            } onCancel: {
                connection.channel.close(promise: nil)
            }
        } catch {
            if !Task.isCancelled { logger.warning("HA slave connection ended", metadata: ["slave": "\(address)", "error": "\(error)"]) }
        }
        let woken = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.connections[id] = nil
            return s.dataWaiters.removeValue(forKey: id).map { [$0.1] } ?? []
        }
        for c in woken { c.resume() }
        logger.info("HA slave disconnected", metadata: ["slave": "\(address)"])
    }

    /// Streams the log to one slave from `start`.
    private func stream(from start: UInt64, id: UInt64, to outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
                        lastRead: LastSeen, channel: any Channel, slave: String) async throws {
        var next = start
        let first = store.firstPosition.rawValue
        if next < first || (next == 0 && first > 0) {
            // The slave's log ends before this one begins: only an empty slave can start from the base.
            guard let base = store.base else {
                throw HAError.protocolViolation("the slave at \(slave) reported position \(start), before this log's first position \(first), and this log's base is unknown")
            }
            var b = ByteBuffer()
            b.writeInteger(HAWire.baseFramePosition)
            b.writeInteger(Int32(HAWire.baseBytes))
            b.writeBytes(HAWire.encodeBase(base))
            try await outbound.write(b)
            next = base.position.rawValue
        }
        var lastSent = ContinuousClock.now
        while !Task.isCancelled {
            if lastRead.elapsed > options.housekeeping {
                logger.warning("HA slave silent too long; closing", metadata: ["slave": "\(slave)", "housekeeping": "\(options.housekeeping)"])
                channel.close(promise: nil)
                return
            }
            let end = store.fileEndPosition.rawValue
            if next < end {
                guard let segmentEnd = store.segmentEnd(containing: next) else {
                    throw HAError.protocolViolation("position \(next) is no longer in this log (retention deleted it while the slave was behind)")
                }
                let count = Int(min(UInt64(options.batchBytes), min(end, segmentEnd) - next))
                let bytes: [UInt8]
                do { bytes = try store.readBytes(at: next, count: count) } catch {
                    throw HAError.storage("reading \(count) bytes at \(next): \(error)")
                }
                var b = ByteBuffer()
                b.reserveCapacity(HAWire.headerBytes + count)
                b.writeInteger(Int64(next))
                b.writeInteger(Int32(count))
                b.writeBytes(bytes)
                try await outbound.write(b)
                next += UInt64(count)
                lastSent = .now
                continue
            }
            if next > end {
                // The slave holds more than this master: send where this log ends, so the slave
                // names the problem (it refuses the stream) instead of waiting silently.
                var b = ByteBuffer()
                b.writeInteger(Int64(end))
                b.writeInteger(Int32(0))
                try await outbound.write(b)
                try await Task.sleep(for: options.heartbeat)
                continue
            }
            if ContinuousClock.now - lastSent >= options.heartbeat {
                var b = ByteBuffer()
                b.writeInteger(Int64(next))
                b.writeInteger(Int32(0))
                try await outbound.write(b)
                lastSent = .now
            }
            await waitForData(after: next, id: id, deadline: min(lastSent + options.heartbeat, .now + .seconds(1)))
        }
    }
}
