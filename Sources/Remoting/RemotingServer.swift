import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A request processor: the codes it serves, how many requests may wait for it, how many it works
/// on at once, and the work. The work returns the answer, or nil when it answers later itself (a
/// long-polled pull) or the request was one-way.
public struct RemotingProcessor: Sendable {
    public var name: String
    public var codes: [Int32]
    /// Requests that may wait for a worker; one more is answered SYSTEM_BUSY (code 2).
    public var maxQueuedRequests: Int
    public var workers: Int
    public var handle: @Sendable (RemotingCommand, RemotingConnection) async -> RemotingCommand?
    /// Tried first, on the connection's event loop, for requests that need no task: it returns true
    /// when it took the request (and answers it later through the connection itself), false to
    /// queue it for `handle`. It must not block.
    public var inline: (@Sendable (RemotingCommand, RemotingConnection) -> Bool)?

    public init(name: String, codes: [Int32], maxQueuedRequests: Int, workers: Int = 1,
                inline: (@Sendable (RemotingCommand, RemotingConnection) -> Bool)? = nil,
                handle: @escaping @Sendable (RemotingCommand, RemotingConnection) async -> RemotingCommand?) {
        precondition(!codes.isEmpty, "a processor serves at least one code")
        precondition(maxQueuedRequests > 0, "maxQueuedRequests must be positive")
        precondition(workers > 0, "workers must be positive")
        self.name = name
        self.codes = codes
        self.maxQueuedRequests = maxQueuedRequests
        self.workers = workers
        self.inline = inline
        self.handle = handle
    }
}

/// How a server listens.
public struct RemotingServerOptions: Sendable {
    public var host: String
    public var port: Int
    /// Larger frames close the connection (RocketMQ's 16 MiB).
    public var maxFrameBytes = RemotingFrame.defaultMaxFrameBytes
    /// Requests this side sent on one connection that may wait for answers.
    public var maxPendingRequestsPerConnection = 65_536
    /// A connection with no traffic for this long is closed (RocketMQ's serverChannelMaxIdleTimeSeconds).
    public var idleTimeoutSeconds: Int64 = 120

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}

/// A RocketMQ remoting server: dispatches requests by code to processors with bounded queues. An
/// unknown code is answered REQUEST_CODE_NOT_SUPPORTED (3), a full queue SYSTEM_BUSY (2); bad frames
/// close their connection. `run()` serves until its task is cancelled.
public final class RemotingServer: Sendable {
    public let options: RemotingServerOptions
    private let dispatcher: QueueDispatcher
    private let group: any EventLoopGroup
    private let logger: Logger
    /// Accepted connections, closed when the server stops (as a process exit would close them).
    private let connections = ConnectionSet()

    public init(options: RemotingServerOptions, processors: [RemotingProcessor], group: any EventLoopGroup, logger: Logger) {
        var byCode: [Int32: Int] = [:]
        for (k, p) in processors.enumerated() {
            for code in p.codes {
                precondition(byCode[code] == nil, "request code \(code) has two processors")
                byCode[code] = k
            }
        }
        self.options = options
        self.dispatcher = QueueDispatcher(processorByCode: byCode, queues: processors.map(ProcessorQueue.init))
        self.group = group
        self.logger = logger
    }

    /// Binds, then serves until cancelled; `onBound` learns the bound address (port 0 picks one).
    public func run(onBound: @Sendable (SocketAddress) -> Void = { _ in }) async throws {
        let options = self.options
        let dispatcher = self.dispatcher
        let logger = self.logger
        let connections = self.connections
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                connections.add(channel)
                return channel.eventLoop.makeCompletedFuture {
                    try RemotingPipeline.add(to: channel, maxFrameBytes: options.maxFrameBytes,
                                             idleTimeoutSeconds: options.idleTimeoutSeconds, dispatcher: dispatcher,
                                             maxPendingRequests: options.maxPendingRequestsPerConnection, logger: logger)
                }
            }
            .bind(host: options.host, port: options.port)
            .get()
        if let address = server.localAddress { onBound(address) }
        await withTaskCancellationHandler {
            try? await server.closeFuture.get()
        } onCancel: {
            server.close(promise: nil)
            dispatcher.finish()
            connections.closeAll()
        }
        // The requests already taken are worked off and answered (or fail on their closed
        // connections) before the server is done, as a task group's children would be.
        dispatcher.finish()
        for q in dispatcher.queues { await q.drained() }
    }
}

/// One processor's running requests and the ones waiting for a worker. A request starts at once
/// when a worker is free and none waits; otherwise it waits, in arrival order, and a worker that
/// finishes takes the next waiting request before it ends (under load one task serves many in
/// turn). This replaced an AsyncStream per processor read by a loop that started a child task per
/// request: every request then cost two jobs on the task pool (the loop's resume and the child),
/// a stream buffer entry and a worker-slot handshake; now it costs one task, or none when it
/// waited (docs/performance.md).
final class ProcessorQueue: Sendable {
    private struct State {
        var running = 0
        var waiting = CircularBuffer<QueuedRequest>()
        var stopped = false
        var onDrained: [CheckedContinuation<Void, Never>] = []
        /// The running workers, cancelled at a stop (a long-polled pull then answers at once, as
        /// it did as a child of the server's task group).
        var workers: [UInt64: Task<Void, Never>] = [:]
        var nextWorker: UInt64 = 0
    }
    let processor: RemotingProcessor
    private let state = Mutex(State())

