import Glibc
import LogFormat

/// Opening a store after a clean stop or a crash.
///
/// 1. List the data segments; they must be contiguous (`start(i+1) = start(i) + segmentBytes`).
/// 2. Pick where to scan from: the segment holding the checkpoint, or the third-last segment if that
///    is earlier (RocketMQ's rule), or the first segment when there is no usable checkpoint or the
///    index files do not cover the entries before the scan.
/// 3. Scan forward verifying every entry (position, index continuity, non-decreasing term, chain CRC,
///    body CRC) and its index record, rewriting index records that are missing or wrong.
/// 4. At the first invalid entry decide: a torn tail (nothing valid after it, in the last segment,
///    past the checkpoint) is cut and reported; anything else is corruption in the middle, and the
///    store refuses to open, naming the file and position.
struct Recovery {
    struct Result {
        var segments: [SegmentFile]
        var index: IndexFiles
        var firstIndex: LogIndex
        var base: DurablePoint?
        var end: DurablePoint
        var checkpoint: DurablePoint?
        var report: RecoveryReport
        /// Where the last segment's file ends (entries and prepared zeros); 0 without segments.
        var preparedEnd: UInt64 = 0
    }

    let options: LogStoreOptions
    var dataDirectory: String { options.directory + "/data" }
    var indexDirectory: String { options.directory + "/index" }
    /// Recovery reads in large chunks; entries larger than this are read whole.
    let chunkBytes = 4 << 20

