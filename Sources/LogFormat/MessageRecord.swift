/// A host and port as RocketMQ stores them: IPv4 (4 + 4 bytes) or IPv6 (16 + 4 bytes).
public enum MessageHost: Equatable, Sendable, CustomStringConvertible {
    case v4(address: (UInt8, UInt8, UInt8, UInt8), port: UInt32)
    case v6(address: [UInt8], port: UInt32)

    public static func == (a: Self, b: Self) -> Bool {
        switch (a, b) {
        case let (.v4(x, p), .v4(y, q)): return x == y && p == q
        case let (.v6(x, p), .v6(y, q)): return x == y && p == q
        default: return false
        }
    }

    var byteCount: Int {
        switch self {
        case .v4: return 8
        case .v6: return 20
        }
    }

    var isV6: Bool { if case .v6 = self { return true } else { return false } }

    public var port: UInt32 {
        switch self {
        case let .v4(_, port), let .v6(_, port): return port
        }
    }

    public var description: String {
        switch self {
        case let .v4(a, port): return "\(a.0).\(a.1).\(a.2).\(a.3):\(port)"
        case let .v6(a, port):
            let groups = stride(from: 0, to: 16, by: 2).map { String(UInt16(a[$0]) << 8 | UInt16(a[$0 + 1]), radix: 16) }
            return "[\(groups.joined(separator: ":"))]:\(port)"
        }
    }

    fileprivate func encode(into out: inout [UInt8]) {
        switch self {
        case let .v4(a, port):
            out.append(contentsOf: [a.0, a.1, a.2, a.3])
            out.appendBigEndian(port)
        case let .v6(a, port):
            precondition(a.count == 16, "IPv6 address must be 16 bytes")
            out.append(contentsOf: a)
            out.appendBigEndian(port)
        }
    }
}

/// The RocketMQ 4.9 commitlog message record, byte for byte (`CommitLog.calMsgLength`,
/// `MessageDecoder`), IPv4 layout shown; each IPv6 host adds 12 bytes and shifts later fields:
///
/// TOTALSIZE(4) MAGICCODE(4)=0xDAA320A7 BODYCRC(4) QUEUEID(4) FLAG(4) QUEUEOFFSET(8)
/// PHYSICALOFFSET(8) SYSFLAG(4) BORNTIMESTAMP(8) BORNHOST(8|20) STORETIMESTAMP(8)
/// STOREHOSTADDRESS(8|20) RECONSUMETIMES(4) PREPAREDTRANSACTIONOFFSET(8) BODYLENGTH(4) BODY
/// TOPICLENGTH(1) TOPIC PROPERTIESLENGTH(2) PROPERTIES
public struct MessageRecord: Equatable, Sendable {
    public static let magic: UInt32 = 0xDAA3_20A7
    /// The classic commitlog's end-of-file filler magic (`BLANK_MAGIC_CODE`).
    public static let blankMagic: UInt32 = 0xCBD4_3194
    /// Byte offsets patched after encoding, under the broker's put lock.
    public static let queueOffsetFieldOffset = 20
    public static let physicalOffsetFieldOffset = 28
    /// sysFlag bits for IPv6 hosts.
    public static let bornHostV6Flag: Int32 = 0x10
    public static let storeHostV6Flag: Int32 = 0x20
    public static let topicBytesMax = 127

    public var bodyCRC: UInt32
    public var queueId: Int32
    public var flag: Int32
    public var queueOffset: Int64
    public var physicalOffset: Int64
    /// Message sysFlag; the IPv6 bits are derived from the hosts when encoding.
    public var sysFlag: Int32
    public var bornTimestamp: Int64
    public var bornHost: MessageHost
    public var storeTimestamp: Int64
    public var storeHost: MessageHost
    public var reconsumeTimes: Int32
    public var preparedTransactionOffset: Int64
    public var body: [UInt8]
    public var topic: String
    public var properties: MessageProperties

