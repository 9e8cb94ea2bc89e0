import LogFormat

/// Raft's hard state: what a node must never forget across a crash (Raft paper, Figure 2:
/// currentTerm and votedFor "updated on stable storage before responding to RPCs").
public struct HardState: Equatable, Sendable {
    public var term: Term
    /// The node voted for in `term`, or nil.
    public var votedFor: String?
    /// Highest index known committed (persisting it is optional for safety; it speeds restarts).
    public var commitIndex: LogIndex?

    public init(term: Term, votedFor: String?, commitIndex: LogIndex? = nil) {
        self.term = term
        self.votedFor = votedFor
        self.commitIndex = commitIndex
    }
}

/// The small file next to the log that holds the hard state, replaced atomically on every change:
/// temp file, fsync, rename, fsync of the directory. DLedger wrote its term and vote without fsync,
/// so a power loss could let a node vote twice in one term; this file cannot.
///
/// Layout: magic "RMQHARD1", term (8), commit index + 1 (8, 0 = unknown), vote length (2), vote
/// (UTF-8), CRC32C of everything before it (4). A file that fails its checksum is an error, never
/// silently reset: forgetting a vote is exactly what this file exists to prevent.
public struct HardStateFile: Sendable {
    static let magic: [UInt8] = Array("RMQHARD1".utf8)
    public let path: String

    public init(path: String) { self.path = path }

    public func load() throws(StorageError) -> HardState? {
        guard let bytes = try FileIO.readFile(path) else { return nil }
        return try Self.decode(bytes, path: path)
    }

    public func save(_ state: HardState) throws(StorageError) {
        try FileIO.writeAtomically(try Self.encode(state), to: path)
    }

    static func encode(_ state: HardState) throws(StorageError) -> [UInt8] {
        let vote = Array((state.votedFor ?? "").utf8)
        guard vote.count <= Int(UInt16.max) else { throw .invalidArgument("vote id longer than 65535 bytes") }
        var out = magic
        Swift.withUnsafeBytes(of: state.term.rawValue.bigEndian) { out.append(contentsOf: $0) }
        let commit = state.commitIndex.map { $0.rawValue + 1 } ?? 0
        Swift.withUnsafeBytes(of: commit.bigEndian) { out.append(contentsOf: $0) }
        Swift.withUnsafeBytes(of: UInt16(vote.count).bigEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: vote)
        let crc = CRC32C.checksum(out)
        Swift.withUnsafeBytes(of: crc.bigEndian) { out.append(contentsOf: $0) }
        return out
    }

    static func decode(_ bytes: [UInt8], path: String) throws(StorageError) -> HardState {
        func bad(_ why: String) -> StorageError {
            .corrupt(file: path, position: 0, detail: "hard state file \(why); refusing to guess the term and vote (restore it from a backup or rebuild this node from its peers)")
        }
        guard bytes.count >= 8 + 8 + 8 + 2 + 4 else { throw bad("is \(bytes.count) bytes, too short") }
        guard Array(bytes[0..<8]) == magic else { throw bad("has a wrong magic") }
        func u64(_ at: Int) -> UInt64 { bytes[at..<(at + 8)].reduce(0) { $0 << 8 | UInt64($1) } }
        let voteLength = Int(bytes[24]) << 8 | Int(bytes[25])
        guard bytes.count == 26 + voteLength + 4 else { throw bad("length does not match its vote length") }
        let stored = bytes[(26 + voteLength)...].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard CRC32C.checksum(bytes[0..<(26 + voteLength)]) == stored else { throw bad("fails its checksum") }
        guard let vote = String(validating: bytes[26..<(26 + voteLength)], as: UTF8.self) else { throw bad("holds a vote that is not UTF-8") }
        let commit = u64(16)
        return HardState(term: Term(u64(8)), votedFor: vote.isEmpty ? nil : vote, commitIndex: commit == 0 ? nil : LogIndex(commit - 1))
    }
}
