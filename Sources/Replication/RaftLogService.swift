import LogFormat
import Logging
import NIOCore
import RaftCore
import Remoting

/// DLedger's client request codes, served on the broker port for the raw Raft log (docs/raw-log-api.md).
public enum RaftLogCode {
    public static let metadata: Int32 = 50_000
    public static let append: Int32 = 50_001
    public static let get: Int32 = 50_002
    public static let leadershipTransfer: Int32 = 51_005
}

/// DLedger's response codes (DLedgerResponseCode), used as the remoting response code.
public enum RaftLogResponse {
    public static let success: Int32 = 200
    public static let unknownGroup: Int32 = 400
    public static let unknownMember: Int32 = 401
    public static let notLeader: Int32 = 404
    public static let indexOutOfRange: Int32 = 410
    public static let unexpectedArgument: Int32 = 411
    public static let diskError: Int32 = 414
    public static let takeLeadershipFailed: Int32 = 418
    public static let indexLessThanLocalBegin: Int32 = 419
    public static let requestWithEmptyBody: Int32 = 420
    public static let internalError: Int32 = 500
    public static let termChanged: Int32 = 501
    public static let waitQuorumAckTimeout: Int32 = 502
    public static let leaderPendingFull: Int32 = 503
    public static let leaderTransferring: Int32 = 506
}

/// The raw-log API of a Raft replica on the broker port: METADATA, APPEND (answered after commit),
/// GET (committed entries only) and LEADERSHIP_TRANSFER, so the log service is usable without the
/// broker layer. Every request names the group (`group`); a non-leader answers APPEND and
/// LEADERSHIP_TRANSFER with NOT_LEADER and the leader's `leaderId` and `leaderAddr` when it knows them.
public struct RaftLogService: Sendable {
    public struct Options: Sendable {
        /// The group's name (dLegerGroup); a request for another group is answered UNKNOWN_GROUP.
        public var group: String
        /// This node's name ("n0").
        public var selfName: String
        /// Every member's name.
        public var names: [NodeID: String]
        /// Every member's broker (client) address, where this API is served.
        public var clientAddresses: [NodeID: String]
        /// An APPEND not committed within this is answered WAIT_QUORUM_ACK_TIMEOUT (DLedger's
        /// maxWaitAckTimeMs, 2500 ms): the entry may still commit.
        public var appendTimeout: Duration = .milliseconds(2_500)
        /// A LEADERSHIP_TRANSFER is answered once the target leads, or TAKE_LEADERSHIP_FAILED after this.
        public var transferTimeout: Duration = .seconds(3)
        /// GET returns at most this many entries and about this many bytes.
        public var maxGetEntries = 1_024
        public var maxGetBytes = 4 << 20
        /// APPENDs waiting for their commit.
        public var maxPendingAppends = 16_384

        public init(group: String, selfName: String, names: [NodeID: String], clientAddresses: [NodeID: String]) {
            self.group = group
            self.selfName = selfName
            self.names = names
            self.clientAddresses = clientAddresses
        }
    }

    public let options: Options
    private let replica: RaftReplica
    private let stateJSON: @Sendable () -> String
    private let logger: Logger
    private let appender: Appender

    /// How an APPEND reaches the log: the replica's own `append`, or the broker's write path, which
    /// numbers every entry it proposes and must therefore see all of them.
    public typealias Appender = @Sendable (_ data: [UInt8], _ timeout: Duration) async throws -> RaftReplica.Committed

    /// `stateJSON` is the node's `/raft/state` object, the body of a METADATA answer.
    public init(options: Options, replica: RaftReplica, logger: Logger, append: Appender? = nil, stateJSON: @escaping @Sendable () -> String) {
        self.options = options
        self.replica = replica
        self.appender = append ?? { data, timeout in try await replica.append(data, timeout: timeout) }
        self.logger = logger
        self.stateJSON = stateJSON
    }

    /// The processors to mount on the broker's RemotingServer.
    public var processors: [RemotingProcessor] {
        let service = self
        return [
            RemotingProcessor(name: "raft-append", codes: [RaftLogCode.append], maxQueuedRequests: options.maxPendingAppends,
                              workers: options.maxPendingAppends) { request, _ in await service.append(request) },
            RemotingProcessor(name: "raft-admin", codes: [RaftLogCode.metadata, RaftLogCode.get, RaftLogCode.leadershipTransfer],
                              maxQueuedRequests: 1_024, workers: 16) { request, _ in
                switch request.code {
                case RaftLogCode.metadata: return service.metadata(request)
                case RaftLogCode.get: return service.get(request)
                default: return await service.transfer(request)
                }
            },
        ]
    }

    // MARK: Requests

