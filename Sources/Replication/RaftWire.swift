import NIOCore
import RaftCore

/// The body of a Raft message between the members of a group, carried in a remoting request of code
/// `RequestCode.raftMessage` on the peer port. Compact, big-endian, versioned:
///
/// ```
/// u8 version (1) | u8 kind | u64 from | u64 to | u64 term | kind-specific fields
/// ```
///
/// An append carries its entries as (u64 term, u32 length, bytes); their indexes follow from
/// `prevIndex`, so a malformed message cannot describe a gap. Decoding checks every length against
/// the bytes present and the limits, and throws a typed error: bytes from a peer never trap.
public enum RaftWire {
    public static let version: UInt8 = 1

    /// What a decoder accepts.
    public struct Limits: Sendable {
        public var maxEntriesPerMessage: Int
        public var maxEntryBytes: Int
        public var maxContextBytes: Int
        public init(maxEntriesPerMessage: Int = 65_536, maxEntryBytes: Int = 16 << 20, maxContextBytes: Int = 64 << 10) {
            precondition(maxEntriesPerMessage > 0 && maxEntryBytes > 0 && maxContextBytes > 0, "RaftWire limits must be positive")
            self.maxEntriesPerMessage = maxEntriesPerMessage
            self.maxEntryBytes = maxEntryBytes
            self.maxContextBytes = maxContextBytes
        }
    }

    public enum DecodeError: Error, Sendable, Equatable, CustomStringConvertible {
        case unsupportedVersion(UInt8)
        case unknownKind(UInt8)
        case truncated(String)
        case overLimit(String)
        case trailingBytes(Int)
        case invalid(String)

        public var description: String {
            switch self {
            case .unsupportedVersion(let v): return "Raft message version \(v) is not supported (this node speaks \(RaftWire.version))"
            case .unknownKind(let k): return "unknown Raft message kind \(k)"
            case .truncated(let what): return "Raft message ends inside \(what)"
            case .overLimit(let what): return "Raft message over a limit: \(what)"
            case .trailingBytes(let n): return "\(n) bytes after the end of the Raft message"
            case .invalid(let what): return "invalid Raft message: \(what)"
            }
        }
    }

    enum Kind: UInt8 {
        case preVote = 1, preVoteResponse, vote, voteResponse, append, appendAccepted, appendRejected,
             heartbeat, heartbeatResponse, timeoutNow, readIndex, readIndexResponse, resetLog
    }

    public static func encode(_ m: Message, into out: inout ByteBuffer) {
        let kind: Kind
        switch m.body {
        case .preVote: kind = .preVote
        case .preVoteResponse: kind = .preVoteResponse
        case .vote: kind = .vote
        case .voteResponse: kind = .voteResponse
        case .append: kind = .append
        case .appendResponse(.accepted): kind = .appendAccepted
        case .appendResponse(.rejected): kind = .appendRejected
        case .heartbeat: kind = .heartbeat
        case .heartbeatResponse: kind = .heartbeatResponse
        case .timeoutNow: kind = .timeoutNow
        case .readIndex: kind = .readIndex
        case .readIndexResponse: kind = .readIndexResponse
        case .resetLog: kind = .resetLog
        }
        out.writeInteger(version)
        out.writeInteger(kind.rawValue)
        out.writeInteger(m.from.rawValue)
        out.writeInteger(m.to.rawValue)
        out.writeInteger(m.term.rawValue)
        switch m.body {
        case .preVote(let i, let t):
            out.writeInteger(i.rawValue)
            out.writeInteger(t.rawValue)
        case .preVoteResponse(let granted), .voteResponse(let granted):
            out.writeInteger(UInt8(granted ? 1 : 0))
        case .vote(let i, let t, let transfer):
            out.writeInteger(i.rawValue)
            out.writeInteger(t.rawValue)
            out.writeInteger(UInt8(transfer ? 1 : 0))
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            out.writeInteger(prevIndex.rawValue)
            out.writeInteger(prevTerm.rawValue)
            out.writeInteger(commit.rawValue)
            out.writeInteger(UInt32(entries.count))
            for (k, e) in entries.enumerated() {
                precondition(e.index == prevIndex + (k + 1), "RaftWire: append entries must follow prevIndex consecutively")
                out.writeInteger(e.term.rawValue)
                out.writeInteger(UInt32(e.data.count))
                out.writeBytes(e.data)
            }
        case .appendResponse(.accepted(let match)):
            out.writeInteger(match.rawValue)
        case .appendResponse(.rejected(let rejected, let hintIndex, let hintTerm)):
            out.writeInteger(rejected.rawValue)
            out.writeInteger(hintIndex.rawValue)
            out.writeInteger(hintTerm.rawValue)
        case .heartbeat(let commit, let context):
            out.writeInteger(commit.rawValue)
            writeOptionalContext(context, into: &out)
        case .heartbeatResponse(let context):
            writeOptionalContext(context, into: &out)
        case .timeoutNow:
            break
        case .readIndex(let context):
            writeContext(context, into: &out)
        case .readIndexResponse(let index, let context):
            out.writeInteger(index.rawValue)
            writeContext(context, into: &out)
        case .resetLog(let base, let baseTerm, let context, let commit):
            out.writeInteger(base.rawValue)
            out.writeInteger(baseTerm.rawValue)
            out.writeInteger(commit.rawValue)
            writeContext(context, into: &out)
        }
    }

    public static func encode(_ m: Message) -> ByteBuffer {
        var b = ByteBuffer()
        encode(m, into: &b)
        return b
    }

    private static func writeContext(_ c: [UInt8], into out: inout ByteBuffer) {
        out.writeInteger(UInt32(c.count))
        out.writeBytes(c)
    }

