import NIOCore
import Replication

/// Raft peer message decoding: any bytes give a message or a DecodeError, within the limits.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let buffer = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    _ = try? RaftWire.decode(buffer)
    return 0
}