    public init(
        queueId: Int32, flag: Int32 = 0, queueOffset: Int64 = 0, physicalOffset: Int64 = 0, sysFlag: Int32 = 0,
        bornTimestamp: Int64, bornHost: MessageHost, storeTimestamp: Int64, storeHost: MessageHost,
        reconsumeTimes: Int32 = 0, preparedTransactionOffset: Int64 = 0, body: [UInt8], topic: String,
        properties: MessageProperties = MessageProperties(), bodyCRC: UInt32? = nil
    ) {
        self.queueId = queueId
        self.flag = flag
        self.queueOffset = queueOffset
        self.physicalOffset = physicalOffset
        self.sysFlag = sysFlag
        self.bornTimestamp = bornTimestamp
        self.bornHost = bornHost
        self.storeTimestamp = storeTimestamp
        self.storeHost = storeHost
        self.reconsumeTimes = reconsumeTimes
        self.preparedTransactionOffset = preparedTransactionOffset
        self.body = body
        self.topic = topic
        self.properties = properties
        self.bodyCRC = bodyCRC ?? body.withUnsafeBytes { CRC32IEEE.rocketMQBodyCRC($0) }
    }

    /// sysFlag as stored: the caller's bits with the IPv6 host bits set from the hosts.
    public var storedSysFlag: Int32 {
        var f = sysFlag & ~(Self.bornHostV6Flag | Self.storeHostV6Flag)
        if bornHost.isV6 { f |= Self.bornHostV6Flag }
        if storeHost.isV6 { f |= Self.storeHostV6Flag }
        return f
    }

    /// Encodes the record. Throws for a topic that does not fit its 1-byte length, properties over
    /// 32767 bytes, or property text containing separator bytes.
    public func encoded() throws(LogFormatError) -> [UInt8] {
        let propertyBytes = try properties.encoded()
        let result = body.withUnsafeBytes { b in
            propertyBytes.withUnsafeBytes { p in Result { () throws(LogFormatError) -> [UInt8] in
                var out: [UInt8] = []
                try Self.encode(bodyCRC: bodyCRC, queueId: queueId, flag: flag, queueOffset: queueOffset, physicalOffset: physicalOffset,
                                sysFlag: storedSysFlag, bornTimestamp: bornTimestamp, bornHost: bornHost, storeTimestamp: storeTimestamp,
                                storeHost: storeHost, reconsumeTimes: reconsumeTimes, preparedTransactionOffset: preparedTransactionOffset,
                                body: b, topic: topic, propertyBytes: p, into: &out)
                return out
            } }
        }
        return try result.get()
    }

    /// A record encoded straight from its parts, the body and the encoded properties as bytes
    /// (the broker's send path, which has both as bytes already): the same bytes as
    /// `MessageRecord(...).encoded()` with properties that encode to `propertyBytes`. `bodyCRC`
    /// (RocketMQ's, `CRC32IEEE.rocketMQBodyCRC`) is computed here unless given; `queueOffset` is
    /// written in place (the send path encodes a record once it is numbered).
    public static func encoded(queueId: Int32, flag: Int32, queueOffset: Int64 = 0, sysFlag: Int32, bornTimestamp: Int64, bornHost: MessageHost,
                               storeTimestamp: Int64, storeHost: MessageHost, reconsumeTimes: Int32,
                               body: UnsafeRawBufferPointer, bodyCRC: UInt32? = nil, topic: String,
                               propertyBytes: UnsafeRawBufferPointer) throws(LogFormatError) -> [UInt8] {
        var out: [UInt8] = []
        try append(queueId: queueId, flag: flag, queueOffset: queueOffset, sysFlag: sysFlag, bornTimestamp: bornTimestamp, bornHost: bornHost,
                   storeTimestamp: storeTimestamp, storeHost: storeHost, reconsumeTimes: reconsumeTimes, body: body, bodyCRC: bodyCRC,
                   topic: topic, propertyBytes: propertyBytes, to: &out)
        return out
    }

    /// `encoded(...)`, appended to `out` (several records of one entry built in one buffer); `out`
    /// is unchanged when it throws.
    public static func append(queueId: Int32, flag: Int32, queueOffset: Int64 = 0, sysFlag: Int32, bornTimestamp: Int64, bornHost: MessageHost,
                              storeTimestamp: Int64, storeHost: MessageHost, reconsumeTimes: Int32,
                              body: UnsafeRawBufferPointer, bodyCRC: UInt32? = nil, topic: String,
                              propertyBytes: UnsafeRawBufferPointer, to out: inout [UInt8]) throws(LogFormatError) {
        var f = sysFlag & ~(bornHostV6Flag | storeHostV6Flag)
        if bornHost.isV6 { f |= bornHostV6Flag }
        if storeHost.isV6 { f |= storeHostV6Flag }
        try encode(bodyCRC: bodyCRC ?? CRC32IEEE.rocketMQBodyCRC(body), queueId: queueId, flag: flag, queueOffset: queueOffset, physicalOffset: 0,
                   sysFlag: f, bornTimestamp: bornTimestamp, bornHost: bornHost, storeTimestamp: storeTimestamp,
                   storeHost: storeHost, reconsumeTimes: reconsumeTimes, preparedTransactionOffset: 0,
                   body: body, topic: topic, propertyBytes: propertyBytes, into: &out)
    }