    private static func writeOptionalContext(_ c: [UInt8]?, into out: inout ByteBuffer) {
        guard let c else {
            out.writeInteger(UInt8(0))
            return
        }
        out.writeInteger(UInt8(1))
        writeContext(c, into: &out)
    }

    /// Decodes one whole message: every byte of `buffer` must belong to it.
    public static func decode(_ buffer: ByteBuffer, limits: Limits = Limits()) throws(DecodeError) -> Message {
        var b = buffer
        let v: UInt8 = try read(&b, "the version")
        guard v == version else { throw .unsupportedVersion(v) }
        let k: UInt8 = try read(&b, "the kind")
        guard let kind = Kind(rawValue: k) else { throw .unknownKind(k) }
        let from = NodeID(try read(&b, "the sender"))
        let to = NodeID(try read(&b, "the receiver"))
        let term = Term(try read(&b, "the term"))
        let body: Message.Body
        switch kind {
        case .preVote:
            body = .preVote(lastIndex: LogIndex(try read(&b, "lastIndex")), lastTerm: Term(try read(&b, "lastTerm")))
        case .preVoteResponse:
            body = .preVoteResponse(granted: try bool(&b, "granted"))
        case .vote:
            let i = LogIndex(try read(&b, "lastIndex")), t = Term(try read(&b, "lastTerm"))
            body = .vote(lastIndex: i, lastTerm: t, leadershipTransfer: try bool(&b, "leadershipTransfer"))
        case .voteResponse:
            body = .voteResponse(granted: try bool(&b, "granted"))
        case .append:
            let prevIndex = LogIndex(try read(&b, "prevIndex"))
            let prevTerm = Term(try read(&b, "prevTerm"))
            let commit = LogIndex(try read(&b, "commit"))
            let count: UInt32 = try read(&b, "the entry count")
            guard count <= limits.maxEntriesPerMessage else { throw .overLimit("\(count) entries, at most \(limits.maxEntriesPerMessage)") }
            guard prevIndex.rawValue <= UInt64.max - UInt64(count) else { throw .invalid("entry indexes overflow") }
            var entries: [Entry] = []
            entries.reserveCapacity(Int(count))
            for k in 0..<Int(count) {
                let t = Term(try read(&b, "an entry's term"))
                guard t <= term else { throw .invalid("an entry of term \(t) in a message of term \(term)") }
                if let last = entries.last, t < last.term { throw .invalid("entry terms go back") }
                let n: UInt32 = try read(&b, "an entry's length")
                guard n <= limits.maxEntryBytes else { throw .overLimit("an entry of \(n) bytes, at most \(limits.maxEntryBytes)") }
                guard let data = b.readBytes(length: Int(n)) else { throw .truncated("an entry's data") }
                entries.append(Entry(term: t, index: prevIndex + (k + 1), data: data))
            }
            body = .append(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit)
        case .appendAccepted:
            body = .appendResponse(.accepted(matchIndex: LogIndex(try read(&b, "matchIndex"))))
        case .appendRejected:
            let r = LogIndex(try read(&b, "rejectedIndex")), hi = LogIndex(try read(&b, "hintIndex"))
            body = .appendResponse(.rejected(rejectedIndex: r, hintIndex: hi, hintTerm: Term(try read(&b, "hintTerm"))))
        case .heartbeat:
            let commit = LogIndex(try read(&b, "commit"))
            body = .heartbeat(commit: commit, context: try optionalContext(&b, limits))
        case .heartbeatResponse:
            body = .heartbeatResponse(context: try optionalContext(&b, limits))
        case .timeoutNow:
            body = .timeoutNow
        case .readIndex:
            body = .readIndex(context: try context(&b, limits))
        case .readIndexResponse:
            let i = LogIndex(try read(&b, "index"))
            body = .readIndexResponse(index: i, context: try context(&b, limits))
        case .resetLog:
            let base = LogIndex(try read(&b, "baseIndex")), baseTerm = Term(try read(&b, "baseTerm"))
            let commit = LogIndex(try read(&b, "commit"))
            guard baseTerm <= term else { throw .invalid("a base of term \(baseTerm) in a message of term \(term)") }
            let c = try context(&b, limits)
            // StoreLog's base: position (8 bytes) and chain CRC (4).
            guard c.count == 12 else { throw .invalid("a log reset's base context has \(c.count) bytes, not 12") }
            body = .resetLog(baseIndex: base, baseTerm: baseTerm, context: c, commit: commit)
        }
        guard b.readableBytes == 0 else { throw .trailingBytes(b.readableBytes) }
        return Message(from: from, to: to, term: term, body: body)
    }

    private static func read<T: FixedWidthInteger>(_ b: inout ByteBuffer, _ what: String) throws(DecodeError) -> T {
        guard let v = b.readInteger(as: T.self) else { throw .truncated(what) }
        return v
    }

    private static func bool(_ b: inout ByteBuffer, _ what: String) throws(DecodeError) -> Bool {
        let v: UInt8 = try read(&b, what)
        guard v <= 1 else { throw .invalid("\(what) is \(v), not 0 or 1") }
        return v == 1
    }

    private static func context(_ b: inout ByteBuffer, _ limits: Limits) throws(DecodeError) -> [UInt8] {
        let n: UInt32 = try read(&b, "a context's length")
        guard n <= limits.maxContextBytes else { throw .overLimit("a context of \(n) bytes, at most \(limits.maxContextBytes)") }
        guard let c = b.readBytes(length: Int(n)) else { throw .truncated("a context") }
        return c
    }

    private static func optionalContext(_ b: inout ByteBuffer, _ limits: Limits) throws(DecodeError) -> [UInt8]? {
        try bool(&b, "the context flag") ? try context(&b, limits) : nil
    }
}
