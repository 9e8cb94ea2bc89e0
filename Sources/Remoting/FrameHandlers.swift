import NIOCore

/// Cuts the inbound byte stream into commands. A frame over the limit or one that cannot be a
/// command is an error (the pipeline closes the connection); nothing on the wire can make it trap.
public struct RemotingFrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = RemotingCommand
    public let maxFrameBytes: Int

    public init(maxFrameBytes: Int = RemotingFrame.defaultMaxFrameBytes) {
        precondition(maxFrameBytes > 8, "maxFrameBytes must leave room for a header")
        self.maxFrameBytes = maxFrameBytes
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let command = try RemotingFrame.decode(&buffer, maxFrameBytes: maxFrameBytes) else { return .needMoreData }
        context.fireChannelRead(Self.wrapInboundOut(command))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A partial frame at EOF is dropped: the peer went away mid-frame.
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// Writes commands as frames.
public struct RemotingFrameEncoder: MessageToByteEncoder, Sendable {
    public typealias OutboundIn = RemotingCommand
    public init() {}
    public func encode(data: RemotingCommand, out: inout ByteBuffer) throws {
        RemotingFrame.encode(data, into: &out)
    }
}