    /// The size of the record with these parts, or why they do not make one: a topic that does not
    /// fit its 1-byte length, properties over 32767 bytes, a record over 2 GiB. `encoded` succeeds
    /// exactly when this does.
    public static func encodedSize(bornHost: MessageHost, storeHost: MessageHost, bodyBytes: Int, topic: String,
                                   propertyBytes: Int) throws(LogFormatError) -> Int {
        let topicCount = topic.utf8.count
        guard topicCount > 0, topicCount <= Self.topicBytesMax else {
            throw .fieldOutOfRange(field: "topic length", value: Int64(topicCount), allowed: "1...127")
        }
        guard propertyBytes <= MessageProperties.encodedBytesMax else {
            throw .fieldOutOfRange(field: "properties length", value: Int64(propertyBytes), allowed: "0...32767")
        }
        let total = 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + bornHost.byteCount + 8 + storeHost.byteCount + 4 + 8
            + 4 + bodyBytes + 1 + topicCount + 2 + propertyBytes
        guard total <= Int(Int32.max) else {
            throw .fieldOutOfRange(field: "message size", value: Int64(total), allowed: "<= Int32.max")
        }
        return total
    }

    /// The one writer of the layout; `sysFlag` as stored. Appends to `out` (reserving room when
    /// `out` is empty), or throws before writing anything.
    private static func encode(bodyCRC: UInt32, queueId: Int32, flag: Int32, queueOffset: Int64, physicalOffset: Int64, sysFlag: Int32,
                               bornTimestamp: Int64, bornHost: MessageHost, storeTimestamp: Int64, storeHost: MessageHost,
                               reconsumeTimes: Int32, preparedTransactionOffset: Int64, body: UnsafeRawBufferPointer, topic: String,
                               propertyBytes: UnsafeRawBufferPointer, into out: inout [UInt8]) throws(LogFormatError) {
        let total = try encodedSize(bornHost: bornHost, storeHost: storeHost, bodyBytes: body.count, topic: topic, propertyBytes: propertyBytes.count)
        let topicCount = topic.utf8.count
        let start = out.count
        if start == 0 { out.reserveCapacity(total) }
        out.appendBigEndian(UInt32(total))
        out.appendBigEndian(Self.magic)
        out.appendBigEndian(bodyCRC)
        out.appendBigEndian(UInt32(bitPattern: queueId))
        out.appendBigEndian(UInt32(bitPattern: flag))
        out.appendBigEndian(UInt64(bitPattern: queueOffset))
        out.appendBigEndian(UInt64(bitPattern: physicalOffset))
        out.appendBigEndian(UInt32(bitPattern: sysFlag))
        out.appendBigEndian(UInt64(bitPattern: bornTimestamp))
        bornHost.encode(into: &out)
        out.appendBigEndian(UInt64(bitPattern: storeTimestamp))
        storeHost.encode(into: &out)
        out.appendBigEndian(UInt32(bitPattern: reconsumeTimes))
        out.appendBigEndian(UInt64(bitPattern: preparedTransactionOffset))
        out.appendBigEndian(UInt32(body.count))
        out.append(contentsOf: body.bindMemory(to: UInt8.self))
        out.append(UInt8(topicCount))
        out.append(contentsOf: topic.utf8)
        out.appendBigEndian(UInt16(propertyBytes.count))
        out.append(contentsOf: propertyBytes.bindMemory(to: UInt8.self))
        assert(out.count - start == total, "encoded length differs from computed length")
    }

    /// Writes the queue offset and physical offset into an encoded record, as RocketMQ does under its
    /// put lock (queue offset) and in DLedger's append hook (physical offset = entry pos + 48).
    public static func patch(queueOffset: Int64?, physicalOffset: Int64?, in record: inout [UInt8]) {
        patch(queueOffset: queueOffset, physicalOffset: physicalOffset, in: &record, at: 0)
    }

