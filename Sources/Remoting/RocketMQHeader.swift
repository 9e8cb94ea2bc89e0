import NIOCore

/// The ROCKETMQ binary header (rocketmq-protocol.md §1.4): code int16, language byte, version int16,
/// opaque int32, flag int32, remark (int32 length + UTF-8), extFields (int32 length, then repeated
/// int16 key length + key, int32 value length + value). Big-endian.
enum RocketMQHeader {
    static let fixedBytes = 21

    static func write(_ c: RemotingCommand, into out: inout ByteBuffer) {
        out.writeInteger(Int16(truncatingIfNeeded: c.code))
        out.writeInteger(c.language.rawValue)
        out.writeInteger(Int16(truncatingIfNeeded: c.version))
        out.writeInteger(c.opaque)
        out.writeInteger(c.flag)
        if let remark = c.remark, !remark.isEmpty {
            out.writeInteger(Int32(remark.utf8.count))
            out.writeString(remark)
        } else {
            out.writeInteger(Int32(0))
        }
        let lengthAt = out.writerIndex
        out.writeInteger(Int32(0))
        let fields = c.extFields.dictionary
        for key in fields.keys.sorted() {
            let value = fields[key]!
            out.writeInteger(Int16(key.utf8.count))
            out.writeString(key)
            out.writeInteger(Int32(value.utf8.count))
            out.writeString(value)
        }
        out.setInteger(Int32(out.writerIndex - lengthAt - 4), at: lengthAt)
    }

    static func read(_ header: inout ByteBuffer) throws(RemotingError) -> RemotingCommand {
        guard header.readableBytes >= fixedBytes,
              let code = header.readInteger(as: Int16.self),
              let languageByte = header.readInteger(as: UInt8.self),
              let version = header.readInteger(as: Int16.self),
              let opaque = header.readInteger(as: Int32.self),
              let flag = header.readInteger(as: Int32.self),
              let remarkLength = header.readInteger(as: Int32.self)
        else { throw .malformedHeader("a ROCKETMQ header is at least \(fixedBytes) bytes") }
        guard remarkLength >= 0, Int(remarkLength) <= header.readableBytes,
              let remark = header.readString(length: Int(remarkLength))
        else { throw .malformedHeader("remark length \(remarkLength) runs past the header") }
        guard let extLength = header.readInteger(as: Int32.self), extLength >= 0, Int(extLength) == header.readableBytes
        else { throw .malformedHeader("extFields length does not match the rest of the header") }
        var ext: [String: String] = [:]
        while header.readableBytes > 0 {
            guard let keyLength = header.readInteger(as: Int16.self), keyLength >= 0,
                  let key = header.readString(length: Int(keyLength)),
                  let valueLength = header.readInteger(as: Int32.self), valueLength >= 0,
                  Int(valueLength) <= header.readableBytes,
                  let value = header.readString(length: Int(valueLength))
            else { throw .malformedHeader("an extFields entry runs past the header") }
            ext[key] = value
        }
        return RemotingCommand(code: Int32(code), language: LanguageCode(rawValue: languageByte) ?? .other,
                               version: Int32(version), opaque: opaque, flag: flag,
                               remark: remarkLength == 0 ? nil : remark, extFields: ExtFields(ext), serializeType: .rocketmq)
    }
}

/// The frame: int32 length of what follows, then one byte of serialize type and 24 bits of header
/// length, the header, the body (rocketmq-protocol.md §1.2).
public enum RemotingFrame {
    /// RocketMQ's default frame limit (`com.rocketmq.remoting.frameMaxLength`).
    public static let defaultMaxFrameBytes = 16 << 20
    static let maxHeaderBytes = (1 << 24) - 1

    /// Appends `command` as one frame. The ROCKETMQ header holds a code in 16 bits; a command whose
    /// code does not fit (DLedger's 50000s) goes with a JSON header instead, as DLedger sends them.
    public static func encode(_ command: RemotingCommand, into out: inout ByteBuffer) {
        let start = out.writerIndex
        out.writeInteger(Int32(0))  // length, patched below
        out.writeInteger(UInt32(0))  // type and header length, patched below
        let headerStart = out.writerIndex
        let type: SerializeType = command.serializeType == .rocketmq && Int16(exactly: command.code) == nil ? .json : command.serializeType
        switch type {
        case .json: JSONHeader.write(command, into: &out)
        case .rocketmq: RocketMQHeader.write(command, into: &out)
        }
        let headerLength = out.writerIndex - headerStart
        precondition(headerLength <= maxHeaderBytes, "a header of \(headerLength) bytes does not fit 24 bits")
        if var body = command.body { out.writeBuffer(&body) }
        out.setInteger(Int32(out.writerIndex - start - 4), at: start)
        out.setInteger(UInt32(type.rawValue) << 24 | UInt32(headerLength), at: start + 4)
    }

    /// Takes one whole frame off the front of `buffer`, or returns nil (consuming nothing) when the
    /// frame is not complete yet. Throws on a frame that can never be valid.
    public static func decode(_ buffer: inout ByteBuffer, maxFrameBytes: Int = defaultMaxFrameBytes) throws(RemotingError) -> RemotingCommand? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: Int32.self) else { return nil }
        guard length >= 4 else { throw .malformedFrame("length \(length) is less than the 4 bytes of the header length") }
        guard Int(length) + 4 <= maxFrameBytes else { throw .frameTooLarge(bytes: Int(length) + 4, limit: maxFrameBytes) }
        guard buffer.readableBytes >= Int(length) + 4 else { return nil }
        buffer.moveReaderIndex(forwardBy: 4)
        var frame = buffer.readSlice(length: Int(length))!
        return try decodeFrame(&frame)
    }

    /// Decodes the bytes after the length field.
    static func decodeFrame(_ frame: inout ByteBuffer) throws(RemotingError) -> RemotingCommand {
        let word = frame.readInteger(as: UInt32.self)!
        guard let type = SerializeType(rawValue: UInt8(word >> 24)) else {
            throw .malformedFrame("unknown serialize type \(word >> 24)")
        }
        let headerLength = Int(word & 0xFF_FFFF)
        guard headerLength <= frame.readableBytes else {
            throw .malformedFrame("header length \(headerLength) runs past the frame (\(frame.readableBytes) bytes)")
        }
        var header = frame.readSlice(length: headerLength)!
        var command: RemotingCommand
        switch type {
        case .json: command = try JSONHeader.read(header, ownFields: frame.readableBytes == 0)
        case .rocketmq: command = try RocketMQHeader.read(&header)
        }
        command.body = frame.readableBytes > 0 ? frame.readSlice(length: frame.readableBytes) : nil
        return command
    }
}
