import LogFormat
import Remoting

/// What a Raft entry's body holds, as the broker reads it (docs/broker-metadata.md):
/// - one or more RocketMQ message records back to back (a single send, a batch: one record per
///   item, so every item has its own physical offset and queue offset; or the fast-path sends of
///   one event-loop turn, which may be of several topics and queues);
/// - a metadata change (RaftMQ's magic "RAMD" where a record has its magic);
/// - anything else (raw-log API appends, the leader's no-op): skipped by dispatch.
enum EntryBody {
    case messages
    case metadata
    case opaque

    static let metadataMagic: UInt32 = 0x5241_4D44

    static func classify(_ body: [UInt8]) -> EntryBody {
        body.withUnsafeBytes { classify($0) }
    }

    static func classify(_ body: UnsafeRawBufferPointer) -> EntryBody {
        guard body.count >= 8 else { return .opaque }
        let magic = UInt32(body[4]) << 24 | UInt32(body[5]) << 16 | UInt32(body[6]) << 8 | UInt32(body[7])
        if magic == metadataMagic { return .metadata }
        guard magic == MessageRecord.magic else { return .opaque }
        // Records must tile the body exactly; a body that merely starts like one is opaque.
        var at = 0
        while at < body.count {
            guard at + 8 <= body.count else { return .opaque }
            let size = recordSize(body, at: at)
            let m = UInt32(body[at + 4]) << 24 | UInt32(body[at + 5]) << 16 | UInt32(body[at + 6]) << 8 | UInt32(body[at + 7])
            guard m == MessageRecord.magic, size >= 36, at + size <= body.count else { return .opaque }
            at += size
        }
        return .messages
    }

    /// The size field (big-endian Int32) of the record starting at `at`; the caller checks that 4
    /// bytes are there.
    @inline(__always)
    static func recordSize(_ body: [UInt8], at: Int) -> Int {
        body.withUnsafeBytes { recordSize($0, at: at) }
    }

    @inline(__always)
    static func recordSize(_ body: UnsafeRawBufferPointer, at: Int) -> Int {
        Int(Int32(bitPattern: UInt32(body[at]) << 24 | UInt32(body[at + 1]) << 16 | UInt32(body[at + 2]) << 8 | UInt32(body[at + 3])))
    }

    /// The byte ranges of the records of a `.messages` body, walked lazily (dispatch runs this on
    /// every member for every entry: no array is built).
    static func recordRanges(_ body: [UInt8]) -> RecordRanges { RecordRanges(body: body) }

    struct RecordRanges: Sequence, IteratorProtocol {
        let body: [UInt8]
        var at = 0

        mutating func next() -> Range<Int>? {
            guard at + 4 <= body.count else { return nil }
            let size = EntryBody.recordSize(body, at: at)
            guard size > 0, at + size <= body.count else { return nil }
            defer { at += size }
            return at..<(at + size)
        }
    }

    /// The append hook of every member (RaftReplicaOptions.bodyPatch): each record's PHYSICALOFFSET
    /// becomes where the record starts in the commitlog (entry position + 48 + its place in the body),
    /// as DLedger's append hook writes it. A function of its arguments only, so logs stay identical.
    static func patchPhysicalOffsets(position: LogPosition, body: UnsafeMutableRawBufferPointer) {
        guard classify(UnsafeRawBufferPointer(body)) == .messages else { return }
        let base = Int64(position.rawValue) + Int64(EntryHeader.byteCount)
        // The records walked as `recordRanges` walks them.
        var at = 0
        while at + 4 <= body.count {
            let size = recordSize(UnsafeRawBufferPointer(body), at: at)
            guard size > 0, at + size <= body.count else { break }
            MessageRecord.patch(queueOffset: nil, physicalOffset: base + Int64(at), in: body, at: at)
            at += size
        }
    }

    /// The same on an array (tests, and callers holding a body of their own).
    static func patchPhysicalOffsets(position: LogPosition, body: inout [UInt8]) {
        body.withUnsafeMutableBytes { patchPhysicalOffsets(position: position, body: $0) }
    }
}

/// Java's String.hashCode over UTF-16 code units: the tags code of a consume-queue entry. With
/// `continuing`, the hash of a longer text that `s` ends: javaHashCode(a + b) ==
/// javaHashCode(b, continuing: javaHashCode(a)).
func javaHashCode(_ s: String, continuing h: Int32 = 0) -> Int32 {
    var h = h
    for u in s.utf16 { h = h &* 31 &+ Int32(u) }
    return h
}

/// The same over UTF-8 bytes (ASCII's code units are its bytes; other text is decoded first); nil
/// when they are not valid UTF-8, which the property reader takes for an absent value.
func javaHashCode(utf8 bytes: UnsafeRawBufferPointer, continuing h: Int32 = 0) -> Int32? {
    var x = h
    for b in bytes {
        guard b < 0x80 else {
            guard let s = String(validating: bytes, as: UTF8.self) else { return nil }
            return javaHashCode(s, continuing: h)
        }
        x = x &* 31 &+ Int32(b)
    }
    return x
}

/// The four properties dispatch reads, found in one pass over a record's property text (dispatch
/// runs on every member for every message; four `MessageProperties.value(of:in:)` calls were four
/// passes and four strings). Each is where `value(of:in:)` finds it: the last pair with that name
/// and a non-empty value, as a range of the text; its bytes may still not be UTF-8, which
/// `value(of:in:)` answers with nil.
struct DispatchProperties {
    var tags: Range<Int>?
    var delay: Range<Int>?
    var uniqueKey: Range<Int>?
    var keys: Range<Int>?