    /// The same for the record that starts at byte `start` of `bytes` (one of several in an entry
    /// being built), without copying it out first.
    public static func patch(queueOffset: Int64?, physicalOffset: Int64?, in bytes: inout [UInt8], at start: Int) {
        bytes.withUnsafeMutableBytes { patch(queueOffset: queueOffset, physicalOffset: physicalOffset, in: $0, at: start) }
    }

    /// The same in memory the caller owns (a record inside an entry being written to the log).
    public static func patch(queueOffset: Int64?, physicalOffset: Int64?, in bytes: UnsafeMutableRawBufferPointer, at start: Int) {
        precondition(start >= 0 && bytes.count - start >= 36, "not an encoded message record")
        if let queueOffset { bytes.storeBytes(of: UInt64(bitPattern: queueOffset).bigEndian, toByteOffset: start + queueOffsetFieldOffset, as: UInt64.self) }
        if let physicalOffset { bytes.storeBytes(of: UInt64(bitPattern: physicalOffset).bigEndian, toByteOffset: start + physicalOffsetFieldOffset, as: UInt64.self) }
    }

    /// The record's total size as its first field says, or nil when fewer than 4 bytes are there.
    public static func declaredSize(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= 4 else { return nil }
        return Int(Int32(bitPattern: BigEndianReader(bytes).u32(0)))
    }

    /// Where the variable fields of a record lie, every length checked (see `decode`).
    struct Layout {
        var total: Int
        var sysFlag: Int32
        var bornTimestamp: Int64
        var bornHostAt: Int, bornHostBytes: Int
        var storeTimestamp: Int64
        var storeHostAt: Int, storeHostBytes: Int
        var reconsumeTimes: Int32
        var preparedTransactionOffset: Int64
        var body: Range<Int>
        var topic: String
        var properties: Range<Int>
    }

    static func layout(_ bytes: UnsafeRawBufferPointer) throws(LogFormatError) -> Layout {
        let minimum = 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4 + 1 + 2
        guard bytes.count >= 8 else { throw .truncated(what: "message record", needed: 8, available: bytes.count) }
        let r = BigEndianReader(bytes)
        let total = Int(Int32(bitPattern: r.u32(0)))
        let magic = r.u32(4)
        guard magic == Self.magic else { throw .badMagic(what: "message record", found: magic) }
        guard total >= minimum else {
            throw .fieldOutOfRange(field: "message total size", value: Int64(total), allowed: ">= \(minimum)")
        }
        guard total <= bytes.count else { throw .truncated(what: "message record", needed: total, available: bytes.count) }
        let sysFlag = Int32(bitPattern: r.u32(36))
        let bornHostBytes = (sysFlag & bornHostV6Flag) != 0 ? 20 : 8
        let storeHostBytes = (sysFlag & storeHostV6Flag) != 0 ? 20 : 8

        var at = 40
        func need(_ n: Int, _ field: String) throws(LogFormatError) {
            guard at + n <= total else {
                throw .sizeMismatch(what: "message record", detail: "\(field) at byte \(at) (+\(n)) passes total size \(total)")
            }
        }
        let bornTimestamp = Int64(bitPattern: r.u64(at)); at += 8
        try need(bornHostBytes, "born host")
        let bornHostAt = at; at += bornHostBytes
        try need(8 + storeHostBytes + 4 + 8 + 4, "store fields")
        let storeTimestamp = Int64(bitPattern: r.u64(at)); at += 8
        let storeHostAt = at; at += storeHostBytes
        let reconsumeTimes = Int32(bitPattern: r.u32(at)); at += 4
        let preparedTransactionOffset = Int64(bitPattern: r.u64(at)); at += 8
        let bodyLength = Int(Int32(bitPattern: r.u32(at))); at += 4
        guard bodyLength >= 0 else {
            throw .fieldOutOfRange(field: "message body length", value: Int64(bodyLength), allowed: ">= 0")
        }
        try need(bodyLength + 1, "body")
        let body = at..<(at + bodyLength); at += bodyLength
        let topicLength = Int(Int8(bitPattern: r.u8(at))); at += 1
        guard topicLength > 0 else {
            throw .fieldOutOfRange(field: "topic length", value: Int64(topicLength), allowed: "1...127")
        }
        try need(topicLength + 2, "topic")
        guard let topic = String(validating: UnsafeRawBufferPointer(rebasing: bytes[at..<(at + topicLength)]), as: UTF8.self) else {
            throw .invalidUTF8(field: "topic")
        }
        at += topicLength
        let propertiesLength = Int(Int16(bitPattern: r.u16(at))); at += 2
        guard propertiesLength >= 0 else {
            throw .fieldOutOfRange(field: "properties length", value: Int64(propertiesLength), allowed: "0...32767")
        }
        guard at + propertiesLength == total else {
            throw .sizeMismatch(what: "message record", detail: "fields end at \(at + propertiesLength), total size says \(total)")
        }
        return Layout(total: total, sysFlag: sysFlag, bornTimestamp: bornTimestamp, bornHostAt: bornHostAt, bornHostBytes: bornHostBytes,
                      storeTimestamp: storeTimestamp, storeHostAt: storeHostAt, storeHostBytes: storeHostBytes, reconsumeTimes: reconsumeTimes,
                      preparedTransactionOffset: preparedTransactionOffset, body: body, topic: topic, properties: at..<(at + propertiesLength))
    }

