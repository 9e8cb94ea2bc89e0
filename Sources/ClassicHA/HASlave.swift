import LogFormat
import LogStore
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The slave's HA client (RocketMQ's HAClient): connects to the master's HA port, reports where its
/// log ends at once, after every transfer it wrote and every `heartbeat`, and writes what the
/// master streams through an `HAReceiver`. It reconnects after a failure; a stream that does not
/// continue its log is refused (logged as an error) and retried, never written.
public final class HASlave: Sendable {
    public struct Options: Sendable {
        /// Reports at least this often (haSendHeartbeatInterval).
        public var heartbeat: Duration = .seconds(5)
        /// The master silent this long: reconnect (haHousekeepingInterval).
        public var housekeeping: Duration = .seconds(20)
        /// Wait between connection attempts.
        public var retry: Duration = .seconds(1)
        public init() {}
    }

    public struct Status: Sendable {
        /// The master's HA address in use (nil until known).
        public var masterAddress: String?
        public var connected = false
        /// The position last reported to the master.
        public var ackOffset: UInt64 = 0
        /// Why the last session ended, if it failed.
        public var lastError: String?
    }

    public let options: Options
    private let store: LogStore
    private let group: any EventLoopGroup
    private let logger: Logger
    /// Where the master's HA port is (haMasterAddress, or what the nameservers said).
    private let masterAddress: @Sendable () -> String?
    /// After entries were written (and, under SYNC_FLUSH, synced): dispatch them.
    private let written: @Sendable (LogIndex) throws -> Void
    private let reset: @Sendable (LogBase) throws -> Void
    private let status = Mutex(Status())

    public init(options: Options, store: LogStore, group: any EventLoopGroup, logger: Logger,
                masterAddress: @escaping @Sendable () -> String?,
                written: @escaping @Sendable (LogIndex) throws -> Void, reset: @escaping @Sendable (LogBase) throws -> Void) {
        self.options = options
        self.store = store
        self.group = group
        self.logger = logger
        self.masterAddress = masterAddress
        self.written = written
        self.reset = reset
    }

    public var currentStatus: Status { status.withLock { $0 } }

    /// Connects, replicates, reconnects, until cancelled.
    public func run() async {
        var lastLogged: String?
        while !Task.isCancelled {
            guard let address = masterAddress(), let (host, port) = Self.split(address) else {
                try? await Task.sleep(for: .milliseconds(200))
                continue
            }
            status.withLock { $0.masterAddress = address }
            do {
                try await session(host: host, port: port, address: address)
            } catch {
                if Task.isCancelled { break }
                let text = "\(error)"
                status.withLock {
                    $0.connected = false
                    $0.lastError = text
                }
                if text != lastLogged {
                    lastLogged = text
                    if error is HAError {
                        logger.error("HA replication from the master stopped", metadata: ["master": "\(address)", "error": "\(text)"])
                    } else {
                        logger.warning("HA connection to the master failed; retrying", metadata: ["master": "\(address)", "error": "\(text)"])
                    }
                }
            }
            status.withLock { $0.connected = false }
            try? await Task.sleep(for: options.retry)
        }
    }

    static func split(_ address: String) -> (String, Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), port > 0, port < 65_536 else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }

    private func session(host: String, port: Int, address: String) async throws {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(3))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let receiver = HAReceiver(store: store, onReset: { try self.reset($0) })
        let syncFlush = store.options.flushMode == .sync
        let lastRead = LastSeen()
        try await withTaskCancellationHandler {
            try await channel.executeThenClose { inbound, outbound in
                let start = store.writePosition.rawValue
                try await outbound.write(HAWire.report(start))
                status.withLock {
                    $0.connected = true
                    $0.ackOffset = start
                    $0.lastError = nil
                }
                logger.info("HA connected to the master", metadata: ["master": "\(address)", "from": "\(start)"])
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    // Heartbeat reports, and the master's silence.
                    tasks.addTask {
                        while !Task.isCancelled {
                            try await Task.sleep(for: self.options.heartbeat)
                            if lastRead.elapsed > self.options.housekeeping {
                                throw HAConnectionLost("the master sent nothing for \(self.options.housekeeping)")
                            }
                            try await outbound.write(HAWire.report(self.status.withLock { $0.ackOffset }))
                        }
                    }
                    var pending = ByteBuffer()
                    for try await var chunk in inbound {
                        lastRead.touch()
                        pending.writeBuffer(&chunk)
                        var wrote: HAReceiver.Written?
                        while pending.readableBytes >= HAWire.headerBytes {
                            let position = pending.getInteger(at: pending.readerIndex, as: Int64.self)!
                            let length = Int(pending.getInteger(at: pending.readerIndex + 8, as: Int32.self)!)
                            guard length >= 0, length <= 64 << 20 else { throw HAError.protocolViolation("a transfer of \(length) bytes") }
                            guard pending.readableBytes >= HAWire.headerBytes + length else { break }
                            pending.moveReaderIndex(forwardBy: HAWire.headerBytes)
                            let bytes = pending.readBytes(length: length)!
                            if position == HAWire.baseFramePosition {
                                guard let base = HAWire.decodeBase(bytes) else { throw HAError.protocolViolation("a base frame of \(length) bytes") }
                                try receiver.receiveBase(base)
                                logger.info("HA: this empty slave continues from the master's log base", metadata: ["base": "\(base)"])
                                continue
                            }
                            guard position >= 0 else { throw HAError.protocolViolation("a transfer at position \(position)") }
                            if length == 0 {
                                // A heartbeat says where the master's stream is: it must be here.
                                if UInt64(position) != receiver.streamEnd {
                                    throw HAError.diverged(UInt64(position) < receiver.streamEnd
                                        ? "the master's log ends at position \(position), before this slave's end \(receiver.streamEnd): the slave holds entries the master does not (a master restored from an older copy, or another group's master)"
                                        : "the master streams from \(position), past this slave's end \(receiver.streamEnd)")
                                }
                                continue
                            }
                            if let w = try receiver.receive(position: UInt64(position), bytes) { wrote = w }
                        }
                        pending.discardReadBytes()
                        guard let w = wrote else { continue }
                        if syncFlush { try await store.waitUntilDurable(w.endPosition) }
                        try written(w.lastIndex)
                        status.withLock { $0.ackOffset = w.endPosition.rawValue }
                        try await outbound.write(HAWire.report(w.endPosition.rawValue))
                    }
                    tasks.cancelAll()
                    throw HAConnectionLost("the master closed the connection")
                }
            }
        } onCancel: {
            channel.channel.close(promise: nil)
        }
    }
}

struct HAConnectionLost: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