    init(_ bytes: UnsafeRawBufferPointer) {
        let n = bytes.count
        var start = 0
        while start < n {
            var separator = -1
            var end = start
            while end < n && bytes[end] != MessageProperties.pairSeparator {
                if separator < 0 && bytes[end] == MessageProperties.nameValueSeparator { separator = end }
                end += 1
            }
            if separator > start && end > separator + 1 {
                let name = UnsafeRawBufferPointer(rebasing: bytes[start..<separator])
                let value = (separator + 1)..<end
                switch name.count {
                case PropertyName.tags.utf8.count, PropertyName.delay.utf8.count, PropertyName.uniqueKey.utf8.count:
                    if name.elementsEqual(PropertyName.tags.utf8) { tags = value }
                    else if name.elementsEqual(PropertyName.keys.utf8) { keys = value }
                    else if name.elementsEqual(PropertyName.delay.utf8) { delay = value }
                    else if name.elementsEqual(PropertyName.uniqueKey.utf8) { uniqueKey = value }
                default: break
                }
            }
            start = end + 1
        }
    }
}

/// RocketMQ's property names (MessageConst).
enum PropertyName {
    static let tags = "TAGS"
    static let keys = "KEYS"
    static let uniqueKey = "UNIQ_KEY"
    static let cluster = "CLUSTER"
    static let wait = "WAIT"
    static let retryTopic = "RETRY_TOPIC"
    static let reconsumeTime = "RECONSUME_TIME"
    static let maxReconsumeTimes = "MAX_RECONSUME_TIMES"
    static let originMessageId = "ORIGIN_MESSAGE_ID"
    static let delay = "DELAY"
    static let realTopic = "REAL_TOPIC"
    static let realQueueId = "REAL_QID"
}

/// RocketMQ's offsetMsgId: store host (IPv4 4 bytes + port 4, or IPv6 16 + 4) and the physical
/// offset (8), in upper-case hex.
func offsetMessageId(storeHost: MessageHost, physicalOffset: Int64) -> String {
    offsetMessageID(storeHost: storeHost, physicalOffset: physicalOffset).text
}

/// `offsetMessageId` as a send's answer keeps it: an IPv4 store host's as two words, written as
/// its 32 digits only when the answer's header is (no string); an IPv6 host's as its text.
func offsetMessageID(storeHost: MessageHost, physicalOffset: Int64) -> SendResponseFields.MessageID {
    switch storeHost {
    case let .v4(a, port):
        let host = UInt64(a.0) << 24 | UInt64(a.1) << 16 | UInt64(a.2) << 8 | UInt64(a.3)
        return .ipv4(hostAndPort: host << 32 | UInt64(port), physicalOffset: physicalOffset)
    case let .v6(a, port):
        // Hex digits written straight into the string's storage.
        return .text(String(unsafeUninitializedCapacity: 2 * a.count + 24) { out in
            var at = 0
            func hex(_ v: UInt64, bytes: Int) {
                for k in stride(from: 2 * bytes - 1, through: 0, by: -1) {
                    let d = UInt8(truncatingIfNeeded: (v >> (4 * UInt64(k))) & 0xF)
                    out[at] = d < 10 ? d + 48 : d + 55
                    at += 1
                }
            }
            for b in a { hex(UInt64(b), bytes: 1) }
            hex(UInt64(port), bytes: 4)
            hex(UInt64(bitPattern: physicalOffset), bytes: 8)
            return at
        })
    }
}

/// The commitlog offset inside an offsetMsgId (its last 16 hex digits), or nil.
func physicalOffset(fromOffsetMessageId id: String) -> Int64? {
    guard id.count == 32 || id.count == 56 else { return nil }
    return UInt64(id.suffix(16), radix: 16).map { Int64(bitPattern: $0) }
}

/// A MessageHost from "a.b.c.d:port" (IPv4 only; anything else becomes 127.0.0.1 with the port).
func messageHost(_ address: String) -> MessageHost {
    let parts = address.split(separator: ":")
    let port = parts.count == 2 ? UInt32(parts[1]) ?? 0 : 0
    let octets = parts.first.map { $0.split(separator: ".").compactMap { UInt8($0) } } ?? []
    if octets.count == 4 { return .v4(address: (octets[0], octets[1], octets[2], octets[3]), port: port) }
    return .v4(address: (127, 0, 0, 1), port: port)
}

extension Array where Element == UInt8 {
    /// Appends the low `bytes` bytes of `v`, big-endian.
    mutating func appendBE(_ v: UInt64, bytes: Int) {
        for k in stride(from: bytes - 1, through: 0, by: -1) { append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(k)))) }
    }

    /// The big-endian integer of `bytes` bytes at `at`.
    func readBE(_ at: Int, bytes: Int) -> UInt64 {
        var v: UInt64 = 0
        for k in 0..<bytes { v = v << 8 | UInt64(self[at + k]) }
        return v
    }
}

/// The hooks a Raft member's replica needs from the broker.
public enum BrokerLogHooks {
    /// RaftReplicaOptions.bodyPatch: writes each message's physical offset into its record.
    /// Whether a raw-log append's body is neither messages nor metadata (or a prefix that looks like them).
    public static func isOpaque(_ body: [UInt8]) -> Bool {
        if EntryBody.classify(body) != .opaque { return false }
        guard body.count >= 8 else { return true }
        let magic = body.readBE(4, bytes: 4)
        return magic != UInt64(MessageRecord.magic) && magic != UInt64(EntryBody.metadataMagic)
    }

    public static let bodyPatch: @Sendable (LogIndex, LogPosition, UnsafeMutableRawBufferPointer) -> Void = { _, position, body in
        EntryBody.patchPhysicalOffsets(position: position, body: body)
    }
}