    /// Decodes one record from the start of `bytes`, validating every length against the buffer and
    /// the declared total size, and the body CRC when `verifyBodyCRC` is set (RocketMQ's
    /// `checkCRCOnRecover`).
    public static func decode(_ bytes: UnsafeRawBufferPointer, verifyBodyCRC: Bool = true) throws(LogFormatError) -> MessageRecord {
        let l = try layout(bytes)
        let r = BigEndianReader(bytes)
        func host(_ at: Int, _ count: Int) -> MessageHost {
            if count == 8 {
                let a = (r.u8(at), r.u8(at + 1), r.u8(at + 2), r.u8(at + 3))
                return .v4(address: a, port: r.u32(at + 4))
            }
            return .v6(address: Array(UnsafeRawBufferPointer(rebasing: bytes[at..<(at + 16)])), port: r.u32(at + 16))
        }
        let bodySlice = UnsafeRawBufferPointer(rebasing: bytes[l.body])
        let storedBodyCRC = r.u32(8)
        if verifyBodyCRC {
            let computed = CRC32IEEE.rocketMQBodyCRC(bodySlice)
            guard computed == storedBodyCRC else {
                throw .checksumMismatch(what: "message body", stored: storedBodyCRC, computed: computed)
            }
        }
        let properties = try MessageProperties.decode(UnsafeRawBufferPointer(rebasing: bytes[l.properties]))
        return MessageRecord(
            queueId: Int32(bitPattern: r.u32(12)), flag: Int32(bitPattern: r.u32(16)),
            queueOffset: Int64(bitPattern: r.u64(20)), physicalOffset: Int64(bitPattern: r.u64(28)),
            sysFlag: l.sysFlag, bornTimestamp: l.bornTimestamp, bornHost: host(l.bornHostAt, l.bornHostBytes), storeTimestamp: l.storeTimestamp,
            storeHost: host(l.storeHostAt, l.storeHostBytes), reconsumeTimes: l.reconsumeTimes, preparedTransactionOffset: l.preparedTransactionOffset,
            body: Array(bodySlice), topic: l.topic, properties: properties, bodyCRC: storedBodyCRC)
    }

    /// What dispatch needs of a stored record, read in place: the same checks as `decode` (without
    /// the body CRC), but no copy of the body and the properties left encoded, looked up by name
    /// with `MessageProperties.value(of:in:)` (a consume-queue entry needs TAGS and DELAY, the key
    /// index UNIQ_KEY and KEYS, never the rest).
    public struct Routing: Sendable {
        public var queueId: Int32
        public var queueOffset: Int64
        public var storeTimestamp: Int64
        public var topic: String
        /// The encoded properties, within the record's bytes.
        public var properties: Range<Int>
    }

    public static func routing(_ bytes: UnsafeRawBufferPointer) throws(LogFormatError) -> Routing {
        let l = try layout(bytes)
        let r = BigEndianReader(bytes)
        return Routing(queueId: Int32(bitPattern: r.u32(12)), queueOffset: Int64(bitPattern: r.u64(20)), storeTimestamp: l.storeTimestamp,
                       topic: l.topic, properties: l.properties)
    }
}
