import NIOCore
import Remoting

/// The remoting frame decoder with its JSON and ROCKETMQ headers: any bytes, taken as a stream of
/// frames, decode or throw a RemotingError; a decoded command encodes and decodes to itself, and its
/// extFields read as text (one lookup, the walk) give what their dictionary holds.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var buffer = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    while true {
        let command: RemotingCommand?
        do { command = try RemotingFrame.decode(&buffer, maxFrameBytes: 1 << 20) } catch { break }
        guard let command else { break }
        let fields = command.extFields.dictionary
        var walked: [String: String] = [:]
        command.extFields.forEachField { name, value in
            if let v = value() { walked[String(decoding: name, as: UTF8.self)] = v }
        }
        guard walked == fields, fields.allSatisfy({ command.extFields[$0.key] == $0.value }) else {
            fatalError("extFields read from the text disagree with their dictionary: \(command)")
        }
        var again = ByteBuffer()
        RemotingFrame.encode(command, into: &again)
        guard let decoded = try? RemotingFrame.decode(&again), decoded.code == command.code, decoded.extFields == command.extFields,
              decoded.opaque == command.opaque, decoded.body?.readableBytes == command.body?.readableBytes else {
            fatalError("a decoded command does not survive encode + decode: \(command)")
        }
    }
    return 0
}
