import Logging
import NIOCore
import Synchronization

/// Where a connection hands the requests it receives. Called on the connection's event loop; it
/// must not block (queue the work, answer later through the connection).
public protocol RemotingDispatcher: Sendable {
    func dispatch(_ request: RemotingCommand, from connection: RemotingConnection)
}

/// Why a request got no answer.
public enum RemotingCallError: Error, Sendable, Equatable, CustomStringConvertible {
    case timeout(milliseconds: Int64)
    case connectionClosed
    case connectFailed(address: String, reason: String)
    case tooManyPendingRequests(limit: Int)

    public var description: String {
        switch self {
        case .timeout(let ms): return "no response within \(ms) ms"
        case .connectionClosed: return "the connection closed before the response came"
        case .connectFailed(let a, let r): return "cannot connect to \(a): \(r)"
        case .tooManyPendingRequests(let l): return "more than \(l) requests are waiting for responses on this connection"
        }
    }
}

/// One remoting connection, either side. Requests and responses travel both ways over it, matched by
/// opaque (rocketmq-protocol.md §1.1). Thread-safe: every method may be called from anywhere.
public struct RemotingConnection: Sendable, Hashable {
    public let channel: any Channel
    private let coalescer: WriteCoalescer

    public init(channel: any Channel) {
        self.channel = channel
        coalescer = WriteCoalescer(encoder: nil)
    }

    /// A connection whose answers, written on its event loop, go to `encoder` directly.
    init(channel: any Channel, encoder: NIOLoopBound<CoalescingFrameEncoder>?) {
        self.channel = channel
        coalescer = WriteCoalescer(encoder: encoder)
    }

    public var remoteAddress: SocketAddress? { channel.remoteAddress }

    /// Sends an answer. Answers to one-way requests are never sent (§9 item 4).
    public func respond(_ response: RemotingCommand, to request: RemotingCommand) {
        precondition(response.isResponse, "respond: \(response.code) is not a response")
        guard !request.isOneway else { return }
        send(.response(response), promise: nil)
    }

    /// Writes `value` and flushes, once for every write queued to the event loop meanwhile: answers
    /// that complete together (a Raft commit answers many sends at once) leave in one write system
    /// call instead of one each (measured: a system call per answer was about 10 % of a leader's CPU).
    /// On the channel's own loop (the Raft driver shares the broker's first loop) the write happens at
    /// once and the flush in a task queued behind the current one, so the answers a commit completes
    /// in one driver job still share a flush.
    private func send(_ value: Outbound, promise: EventLoopPromise<Void>?) {
        let channel = self.channel
        let coalescer = self.coalescer
        if channel.eventLoop.inEventLoop {
            // One flush task for every run of writes on the loop, not one per write.
            if !coalescer.flushScheduled.exchange(true, ordering: .relaxed) {
                coalescer.queued.add(1, ordering: .relaxed)
                channel.eventLoop.execute {
                    coalescer.flushScheduled.store(false, ordering: .relaxed)
                    if coalescer.queued.subtract(1, ordering: .relaxed).newValue == 0 { channel.flush() }
                }
            }
            Self.write(value, promise: promise, to: channel, coalescer)
            return
        }
        coalescer.queued.add(1, ordering: .relaxed)
        channel.eventLoop.execute {
            Self.write(value, promise: promise, to: channel, coalescer)
            if coalescer.queued.subtract(1, ordering: .relaxed).newValue == 0 { channel.flush() }
        }
    }

    /// On the channel's event loop: an answer straight to the encoder when the pipeline has one
    /// (`CoalescingFrameEncoder.append`), anything else through the pipeline. Both keep the order
    /// of the calls: the pipeline's write reaches the encoder before it returns.
    private static func write(_ value: Outbound, promise: EventLoopPromise<Void>?, to channel: any Channel, _ coalescer: WriteCoalescer) {
        if promise == nil, case .response(let response) = value, let encoder = coalescer.encoder, encoder.value.append(response) { return }
        channel.write(value, promise: promise)
    }

    /// Sends a request and waits for its answer (the opaque is assigned here).
    public func request(_ command: RemotingCommand, timeoutMilliseconds: Int64) async throws(RemotingCallError) -> RemotingCommand {
        precondition(!command.isResponse && !command.isOneway, "request: use oneway() for one-way commands")
        let promise = channel.eventLoop.makePromise(of: RemotingCommand.self)
        // A channel that closed after the caller got it fails the write before any handler sees the
        // request, so nothing would ever complete `promise` (a writer hung forever this way when a
        // killed leader's connection reset). A failed write fails the request; completing a promise
        // the handler already completed is a no-op.
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { _ in promise.fail(RemotingCallError.connectionClosed) }
        send(.request(OutboundRequest(command: command, promise: promise, timeoutMilliseconds: timeoutMilliseconds)), promise: written)
        do {
            return try await promise.futureResult.get()
        } catch let e as RemotingCallError {
            throw e
        } catch {
            throw .connectionClosed
        }
    }

    /// Sends a one-way request: no answer comes.
    public func oneway(_ command: RemotingCommand) {
        var c = command
        c.flag |= RemotingCommand.onewayFlag
        send(.request(OutboundRequest(command: c, promise: nil, timeoutMilliseconds: 0)), promise: nil)
    }

    /// Sends several one-way requests with one hop to the event loop and one flush (one write
    /// system call for all of them when the socket takes them).
    /// On the connection's event loop they are written at once, so writes of one thread keep their
    /// order.
    public func oneway(batch commands: [RemotingCommand]) {
        guard !commands.isEmpty else { return }
        let channel = self.channel
        let write: @Sendable () -> Void = {
            for command in commands {
                var c = command
                c.flag |= RemotingCommand.onewayFlag
                channel.write(Outbound.request(OutboundRequest(command: c, promise: nil, timeoutMilliseconds: 0)), promise: nil)
            }
            channel.flush()
        }
        if channel.eventLoop.inEventLoop { write() } else { channel.eventLoop.execute(write) }
    }

