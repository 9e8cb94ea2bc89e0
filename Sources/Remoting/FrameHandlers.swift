import NIOCore

/// Cuts the inbound byte stream into commands. A frame over the limit or one that cannot be a
/// command is an error (the pipeline closes the connection); nothing on the wire can make it trap.
public struct RemotingFrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = RemotingCommand
    public let maxFrameBytes: Int
    /// In a remoting pipeline (`RemotingPipeline`), the connection handler at its end: decoded
    /// commands are handed to it directly instead of through `fireChannelRead`, whose `NIOAny`
    /// boxes a command (larger than its three inline words) in an allocation of its own, one per
    /// request a leader reads (docs/performance.md, fourteenth round). The handlers between them
    /// (the encoder) are outbound only, so nothing inbound is skipped.
    private let sink: NIOLoopBound<RemotingConnectionHandler>?

    public init(maxFrameBytes: Int = RemotingFrame.defaultMaxFrameBytes) {
        precondition(maxFrameBytes > 8, "maxFrameBytes must leave room for a header")
        self.maxFrameBytes = maxFrameBytes
        self.sink = nil
    }

    init(maxFrameBytes: Int, sink: NIOLoopBound<RemotingConnectionHandler>) {
        precondition(maxFrameBytes > 8, "maxFrameBytes must leave room for a header")
        self.maxFrameBytes = maxFrameBytes
        self.sink = sink
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let command = try RemotingFrame.decode(&buffer, maxFrameBytes: maxFrameBytes) else { return .needMoreData }
        if let sink {
            sink.value.received(command, on: context.channel)
        } else {
            context.fireChannelRead(Self.wrapInboundOut(command))
        }
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A partial frame at EOF is dropped: the peer went away mid-frame.
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// Writes commands as frames, every frame written before a flush into one buffer: a leader's
/// answers to the sends one commit completes, or a batch of Raft messages, leave as one buffer, one
/// entry of the channel's write queue and one promise for the handlers before it (NIO's
/// MessageToByteHandler allocates a buffer per frame, and the idle handler a promise per buffer:
/// measured, about 4 of a leader's 36 mallocs per message). The buffer is handed on early when it
/// grows past `handOnBytes`, so a long run of writes without a flush does not hold it all.
final class CoalescingFrameEncoder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = Outbound
    typealias OutboundOut = ByteBuffer
    static let handOnBytes = 256 << 10

    private var buffer: ByteBuffer?
    /// The promise the buffer's write completes; the other writes' promises follow it.
    private var promise: EventLoopPromise<Void>?
    /// Its place in the pipeline while it is in one (for `append`).
    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let command: RemotingCommand
        switch unwrapOutboundIn(data) {
        case .response(let c): command = c
        case .request(let r): command = r.command
        }
        // The promise first: the encode may hand the buffer on, and this write's bytes are in it.
        if let promise {
            if let first = self.promise { first.futureResult.cascade(to: promise) } else { self.promise = promise }
        }
        encode(command, context: context)
    }

    /// Writes an answer (no promise) as `write` would, without the trip from the pipeline's tail:
    /// no `NIOAny` box for the command (larger than its inline words), no casts out of it, and no
    /// handler between (the connection handler passes answers on untouched). For the connection's
    /// own writes on its event loop (`RemotingConnection.respond`); the flush still goes through
    /// the pipeline. False when the encoder is not in a pipeline any more (the caller writes through
    /// the channel, which fails or drops it as it would any write after a close).
    func append(_ response: RemotingCommand) -> Bool {
        guard let context else { return false }
        encode(response, context: context)
        return true
    }

    private func encode(_ command: RemotingCommand, context: ChannelHandlerContext) {
        // Taken out while it is written to, so the write never copies it.
        var b = buffer ?? context.channel.allocator.buffer(capacity: 1024)
        buffer = nil
        RemotingFrame.encode(command, into: &b)
        buffer = b
        if b.readableBytes >= Self.handOnBytes { handOn(context: context) }
    }

    func flush(context: ChannelHandlerContext) {
        handOn(context: context)
        context.flush()
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // Written before the close: the channel fails or drops them as it would have unbuffered.
        handOn(context: context)
        context.close(mode: mode, promise: promise)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        handOn(context: context)
        self.context = nil
    }

    private func handOn(context: ChannelHandlerContext) {
        guard let b = buffer else { return }
        let p = promise
        buffer = nil
        promise = nil
        context.write(wrapOutboundOut(b), promise: p)
    }
}