    func run() throws(StorageError) -> Result {
        try FileIO.makeDirectories(dataDirectory)
        try FileIO.makeDirectories(indexDirectory)
        var ignored: [String] = []
        let segments = try openFiles(dataDirectory, capacity: options.segmentBytes, ignored: &ignored, kind: "data")
        var index = IndexFiles(
            directory: indexDirectory, capacity: options.indexFileBytes,
            files: try openFiles(indexDirectory, capacity: options.indexFileBytes, ignored: &ignored, kind: "index"))
        for (a, b) in zip(segments, segments.dropFirst()) where b.start != a.end {
            throw .layout("segments \(a.path) and \(b.path) are not contiguous (expected the second to start at \(a.end)); was mappedFileSizeCommitLog changed?")
        }
        // A verification after an earlier open found a damaged entry: refused until an operator
        // restored the node and removed the marker.
        if let marker = try FileIO.readFile(options.directory + "/" + Verification.markerName) {
            let f = Verification.parseMarker(marker) ?? Verification.Finding(file: options.directory + "/" + Verification.markerName, position: 0, reason: "unreadable marker")
            throw .corrupt(file: f.file, position: f.position, detail: "\(f.reason) (found by the verification after an earlier start; restore this node from a replica, then remove \(options.directory)/\(Verification.markerName))")
        }
        let checkpoint = (try FileIO.readFile(options.directory + "/checkpoint")).flatMap(CheckpointFile.decode)
        // What precedes the first entry, written when retention deleted segments or a reset emptied
        // the store (it is only believed where the log starts at its index).
        // The file holds one base, or two (the new one, then the old) while a segment is deleted.
        let baseBytes = try FileIO.readFile(options.directory + "/base") ?? []
        let savedBases = stride(from: 0, to: baseBytes.count, by: CheckpointFile.byteCount).compactMap { k -> DurablePoint? in
            k + CheckpointFile.byteCount <= baseBytes.count ? CheckpointFile.decode(Array(baseBytes[k..<(k + CheckpointFile.byteCount)])) : nil
        }
        let savedBase = savedBases.first
        let emptyBase = DurablePoint(endPosition: options.firstPositionOfEmptyStore.rawValue, nextIndex: options.firstIndexOfEmptyStore,
                                     lastTerm: Term(0), lastChainCRC: 0)
        func base(startingAt first: LogIndex) -> DurablePoint? {
            if let b = savedBases.first(where: { $0.nextIndex == first }) { return b }
            return first == options.firstIndexOfEmptyStore ? emptyBase : nil
        }

        guard let first = segments.first else {
            // A store that never held an entry, or whose last truncation emptied it before its first
            // segment existed.
            let end = checkpoint ?? savedBase ?? emptyBase
            if !index.files.isEmpty { try index.removeAll() }
            let report = RecoveryReport(
                segmentCount: 0, firstIndex: end.nextIndex, lastIndex: nil, usedCheckpoint: checkpoint != nil,
                scanStartPosition: end.endPosition, scannedBytes: 0, scannedEntries: 0, cut: nil,
                indexRecordsRewritten: 0, ignoredFiles: ignored)
            // An empty log's end is what precedes its first entry.
            return Result(segments: [], index: index, firstIndex: end.nextIndex, base: end,
                          end: end, checkpoint: checkpoint, report: report)
        }

        // The first entry of the log: the first segment always starts with one (or is empty).
        var firstReader = SegmentReader(segment: first, limit: first.end, chunkBytes: 4096)
        var firstIndex: LogIndex? = nil
        if case let .entry(h) = try firstReader.item(at: first.start), h.position.rawValue == first.start {
            firstIndex = h.index
        }

        // Where to start scanning: exactly at the checkpoint. Everything before it was durable, data
        // and index records, when it was written, and it carries the chain's state there (next
        // index, last term, last chain CRC), so the scan goes on from it as if it had read the
        // whole log. The entries before it are verified after the open (`Verification`), not
        // before: a start costs what was written since the last checkpoint, not the log's size.
        // Without a usable checkpoint (none, outside the segments, or index files that do not
        // cover the entries before it) the whole log is scanned.
        var scanFrom = 0
        var resume: DurablePoint? = nil
        if let checkpoint, let k = segments.firstIndex(where: { $0.contains(checkpoint.endPosition) || $0.end == checkpoint.endPosition }),
           let firstIndex, checkpoint.nextIndex >= firstIndex, index.covers(firstIndex, checkpoint.nextIndex) {
            // A checkpoint at a segment's very end resumes at the next segment's start, if there is one.
            if checkpoint.endPosition == segments[k].end && k + 1 < segments.count { scanFrom = k + 1 } else { scanFrom = k }
            resume = checkpoint
        } else if let checkpoint, checkpoint.endPosition == segments[0].start {
            // An emptied store remembers its next index this way.
            resume = checkpoint
        }
        let usedCheckpoint = resume != nil
        if let resume, resume.endPosition > segments[scanFrom].start, resume.endPosition < segments[scanFrom].end {
            // The data must reach the checkpoint (the verification after the open checks what is before it).
            let size = try segments[scanFrom].fileSize()
            if segments[scanFrom].start + size < resume.endPosition {
                throw .corrupt(file: segments[scanFrom].path, position: segments[scanFrom].start + size, detail: "the file ends at \(segments[scanFrom].start + size) but the checkpoint says the log was durable up to \(resume.endPosition): durable entries are missing")
            }
        }

        // What the log looks like just before the scan: the checkpoint, otherwise learned from the
        // first entry.
        let scanStart = resume.map { max($0.endPosition, segments[scanFrom].start) } ?? segments[0].start
        let initial = resume ?? DurablePoint(endPosition: scanStart, nextIndex: firstIndex ?? options.firstIndexOfEmptyStore, lastTerm: Term(0), lastChainCRC: 0)
        var scan = Scan(segments: segments, startSegment: scanFrom, startPosition: scanStart, chunkBytes: chunkBytes, initial: initial,
                        continuesChain: resume != nil && scanStart > segments[0].start)
        try scan.run(index: &index)

        // A stop at an invalid entry: torn tail or corruption?
        var cut: RecoveryReport.Cut? = nil
        if let stop = scan.stop {
            let segment = segments[stop.segment]
            let where_ = "\(segment.path) at position \(stop.position)"
            if stop.segment != segments.count - 1 {
                throw .corrupt(file: segment.path, position: stop.position, detail: "\(stop.reason); later segments exist, so this is not a torn tail. Restore this node from a replica (or move the damaged files aside)")
            }
            if let checkpoint, stop.position < checkpoint.endPosition {
                throw .corrupt(file: segment.path, position: stop.position, detail: "\(stop.reason); the checkpoint says the log was durable up to \(checkpoint.endPosition), so this is not a torn tail")
            }
            if let later = try scan.validEntryAfterStop(index: index) {
                throw .corrupt(file: segment.path, position: stop.position, detail: "\(stop.reason); a valid entry (index \(later.index)) follows at position \(later.position), so this is not a torn tail")
            }
            if try !segment.holdsOnlyZeros(from: stop.position) {
                let fileSize = try segment.fileSize()
                let local = stop.position - segment.start
                try segment.truncate(toLocal: local)
                try segment.sync()
                cut = RecoveryReport.Cut(file: segment.path, position: stop.position, bytesRemoved: fileSize > local ? fileSize - local : 0, reason: "\(stop.reason) at \(where_)")
            }
            // Nothing but zeros from the stop to the file's end: the log's end in prepared space
            // (LogStore+Prepare.swift), kept for the writes to come. A crash that left zeros where
            // writes had not reached the disk looks the same, and is the same: nothing was there.
            // Anything else after the stop (a torn entry, or entries whose earlier page did not
            // reach the disk) is cut as before: kept, it could resurface behind later appends.
        }

        // What the scan found may be only in the page cache: a process killed before its sync (a Raft
        // leader's deferred one, say) leaves its writes there while the machine runs on. The node
        // that starts on this log will acknowledge what it holds as durable, so make it so now. Only
        // the last segment can hold such bytes (a segment is synced whole when it is sealed, before
        // the next one is written); a file with nothing dirty syncs in microseconds.
        try segments[segments.count - 1].sync()

        let end = scan.end
        if let checkpoint, checkpoint.endPosition > end.endPosition {
            let last = segments[segments.count - 1]
            throw .corrupt(file: last.path, position: end.endPosition, detail: "the log ends at \(end.endPosition) but the checkpoint says it was durable up to \(checkpoint.endPosition): durable entries are missing")
        }
        let logFirst = firstIndex ?? scan.firstScannedIndex ?? checkpoint.map(\.nextIndex) ?? options.firstIndexOfEmptyStore
        let effectiveFirst = scan.scannedEntries == 0 && scanStart == segments[0].start ? end.nextIndex : logFirst
        try scan.flushIndex(&index)
        try index.truncate(from: end.nextIndex)
        if end.nextIndex > effectiveFirst { try index.deleteBefore(effectiveFirst) }
        for f in scan.indexFilesTouched { try f.sync() }

        let report = RecoveryReport(
            segmentCount: segments.count, firstIndex: effectiveFirst,
            lastIndex: end.nextIndex > effectiveFirst ? LogIndex(end.nextIndex.rawValue - 1) : nil,
            usedCheckpoint: usedCheckpoint, scanStartPosition: scanStart, scannedBytes: scan.scannedBytes,
            scannedEntries: scan.scannedEntries, cut: cut, indexRecordsRewritten: scan.indexRecordsRewritten,
            ignoredFiles: ignored)
        let last = segments[segments.count - 1]
        return Result(segments: segments, index: index, firstIndex: effectiveFirst, base: base(startingAt: effectiveFirst),
                      end: end, checkpoint: checkpoint, report: report, preparedEnd: last.start + (try last.fileSize()))
    }