    private func refuseGroup(_ request: RemotingCommand) -> RemotingCommand? {
        let g = request.extFields["group"] ?? ""
        // METADATA may leave the group out: it is how a client learns it.
        guard g != options.group && !(g.isEmpty && request.code == RaftLogCode.metadata) else { return nil }
        return .response(to: request, code: RaftLogResponse.unknownGroup,
                         remark: "this node serves group \(options.group), not \"\(g)\"", extFields: ["group": options.group])
    }

    /// leaderId/leaderAddr of the current leader, when known.
    private func leaderFields(_ status: ReplicaStatus?) -> ExtFields {
        guard let leader = status?.raft.leader, let name = options.names[leader] else { return [:] }
        var f: ExtFields = ["leaderId": name]
        if let a = options.clientAddresses[leader] { f["leaderAddr"] = a }
        return f
    }

    private func notLeader(_ request: RemotingCommand, _ status: ReplicaStatus?) -> RemotingCommand {
        let f = leaderFields(status)
        let remark = f["leaderId"].map { "not the leader; the leader is \($0) at \(f["leaderAddr"] ?? "?")" } ?? "not the leader; no leader is known"
        return .response(to: request, code: RaftLogResponse.notLeader, remark: remark, extFields: f)
    }

    func metadata(_ request: RemotingCommand) -> RemotingCommand {
        if let refused = refuseGroup(request) { return refused }
        let status = replica.status
        var f = leaderFields(status)
        f["group"] = options.group
        f["selfId"] = options.selfName
        if let s = status { f["term"] = "\(s.raft.term.rawValue)"; f["role"] = "\(s.raft.role)" }
        f["peers"] = options.names.sorted { $0.value < $1.value }
            .map { "\($0.value)=\(options.clientAddresses[$0.key] ?? "")" }.joined(separator: ";")
        var body = ByteBuffer()
        body.writeString(stateJSON())
        return .response(to: request, code: RaftLogResponse.success, extFields: f, body: body)
    }

    func append(_ request: RemotingCommand) async -> RemotingCommand {
        if let refused = refuseGroup(request) { return refused }
        guard var body = request.body, body.readableBytes > 0 else {
            return .response(to: request, code: RaftLogResponse.requestWithEmptyBody, remark: "an append carries at least one byte")
        }
        let data = body.readBytes(length: body.readableBytes)!
        do {
            let committed = try await appender(data, options.appendTimeout)
            var f = leaderFields(replica.status)
            f["index"] = "\(replica.storeNumber(committed.index))"
            f["term"] = "\(committed.term.rawValue)"
            return .response(to: request, code: RaftLogResponse.success, extFields: f)
        } catch let error as ReplicaError {
            let status = replica.status
            switch error {
            case .refused(.notLeader):
                return notLeader(request, status)
            case .refused(.leadershipTransferInProgress):
                return .response(to: request, code: RaftLogResponse.leaderTransferring, remark: "\(error)", extFields: leaderFields(status))
            case .refused(.proposalTooLarge), .refused(.emptyProposal):
                return .response(to: request, code: RaftLogResponse.unexpectedArgument, remark: "\(error)")
            case .refused, .busy:
                return .response(to: request, code: RaftLogResponse.leaderPendingFull, remark: "\(error)")
            case .overwritten, .unexpectedPosition:
                return .response(to: request, code: RaftLogResponse.termChanged, remark: "\(error)", extFields: leaderFields(status))
            case .timedOut:
                return .response(to: request, code: RaftLogResponse.waitQuorumAckTimeout, remark: "\(error)")
            case .stopped:
                return .response(to: request, code: RaftLogResponse.internalError, remark: "\(error)")
            case .storage:
                return .response(to: request, code: RaftLogResponse.diskError, remark: "\(error)")
            }
        } catch let refused as AppendRefused {
            return .response(to: request, code: RaftLogResponse.unexpectedArgument, remark: refused.reason)
        } catch {
            return .response(to: request, code: RaftLogResponse.internalError, remark: "\(error)")
        }
    }

    /// What an `Appender` throws for a body it will not append (answered UNEXPECTED_ARGUMENT).
    public struct AppendRefused: Error, Sendable {
        public var reason: String
        public init(_ reason: String) { self.reason = reason }
    }

