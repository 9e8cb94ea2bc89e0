import NIOCore
import Remoting

/// A client of the raw-log API (RaftLogService) of one Raft group: finds the leader, follows
/// NOT_LEADER answers to it, and retries what surely was not written while leadership moves.
public actor RaftLogClient {
    /// An answer that is not SUCCESS, or no answer at all.
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        /// The node answered with a DLedger response code (RaftLogResponse).
        case refused(code: Int32, remark: String, address: String)
        /// No answer: the append may or may not have been written (and may still commit).
        case unknownOutcome(String)
        /// Nothing accepted the request before the deadline; the last reason.
        case gaveUp(String)

        public var description: String {
            switch self {
            case .refused(let code, let remark, let address): return "\(address) answered \(code): \(remark)"
            case .unknownOutcome(let why): return "outcome unknown: \(why)"
            case .gaveUp(let why): return "gave up: \(why)"
            }
        }
    }

    public struct Appended: Sendable, Equatable {
        /// Store index (DLedger numbering) and term of the committed entry.
        public var index: Int64
        public var term: UInt64
        /// The broker address that accepted it.
        public var leaderAddress: String
        /// Requests sent, redirects included.
        public var attempts: Int
    }

    public struct Metadata: Sendable {
        public var fields: [String: String]
        /// The node's `/raft/state` JSON.
        public var stateJSON: String
        public var leaderAddress: String? { fields["leaderAddr"] }
        public var leaderId: String? { fields["leaderId"] }
    }

    public let group: String
    public let addresses: [String]
    private let client: RemotingClient
    private let requestTimeoutMs: Int64
    private var leaderAddress: String?
    private var nextGuess = 0

    /// `addresses`: the broker addresses of the group's members (any subset that includes the leader
    /// or nodes that know it).
    public init(group: String, addresses: [String], client: RemotingClient, requestTimeoutMilliseconds: Int64 = 3_000) {
        precondition(!addresses.isEmpty, "a RaftLogClient needs at least one address")
        self.group = group
        self.addresses = addresses
        self.client = client
        self.requestTimeoutMs = requestTimeoutMilliseconds
    }

    /// The address to try next: the known leader, or the members in turn.
    private func target() -> String {
        if let l = leaderAddress { return l }
        defer { nextGuess += 1 }
        return addresses[nextGuess % addresses.count]
    }

    private func forget(_ address: String) {
        if leaderAddress == address { leaderAddress = nil }
    }

    /// Appends `data`; returns once it is committed. Retries, until `deadline`, whatever surely was
    /// not written: NOT_LEADER (following the hint), no leader yet, a transfer in progress, a full
    /// leader, a refused connection. An append sent but not answered is `.unknownOutcome`.
    public func append(_ data: [UInt8], deadline: ContinuousClock.Instant) async throws(Failure) -> Appended {
        var attempts = 0
        var redirects = 0
        var last = "no attempt"
        while true {
            let address = target()
            attempts += 1
            var body = ByteBuffer()
            body.writeBytes(data)
            let answer: RemotingCommand
            do {
                answer = try await client.request(address, .request(code: RaftLogCode.append, opaque: 0, extFields: ["group": group], body: body),
                                                  timeoutMilliseconds: requestTimeoutMs)
            } catch {
                forget(address)
                if case .connectFailed = error {
                    last = "\(error)"
                } else {
                    throw .unknownOutcome("\(address): \(error)")
                }
                if ContinuousClock.now >= deadline { throw .gaveUp(last) }
                try? await Task.sleep(for: .milliseconds(5))
                continue
            }
            switch answer.code {
            case RaftLogResponse.success:
                leaderAddress = address
                return Appended(index: Int64(answer.extFields["index"] ?? "") ?? -1, term: UInt64(answer.extFields["term"] ?? "") ?? 0,
                                leaderAddress: address, attempts: attempts)
            case RaftLogResponse.notLeader, RaftLogResponse.leaderTransferring, RaftLogResponse.leaderPendingFull:
                last = "\(address): \(answer.remark ?? "\(answer.code)")"
                if let hint = answer.extFields["leaderAddr"], hint != address, answer.code == RaftLogResponse.notLeader {
                    leaderAddress = hint
                    if ContinuousClock.now >= deadline { throw .gaveUp(last) }
                    // Two nodes with stale hints may point at each other while an election runs.
                    redirects += 1
                    if redirects > 2 { try? await Task.sleep(for: .milliseconds(5)) }
                    continue
                }
                forget(address)
            default:
                throw .refused(code: answer.code, remark: answer.remark ?? "", address: address)
            }
            if ContinuousClock.now >= deadline { throw .gaveUp(last) }
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// METADATA of the node at `address`.
    public func metadata(at address: String) async throws(Failure) -> Metadata {
        let answer = try await call(address, RaftLogCode.metadata, [:])
        var json = answer.body ?? ByteBuffer()
        return Metadata(fields: answer.extFields.dictionary, stateJSON: json.readString(length: json.readableBytes) ?? "")
    }

    /// Committed entries from `index` (store numbering) on, as the node at `address` holds them.
    public func get(at address: String, from index: Int64, maxCount: Int = 1) async throws(Failure) -> [RaftLogEntryCodec.Entry] {
        let answer = try await call(address, RaftLogCode.get, ["index": "\(index)", "maxCount": "\(maxCount)"])
        guard let entries = RaftLogEntryCodec.decode(answer.body ?? ByteBuffer()) else {
            throw .refused(code: RaftLogResponse.internalError, remark: "a malformed GET answer", address: address)
        }
        return entries
    }

    /// Moves leadership to the member named `transferee` ("n1"): asks the leader (found through
    /// METADATA) and returns once the transferee leads.
    public func transferLeadership(to transferee: String, deadline: ContinuousClock.Instant) async throws(Failure) -> String {
        var last = "no leader found"
        while ContinuousClock.now < deadline && !Task.isCancelled {
            if leaderAddress == nil {
                for a in addresses {
                    if let m = try? await metadata(at: a), let l = m.leaderAddress { leaderAddress = l; break }
                }
            }
            guard let leader = leaderAddress else {
                try? await Task.sleep(for: .milliseconds(20))
                continue
            }
            do {
                let answer = try await call(leader, RaftLogCode.leadershipTransfer, ["transfereeId": transferee], timeoutMs: 10_000)
                leaderAddress = answer.extFields["leaderAddr"]
                return answer.extFields["leaderAddr"] ?? leader
            } catch {
                last = "\(error)"
                leaderAddress = nil
                if case .refused(let code, _, _) = error, code != RaftLogResponse.notLeader { throw error }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        throw .gaveUp(last)
    }

    private func call(_ address: String, _ code: Int32, _ fields: ExtFields, timeoutMs: Int64? = nil) async throws(Failure) -> RemotingCommand {
        var ext = fields
        ext["group"] = group
        let answer: RemotingCommand
        do {
            answer = try await client.request(address, .request(code: code, opaque: 0, extFields: ext), timeoutMilliseconds: timeoutMs ?? requestTimeoutMs)
        } catch {
            throw .unknownOutcome("\(address): \(error)")
        }
        guard answer.code == RaftLogResponse.success else {
            throw .refused(code: answer.code, remark: answer.remark ?? "", address: address)
        }
        return answer
    }
}