    public static func == (a: RemotingConnection, b: RemotingConnection) -> Bool { a.channel === b.channel }
    public func hash(into h: inout Hasher) { h.combine(ObjectIdentifier(channel)) }
}

/// Writes queued to one connection's event loop and not yet written, and flush tasks queued there:
/// the last of them flushes. Writes made on the loop itself share one flush task (`flushScheduled`,
/// read and written only on the loop).
final class WriteCoalescer: Sendable {
    let queued = Atomic<Int>(0)
    let flushScheduled = Atomic<Bool>(false)
    /// The pipeline's encoder, for answers written on the loop (nil: through the pipeline).
    let encoder: NIOLoopBound<CoalescingFrameEncoder>?

    init(encoder: NIOLoopBound<CoalescingFrameEncoder>?) { self.encoder = encoder }
}

/// What a connection writes: an answer, or a request (numbered by the handler as it goes out).
enum Outbound: Sendable {
    case response(RemotingCommand)
    case request(OutboundRequest)
}

/// A request on its way out, with the promise its answer completes.
struct OutboundRequest: Sendable {
    var command: RemotingCommand
    var promise: EventLoopPromise<RemotingCommand>?
    var timeoutMilliseconds: Int64
}

/// The per-connection state machine: assigns opaques to outgoing requests, matches responses to
/// them, times them out, and hands incoming requests to the dispatcher. Confined to its event loop.
final class RemotingConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = RemotingCommand
    typealias OutboundIn = Outbound
    /// Passed on as it came (an answer's is not boxed again); a request numbered.
    typealias OutboundOut = Outbound

    private let dispatcher: (any RemotingDispatcher)?
    private let maxPendingRequests: Int
    private let logger: Logger
    private var nextOpaque: Int32 = 0
    private var pending: [Int32: (promise: EventLoopPromise<RemotingCommand>, timeout: Scheduled<Void>?)] = [:]
    private var loggedError = false
    private var connection: RemotingConnection?

    private let encoder: NIOLoopBound<CoalescingFrameEncoder>?

    init(dispatcher: (any RemotingDispatcher)?, maxPendingRequests: Int, logger: Logger,
         encoder: NIOLoopBound<CoalescingFrameEncoder>? = nil) {
        precondition(maxPendingRequests > 0, "maxPendingRequests must be positive")
        self.dispatcher = dispatcher
        self.maxPendingRequests = maxPendingRequests
        self.logger = logger
        self.encoder = encoder
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received(unwrapInboundIn(data), on: context.channel)
    }

    /// A decoded command: from `channelRead`, or straight from the pipeline's frame decoder
    /// (`RemotingFrameDecoder`'s sink), on the channel's event loop.
    func received(_ command: RemotingCommand, on channel: any Channel) {
        if command.isResponse {
            // A response nobody waits for any more (it timed out) is dropped.
            if let p = pending.removeValue(forKey: command.opaque) {
                p.timeout?.cancel()
                p.promise.succeed(command)
            }
            return
        }
        guard let dispatcher else {
            if !command.isOneway {
                // From the pipeline's tail: through this handler's `write`, which passes answers on.
                channel.writeAndFlush(Outbound.response(.response(to: command, code: ResponseCode.requestCodeNotSupported,
                                                                  remark: " request type \(command.code) not supported")), promise: nil)
            }
            return
        }
        // One connection value per channel, so that every answer on it shares one coalescer.
        let connection = self.connection ?? RemotingConnection(channel: channel, encoder: encoder)
        self.connection = connection
        dispatcher.dispatch(command, from: connection)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request: OutboundRequest
        switch unwrapOutboundIn(data) {
        case .response:
            context.write(data, promise: promise)
            return
        case .request(let r):
            request = r
        }
        var command = request.command
        // Opaques count up per connection (Go starts at 1 too); the sign bit stays clear (as C++).
        nextOpaque = nextOpaque == Int32.max ? 1 : nextOpaque + 1
        command.opaque = nextOpaque
        if let p = request.promise {
            guard pending.count < maxPendingRequests else {
                p.fail(RemotingCallError.tooManyPendingRequests(limit: maxPendingRequests))
                promise?.succeed()
                return
            }
            let opaque = command.opaque
            let ms = request.timeoutMilliseconds
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            let timeout = context.eventLoop.scheduleTask(in: .milliseconds(ms)) { () -> Void in
                bound.value.pending.removeValue(forKey: opaque)?.promise.fail(RemotingCallError.timeout(milliseconds: ms))
            }
            pending[opaque] = (p, timeout)
        }
        context.write(wrapOutboundOut(.request(OutboundRequest(command: command, promise: nil, timeoutMilliseconds: 0))), promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failPending()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Bad bytes from a peer: say so once, and close. Never trap.
        if !loggedError {
            loggedError = true
            logger.warning("closing remoting connection", metadata: [
                "peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")", "error": "\(error)",
            ])
        }
        failPending()
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .all {
            // RocketMQ closes a channel idle for serverChannelMaxIdleTimeSeconds.
            logger.debug("closing idle remoting connection", metadata: ["peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")"])
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func failPending() {
        let all = pending
        pending.removeAll()
        for (_, p) in all {
            p.timeout?.cancel()
            p.promise.fail(RemotingCallError.connectionClosed)
        }
    }
}