    func get(_ request: RemotingCommand) -> RemotingCommand {
        if let refused = refuseGroup(request) { return refused }
        guard let text = request.extFields["index"], let index = UInt64(text) else {
            return .response(to: request, code: RaftLogResponse.unexpectedArgument, remark: "GET needs index, a store index (0 is the first entry)")
        }
        var maxCount = 1
        if let m = request.extFields["maxCount"] {
            guard let n = Int(m), n > 0 else { return .response(to: request, code: RaftLogResponse.unexpectedArgument, remark: "maxCount \"\(m)\" is not a positive number") }
            maxCount = min(n, options.maxGetEntries)
        }
        do {
            switch try replica.committedEntries(from: index, maxCount: maxCount, maxBytes: options.maxGetBytes) {
            case .beforeFirst(let first):
                return .response(to: request, code: RaftLogResponse.indexLessThanLocalBegin,
                                 remark: "index \(index) is before this node's first entry \(first)", extFields: ["firstIndex": "\(first)"])
            case .notCommitted(let commit):
                return .response(to: request, code: RaftLogResponse.indexOutOfRange,
                                 remark: "index \(index) is not committed here (commit index \(commit))", extFields: ["commitIndex": "\(commit)"])
            case .entries(let entries):
                var body = ByteBuffer()
                for e in entries { RaftLogEntryCodec.encode(e, into: &body) }
                let commit = replica.status.map { $0.storeNumber($0.raft.commit) } ?? -1
                return .response(to: request, code: RaftLogResponse.success,
                                 extFields: ["count": "\(entries.count)", "commitIndex": "\(commit)"], body: body)
            }
        } catch {
            logger.error("GET could not read the log", metadata: ["index": "\(index)", "error": "\(error)"])
            return .response(to: request, code: RaftLogResponse.diskError, remark: "\(error)")
        }
    }

    func transfer(_ request: RemotingCommand) async -> RemotingCommand {
        if let refused = refuseGroup(request) { return refused }
        let wanted = request.extFields["transfereeId"] ?? ""
        guard let target = options.names.first(where: { $0.value == wanted })?.key else {
            return .response(to: request, code: RaftLogResponse.unknownMember,
                             remark: "\"\(wanted)\" is not a member of \(options.group) (\(options.names.values.sorted().joined(separator: ", ")))")
        }
        let status = replica.status
        if status?.raft.leader == target {
            return .response(to: request, code: RaftLogResponse.success, remark: "\(wanted) already leads", extFields: leaderFields(status))
        }
        do {
            try await replica.transferLeadership(to: target)
        } catch ReplicaError.refused(.notLeader) {
            return notLeader(request, replica.status)
        } catch {
            return .response(to: request, code: RaftLogResponse.takeLeadershipFailed, remark: "\(error)")
        }
        let deadline = ContinuousClock.now + options.transferTimeout
        while ContinuousClock.now < deadline {
            if let s = replica.status, s.raft.leader == target {
                return .response(to: request, code: RaftLogResponse.success, extFields: leaderFields(s))
            }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return .response(to: request, code: RaftLogResponse.takeLeadershipFailed,
                         remark: "\(wanted) did not take leadership within \(options.transferTimeout)", extFields: leaderFields(replica.status))
    }
}

/// One entry in a GET answer: index, term, position (8 bytes each), kind (1), body CRC32C and chain
/// CRC (4 each), body length (4), body; big-endian. The chain CRC covers every entry up to this one,
/// so two nodes whose entries at an index have equal chain CRCs hold identical logs up to it.
public enum RaftLogEntryCodec {
    public struct Entry: Sendable, Equatable {
        public var index: UInt64
        public var term: UInt64
        public var position: UInt64
        public var isNoop: Bool
        public var bodyCRC: UInt32
        public var chainCRC: UInt32
        public var body: [UInt8]
    }

    static func encode(_ e: LogEntry, into out: inout ByteBuffer) {
        out.writeInteger(e.index.rawValue)
        out.writeInteger(e.term.rawValue)
        out.writeInteger(e.position.rawValue)
        out.writeInteger(UInt8(e.kind == .noop ? 1 : 0))
        out.writeInteger(e.header.bodyCRC)
        out.writeInteger(e.header.chainCRC)
        out.writeInteger(UInt32(e.body.count))
        out.writeBytes(e.body)
    }

    /// Decodes a GET body; nil when it is malformed.
    public static func decode(_ body: ByteBuffer) -> [Entry]? {
        var b = body
        var out: [Entry] = []
        while b.readableBytes > 0 {
            guard let index = b.readInteger(as: UInt64.self), let term = b.readInteger(as: UInt64.self),
                  let position = b.readInteger(as: UInt64.self), let kind = b.readInteger(as: UInt8.self),
                  let bodyCRC = b.readInteger(as: UInt32.self), let chainCRC = b.readInteger(as: UInt32.self),
                  let length = b.readInteger(as: UInt32.self), let data = b.readBytes(length: Int(length)) else { return nil }
            out.append(Entry(index: index, term: term, position: position, isNoop: kind == 1, bodyCRC: bodyCRC, chainCRC: chainCRC, body: data))
        }
        return out
    }
}
