import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A RocketMQ remoting client: one connection per address, made on first use and again after it
/// breaks, with a growing pause after failed attempts so a dead peer is not hammered.
public actor RemotingClient {
    public struct Options: Sendable {
        public var connectTimeoutMilliseconds: Int64 = 3_000
        public var maxFrameBytes = RemotingFrame.defaultMaxFrameBytes
        public var maxPendingRequestsPerConnection = 65_536
        public var idleTimeoutSeconds: Int64 = 120
        /// After a failed connect, the next attempt waits this long, doubling up to the maximum.
        public var reconnectBackoffMinMilliseconds: Int64 = 50
        public var reconnectBackoffMaxMilliseconds: Int64 = 2_000
        public init() {}
    }

    private enum Slot {
        /// `backoffMs`: the wait after the attempt before this one failed (nil after a success).
        case connecting(EventLoopFuture<any Channel>, backoffMs: Int64?)
        /// One connection value per channel, so that every request on it shares one write coalescer.
        case connected(RemotingConnection)
        /// The last attempt failed: none before `retryAt`.
        case backingOff(retryAt: NIODeadline, backoffMs: Int64, reason: String)
    }

    private let group: any EventLoopGroup
    private let options: Options
    private let dispatcher: (any RemotingDispatcher)?
    private let logger: Logger
    private var slots: [String: Slot] = [:]

    /// `dispatcher` handles requests the peers send on these connections (a broker's notifications
    /// to a client); without one they are answered REQUEST_CODE_NOT_SUPPORTED.
    public init(group: any EventLoopGroup, options: Options = Options(), dispatcher: (any RemotingDispatcher)? = nil, logger: Logger) {
        self.group = group
        self.options = options
        self.dispatcher = dispatcher
        self.logger = logger
    }

    /// Live connections by address, readable without a hop to the actor: a request on an open
    /// connection (every request but the first) neither waits for nor resumes on the actor.
    private nonisolated let live = Mutex<[String: RemotingConnection]>([:])

    /// Sends `command` to `address` ("host:port") and waits for the answer.
    public nonisolated func request(_ address: String, _ command: RemotingCommand, timeoutMilliseconds: Int64) async throws(RemotingCallError) -> RemotingCommand {
        let connection = try await connection(to: address)
        return try await connection.request(command, timeoutMilliseconds: timeoutMilliseconds)
    }

    /// Sends a one-way request to `address`.
    public nonisolated func oneway(_ address: String, _ command: RemotingCommand) async throws(RemotingCallError) {
        try await connection(to: address).oneway(command)
    }

    /// The live connection to `address`, connecting if there is none.
    public nonisolated func connection(to address: String) async throws(RemotingCallError) -> RemotingConnection {
        if let c = live.withLock({ $0[address] }), c.channel.isActive { return c }
        return try await connectionSlow(to: address)
    }

    private func connectionSlow(to address: String) async throws(RemotingCallError) -> RemotingConnection {
        switch slots[address] {
        case .connected(let connection) where connection.channel.isActive:
            return connection
        case .connecting(let future, _):
            return try await awaitConnect(address, future)
        case .backingOff(let retryAt, _, let reason) where NIODeadline.now() < retryAt:
            // The same words as the failed attempt's, so callers that log each new reason once do.
            throw .connectFailed(address: address, reason: reason)
        case .backingOff(_, let backoff, _):
            let future = connect(address)
            slots[address] = .connecting(future, backoffMs: backoff)
            return try await awaitConnect(address, future)
        default:
            let future = connect(address)
            slots[address] = .connecting(future, backoffMs: nil)
            return try await awaitConnect(address, future)
        }
    }

    /// Closes every connection.
    public func close() async {
        for (_, slot) in slots {
            if case .connected(let c) = slot { try? await c.channel.close() }
        }
        slots.removeAll()
        live.withLock { $0.removeAll() }
    }

    private func awaitConnect(_ address: String, _ future: EventLoopFuture<any Channel>) async throws(RemotingCallError) -> RemotingConnection {
        do {
            let channel = try await future.get()
            // Another caller may have finished first; both see the same connection.
            if case .connected(let c) = slots[address], c.channel === channel { return c }
            let connection = RemotingConnection(channel: channel)
            if case .connecting = slots[address] {
                slots[address] = .connected(connection)
                live.withLock { $0[address] = connection }
            }
            return connection
        } catch {
            let reason = "\(error)"
            // Each failure in a row doubles the wait before the next attempt, up to the maximum.
            if case .connecting(_, let previous) = slots[address] {
                let backoff = previous.map { min($0 * 2, options.reconnectBackoffMaxMilliseconds) } ?? options.reconnectBackoffMinMilliseconds
                slots[address] = .backingOff(retryAt: .now() + .milliseconds(backoff), backoffMs: backoff, reason: reason)
            }
            throw .connectFailed(address: address, reason: reason)
        }
    }

    private func connect(_ address: String) -> EventLoopFuture<any Channel> {
        let loop = group.next()
        guard let (host, port) = Self.split(address) else {
            return loop.makeFailedFuture(RemotingCallError.connectFailed(address: address, reason: "not host:port"))
        }
        let options = self.options
        let dispatcher = self.dispatcher
        let logger = self.logger
        return ClientBootstrap(group: loop)
            .connectTimeout(.milliseconds(options.connectTimeoutMilliseconds))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try RemotingPipeline.add(to: channel, maxFrameBytes: options.maxFrameBytes,
                                             idleTimeoutSeconds: options.idleTimeoutSeconds, dispatcher: dispatcher,
                                             maxPendingRequests: options.maxPendingRequestsPerConnection, logger: logger)
                }
            }
            .connect(host: host, port: port)
    }

    /// "host:port" (IPv6 as "[::1]:port").
    public static func split(_ address: String) -> (String, Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
              (1...65_535).contains(port) else { return nil }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }
}