    /// Opens the 20-digit-named files of a directory in order; other names are reported, not touched.
    func openFiles(_ directory: String, capacity: UInt64, ignored: inout [String], kind: String) throws(StorageError) -> [SegmentFile] {
        var files: [SegmentFile] = []
        for name in try FileIO.listDirectory(directory) {
            guard let start = SegmentName.parse(name) else {
                ignored.append(directory + "/" + name)
                continue
            }
            let f = try SegmentFile(directory: directory, start: start, capacity: capacity, create: false)
            let size = try f.fileSize()
            guard size <= capacity else {
                throw .layout("\(kind) file \(f.path) is \(size) bytes, larger than the configured \(capacity); was the file size setting changed?")
            }
            files.append(f)
        }
        return files.sorted { $0.start < $1.start }
    }
}

/// The forward scan of recovery.
struct Scan {
    struct Stop {
        var segment: Int
        var position: UInt64
        var reason: String
        /// Size the invalid header claimed, when it decoded.
        var claimedByteCount: Int?
    }

    let segments: [SegmentFile]
    let startSegment: Int
    /// Where in `startSegment` the scan begins (its start, or a checkpoint within it).
    let startPosition: UInt64
    /// Whether the first entry scanned must continue `initial`'s chain (index, term, chain CRC).
    let continuesChain: Bool
    let chunkBytes: Int
    var stop: Stop?
    var end: DurablePoint
    var firstScannedIndex: LogIndex?
    var scannedEntries = 0
    var scannedBytes: UInt64 = 0
    var indexRecordsRewritten = 0
    var indexFilesTouched: [SegmentFile] = []
    private var pendingIndex: [UInt8] = []
    private var pendingFirst = LogIndex(0)

    init(segments: [SegmentFile], startSegment: Int, startPosition: UInt64? = nil, chunkBytes: Int, initial: DurablePoint, continuesChain: Bool = false) {
        self.segments = segments
        self.startSegment = startSegment
        self.startPosition = startPosition ?? segments[startSegment].start
        self.continuesChain = continuesChain
        self.chunkBytes = chunkBytes
        self.end = initial
    }

