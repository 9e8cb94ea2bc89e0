import LogFormat

/// What `LogStore.open` found and changed. Printed by the broker at start.
public struct RecoveryReport: Sendable, Equatable, CustomStringConvertible {
    /// A torn tail that recovery removed.
    public struct Cut: Sendable, Equatable {
        public var file: String
        public var position: UInt64
        public var bytesRemoved: UInt64
        public var reason: String
    }

    public var segmentCount: Int
    public var firstIndex: LogIndex
    public var lastIndex: LogIndex?
    /// Whether the scan started from a valid checkpoint (otherwise from the first segment).
    public var usedCheckpoint: Bool
    public var scanStartPosition: UInt64
    public var scannedBytes: UInt64
    public var scannedEntries: Int
    public var cut: Cut?
    public var indexRecordsRewritten: Int
    public var ignoredFiles: [String]

    public var description: String {
        var s = "commitlog: \(segmentCount) segment(s), entries "
        if let lastIndex { s += "\(firstIndex)...\(lastIndex)" } else { s += "none (next index \(firstIndex))" }
        s += "; scanned \(scannedEntries) entries, \(scannedBytes) bytes from position \(scanStartPosition)"
        s += usedCheckpoint ? " (checkpoint)" : " (no usable checkpoint: full scan)"
        if let cut {
            s += "; cut torn tail at \(cut.file) position \(cut.position): \(cut.bytesRemoved) bytes removed (\(cut.reason))"
        }
        if indexRecordsRewritten > 0 { s += "; rebuilt \(indexRecordsRewritten) index records" }
        if !ignoredFiles.isEmpty { s += "; ignored files: \(ignoredFiles.joined(separator: ", "))" }
        return s
    }
}
