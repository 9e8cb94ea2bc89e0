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

    public init(name: String, codes: [Int32], maxQueuedRequests: Int, workers: Int = 1,
                handle: @escaping @Sendable (RemotingCommand, RemotingConnection) async -> RemotingCommand?) {
        precondition(!codes.isEmpty, "a processor serves at least one code")
        precondition(maxQueuedRequests > 0, "maxQueuedRequests must be positive")
        precondition(workers > 0, "workers must be positive")
        self.name = name
        self.codes = codes
        self.maxQueuedRequests = maxQueuedRequests
        self.workers = workers
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
    private let processors: [RemotingProcessor]
    private let dispatcher: QueueDispatcher
    private let streams: [AsyncStream<QueuedRequest>]
    private let group: any EventLoopGroup
    private let logger: Logger
    /// Accepted connections, closed when the server stops (as a process exit would close them).
    private let connections = ConnectionSet()

    public init(options: RemotingServerOptions, processors: [RemotingProcessor], group: any EventLoopGroup, logger: Logger) {
        var byCode: [Int32: Int] = [:]
        var continuations: [AsyncStream<QueuedRequest>.Continuation] = []
        var streams: [AsyncStream<QueuedRequest>] = []
        for (k, p) in processors.enumerated() {
            for code in p.codes {
                precondition(byCode[code] == nil, "request code \(code) has two processors")
                byCode[code] = k
            }
            let (stream, continuation) = AsyncStream.makeStream(of: QueuedRequest.self, bufferingPolicy: .bufferingOldest(p.maxQueuedRequests))
            streams.append(stream)
            continuations.append(continuation)
        }
        self.options = options
        self.processors = processors
        self.streams = streams
        self.dispatcher = QueueDispatcher(processorByCode: byCode, queues: continuations)
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
            await withDiscardingTaskGroup { group in
                for (k, p) in processors.enumerated() {
                    let stream = streams[k]
                    // One consumer per queue (an AsyncStream has one reader), running up to
                    // `workers` requests at once.
                    group.addTask {
                        // A discarding group: a finished request's task is freed at once. (A plain
                        // group keeps every finished child until it is awaited; reaping only when all
                        // `workers` were busy held up to 8,192 finished sends, about 80 MiB of a
                        // leader's memory under load.)
                        let slots = WorkerSlots(p.workers)
                        await withDiscardingTaskGroup { running in
                            var queue = stream.makeAsyncIterator()
                            while true {
                                // Take the next request only when a worker is free, so the queue's
                                // limit is what waits: a request held here would be one too many.
                                await slots.acquire()
                                guard let q = await queue.next() else { break }
                                running.addTask {
                                    if let answer = await p.handle(q.request, q.connection) {
                                        q.connection.respond(answer, to: q.request)
                                    }
                                    slots.release()
                                }
                            }
                        }
                    }
                }
                group.addTask { try? await server.closeFuture.get() }
            }
        } onCancel: {
            server.close(promise: nil)
            dispatcher.finish()
            connections.closeAll()
        }
    }
}

/// How many of a processor's workers are free; its one consumer loop waits in `acquire` for one.
final class WorkerSlots: Sendable {
    private struct State {
        var free: Int
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(free: count)) }

    /// Takes a free worker, waiting for one (one caller at a time).
    func acquire() async {
        while true {
            if state.withLock({ s -> Bool in
                guard s.free > 0 else { return false }
                s.free -= 1
                return true
            }) { return }
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    if s.free > 0 { return true }
                    s.waiter = c
                    return false
                }
                if now { c.resume() }
            }
        }
    }

    func release() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.free += 1
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume()
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

/// Puts each request in its processor's bounded queue, or answers at once.
final class QueueDispatcher: RemotingDispatcher {
    let processorByCode: [Int32: Int]
    let queues: [AsyncStream<QueuedRequest>.Continuation]

    init(processorByCode: [Int32: Int], queues: [AsyncStream<QueuedRequest>.Continuation]) {
        self.processorByCode = processorByCode
        self.queues = queues
    }

    func dispatch(_ request: RemotingCommand, from connection: RemotingConnection) {
        guard let k = processorByCode[request.code] else {
            connection.respond(.response(to: request, code: ResponseCode.requestCodeNotSupported,
                                         remark: " request type \(request.code) not supported"), to: request)
            return
        }
        switch queues[k].yield(QueuedRequest(request: request, connection: connection)) {
        case .enqueued: break
        case .dropped:
            connection.respond(.response(to: request, code: ResponseCode.systemBusy,
                                         remark: "[REJECTREQUEST]system busy, start flow control for a while"), to: request)
        case .terminated:
            connection.respond(.response(to: request, code: ResponseCode.systemBusy, remark: "[SHUTDOWN]the server is stopping"), to: request)
        @unknown default:
            connection.respond(.response(to: request, code: ResponseCode.systemBusy), to: request)
        }
    }

    func finish() {
        for q in queues { q.finish() }
    }
}

/// The handlers of every remoting connection, server or client side.
enum RemotingPipeline {
    static func add(to channel: any Channel, maxFrameBytes: Int, idleTimeoutSeconds: Int64,
                    dispatcher: (any RemotingDispatcher)?, maxPendingRequests: Int, logger: Logger) throws {
        let ops = channel.pipeline.syncOperations
        try ops.addHandler(IdleStateHandler(allTimeout: .seconds(idleTimeoutSeconds)))
        try ops.addHandler(ByteToMessageHandler(RemotingFrameDecoder(maxFrameBytes: maxFrameBytes)))
        try ops.addHandler(MessageToByteHandler(RemotingFrameEncoder()))
        try ops.addHandler(RemotingConnectionHandler(dispatcher: dispatcher, maxPendingRequests: maxPendingRequests, logger: logger))
    }
}
