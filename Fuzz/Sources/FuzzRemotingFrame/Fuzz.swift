import NIOCore
import Remoting

/// The remoting frame decoder with its JSON and ROCKETMQ headers: any bytes, taken as a stream of
/// frames, decode or throw a RemotingError; a decoded command encodes and decodes to itself.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var buffer = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    while true {
        let command: RemotingCommand?
        do { command = try RemotingFrame.decode(&buffer, maxFrameBytes: 1 << 20) } catch { break }
        guard let command else { break }
        var again = ByteBuffer()
        RemotingFrame.encode(command, into: &again)
        guard let decoded = try? RemotingFrame.decode(&again), decoded.code == command.code, decoded.extFields == command.extFields,
              decoded.opaque == command.opaque, decoded.body?.readableBytes == command.body?.readableBytes else {
            fatalError("a decoded command does not survive encode + decode: \(command)")
        }
    }
    return 0
}