    init(_ processor: RemotingProcessor) { self.processor = processor }

    enum Admission { case started, queued, full, stopped }

    /// Starts `q`, queues it, or says why not (the caller answers it then).
    func submit(_ q: QueuedRequest) -> Admission {
        state.withLock { s -> Admission in
            if s.stopped { return .stopped }
            if s.running < processor.workers && s.waiting.isEmpty {
                s.running += 1
                let id = s.nextWorker
                s.nextWorker += 1
                // Made under the lock, so it is in `workers` before it can end and leave it.
                s.workers[id] = Task { [self] in
                    var next: QueuedRequest? = q
                    while let q = next {
                        if let answer = await processor.handle(q.request, q.connection) {
                            q.connection.respond(answer, to: q.request)
                        }
                        next = takeNext(worker: id)
                    }
                }
                return .started
            }
            guard s.waiting.count < processor.maxQueuedRequests else { return .full }
            s.waiting.append(q)
            return .queued
        }
    }

    /// Whether `stop` was called (requests are refused from then on).
    var isStopped: Bool { state.withLock { $0.stopped } }

    /// The next waiting request for a worker that finished one, or nil and the worker ends.
    private func takeNext(worker id: UInt64) -> QueuedRequest? {
        let (next, wake) = state.withLock { s -> (QueuedRequest?, [CheckedContinuation<Void, Never>]) in
            if let q = s.waiting.popFirst() { return (q, []) }
            s.running -= 1
            s.workers[id] = nil
            guard s.running == 0 else { return (nil, []) }
            defer { s.onDrained = [] }
            return (nil, s.onDrained)
        }
        for c in wake { c.resume() }
        return next
    }

    /// Takes no more requests and cancels the running ones; the waiting ones are still worked off.
    func stop() {
        let running = state.withLock { s -> [Task<Void, Never>] in
            s.stopped = true
            return Array(s.workers.values)
        }
        for t in running { t.cancel() }
    }

    /// Returns once no request runs or waits.
    func drained() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.running == 0 { return true }
                s.onDrained.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}

/// The open connections of a server.
final class ConnectionSet: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    func add(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        channels.withLock { $0[key] = channel }
        channel.closeFuture.whenComplete { [self] _ in _ = channels.withLock { $0.removeValue(forKey: key) } }
    }

    func closeAll() {
        for c in channels.withLock({ Array($0.values) }) { c.close(promise: nil) }
    }
}

struct QueuedRequest: Sendable {
    var request: RemotingCommand
    var connection: RemotingConnection
}

/// Hands each request to its processor, or answers at once.
final class QueueDispatcher: RemotingDispatcher {
    let processorByCode: [Int32: Int]
    let queues: [ProcessorQueue]

    init(processorByCode: [Int32: Int], queues: [ProcessorQueue]) {
        self.processorByCode = processorByCode
        self.queues = queues
    }

    func dispatch(_ request: RemotingCommand, from connection: RemotingConnection) {
        guard let k = processorByCode[request.code] else {
            connection.respond(.response(to: request, code: ResponseCode.requestCodeNotSupported,
                                         remark: " request type \(request.code) not supported"), to: request)
            return
        }
        if let inline = queues[k].processor.inline, !queues[k].isStopped, inline(request, connection) { return }
        switch queues[k].submit(QueuedRequest(request: request, connection: connection)) {
        case .started, .queued: break
        case .full:
            connection.respond(.response(to: request, code: ResponseCode.systemBusy,
                                         remark: "[REJECTREQUEST]system busy, start flow control for a while"), to: request)
        case .stopped:
            connection.respond(.response(to: request, code: ResponseCode.systemBusy, remark: "[SHUTDOWN]the server is stopping"), to: request)
        }
    }

    func finish() {
        for q in queues { q.stop() }
    }
}

/// The handlers of every remoting connection, server or client side.
enum RemotingPipeline {
    static func add(to channel: any Channel, maxFrameBytes: Int, idleTimeoutSeconds: Int64,
                    dispatcher: (any RemotingDispatcher)?, maxPendingRequests: Int, logger: Logger) throws {
        let ops = channel.pipeline.syncOperations
        // The connection's answers go to the encoder directly (`CoalescingFrameEncoder.append`).
        let encoder = CoalescingFrameEncoder()
        let handler = RemotingConnectionHandler(dispatcher: dispatcher, maxPendingRequests: maxPendingRequests, logger: logger,
                                                encoder: NIOLoopBound(encoder, eventLoop: channel.eventLoop))
        try ops.addHandler(IdleStateHandler(allTimeout: .seconds(idleTimeoutSeconds)))
        // The decoder hands commands to the handler directly (`RemotingFrameDecoder.sink`).
        try ops.addHandler(ByteToMessageHandler(RemotingFrameDecoder(maxFrameBytes: maxFrameBytes,
                                                                     sink: NIOLoopBound(handler, eventLoop: channel.eventLoop))))
        try ops.addHandler(encoder)
        try ops.addHandler(handler)
    }
}