    mutating func run(index: inout IndexFiles) throws(StorageError) {
        var expected: LogIndex? = continuesChain ? end.nextIndex : nil
        var previousChain: UInt32? = continuesChain ? end.lastChainCRC : nil
        var lastTerm = continuesChain ? end.lastTerm : Term(0)
        var position = startPosition
        for k in startSegment..<segments.count {
            let segment = segments[k]
            segment.adviseSequential()
            position = k == startSegment ? startPosition : segment.start
            var reader = SegmentReader(segment: segment, limit: segment.end, chunkBytes: chunkBytes)
            while true {
                let item = try reader.item(at: position)
                switch item {
                case let .blank(padding):
                    guard UInt64(exactly: padding) == segment.end - position else {
                        stop = Stop(segment: k, position: position, reason: "blank record of \(padding) bytes does not reach the segment's end (\(segment.end - position) bytes left)")
                        return
                    }
                    end.endPosition = segment.end
                    scannedBytes += UInt64(padding)
                case let .end(available):
                    if available > 0 || k != segments.count - 1 {
                        stop = Stop(segment: k, position: position, reason: available > 0 ? "file ends inside an entry header (\(available) bytes)" : "segment ends without a blank record")
                    } else {
                        end.endPosition = position
                    }
                    return
                case let .invalid(reason):
                    stop = Stop(segment: k, position: position, reason: reason)
                    return
                case let .entry(header):
                    if let why = try reader.verify(header, at: position, expectedIndex: expected, previousChainCRC: previousChain) {
                        stop = Stop(segment: k, position: position, reason: why, claimedByteCount: header.totalByteCount)
                        return
                    }
                    guard header.term >= lastTerm else {
                        stop = Stop(segment: k, position: position, reason: "entry \(header.index) has term \(header.term), below the previous term \(lastTerm)")
                        return
                    }
                    if firstScannedIndex == nil { firstScannedIndex = header.index }
                    try noteIndexRecord(IndexRecord(header), index: &index)
                    expected = header.index.next
                    previousChain = header.chainCRC
                    lastTerm = header.term
                    position += UInt64(header.totalByteCount)
                    scannedEntries += 1
                    scannedBytes += UInt64(header.totalByteCount)
                    end = DurablePoint(endPosition: position, nextIndex: header.index.next, lastTerm: header.term, lastChainCRC: header.chainCRC)
                    continue
                }
                break
            }
        }
    }

    /// Collects the expected index records and compares them with the files in 1 MiB batches.
    mutating func noteIndexRecord(_ record: IndexRecord, index: inout IndexFiles) throws(StorageError) {
        if pendingIndex.isEmpty { pendingFirst = record.index }
        record.encode(into: &pendingIndex)
        if pendingIndex.count >= 1 << 20 { try flushIndex(&index) }
    }

    mutating func flushIndex(_ index: inout IndexFiles) throws(StorageError) {
        guard !pendingIndex.isEmpty else { return }
        let count = pendingIndex.count / IndexRecord.byteCount
        let existing = try index.read(firstIndex: pendingFirst, count: count)
        if existing != pendingIndex {
            var differing = 0
            for i in 0..<count {
                let a = i * IndexRecord.byteCount
                if existing.count < a + IndexRecord.byteCount || existing[a..<(a + IndexRecord.byteCount)] != pendingIndex[a..<(a + IndexRecord.byteCount)] {
                    differing += 1
                }
            }
            indexRecordsRewritten += differing
            for f in try index.write(pendingIndex, firstIndex: pendingFirst) where !indexFilesTouched.contains(where: { $0 === f }) {
                indexFilesTouched.append(f)
            }
        }
        pendingFirst = LogIndex(pendingFirst.rawValue + UInt64(count))
        pendingIndex.removeAll(keepingCapacity: true)
    }

    /// Looks for a fully valid entry after the stop position in the last segment: at the position
    /// the broken header claimed to end, and wherever the index files say later entries were. One
    /// found means the damage is in the middle of the log.
    func validEntryAfterStop(index: IndexFiles) throws(StorageError) -> EntryHeader? {
        guard let stop else { return nil }
        let segment = segments[stop.segment]
        var candidates: [UInt64] = []
        if let claimed = stop.claimedByteCount {
            candidates.append(stop.position + UInt64(claimed))
        }
        let next = end.nextIndex
        let records = try index.read(firstIndex: next, count: 4096)
        for i in stride(from: 0, to: records.count, by: IndexRecord.byteCount) {
            let r = records.withUnsafeBytes { try? IndexRecord.decode(UnsafeRawBufferPointer(rebasing: $0[i..<(i + IndexRecord.byteCount)])) }
            if let r, r.index.rawValue == next.rawValue + UInt64(i / IndexRecord.byteCount), r.position.rawValue > stop.position {
                candidates.append(r.position.rawValue)
            }
        }
        var reader = SegmentReader(segment: segment, limit: segment.end, chunkBytes: 1 << 16)
        for c in candidates where c > stop.position && c + UInt64(EntryHeader.byteCount) <= segment.end {
            if case let .entry(h) = try reader.item(at: c), scannedEntries == 0 || h.index >= end.nextIndex,
                try reader.verify(h, at: c, expectedIndex: nil, previousChainCRC: nil) == nil {
                return h
            }
        }
        return nil
    }
}
