import Glibc
import LogFormat

/// The entries before the checkpoint, verified after the open instead of before it.
///
/// Recovery resumes at the checkpoint (everything before it was durable when it was written), so a
/// start costs what came after it, not the log's size: on a 1.2 GB log with 1 GiB segments the scan
/// of everything took 0.8 s from the page cache and 25 s from the disk. What it read before is now
/// read once the store is open by a thread of the idle scheduling class (SCHED_IDLE): the last three segments
/// before the checkpoint, as RocketMQ's recovery reads them (or the whole log when shorter), every
/// entry checked for position, index, term order, chain and body CRC, up to exactly the
/// checkpoint's index and chain. Reads verify every entry they serve anyway, so nothing corrupt is
/// served meanwhile.
///
/// A damaged entry stops the store (every later call fails with the finding) and leaves the file
/// `corrupt` in the store's directory, naming the segment file, the position and what is wrong; the
/// store then refuses to open until an operator restores the node from a replica and removes it.
struct Verification {
    struct Finding: Equatable, Sendable {
        var file: String
        var position: UInt64
        var reason: String
    }

    /// Where it reads from (a segment of `segments`) up to `checkpoint`.
    let segments: [SegmentFile]
    let fromSegment: Int
    let checkpoint: DurablePoint
    let chunkBytes: Int

    static let markerName = "corrupt"

    /// What a store opened from `recovered` verifies after the open, if anything.
    static func plan(_ r: Recovery.Result) -> Verification? {
        guard let checkpoint = r.checkpoint, r.report.usedCheckpoint, r.report.scanStartPosition > (r.segments.first?.start ?? 0),
              let k = r.segments.firstIndex(where: { $0.contains(r.report.scanStartPosition) || $0.end == r.report.scanStartPosition }) else { return nil }
        return Verification(segments: r.segments, fromSegment: max(0, k - 2), checkpoint: checkpoint, chunkBytes: 1 << 20)
    }

    /// Verifies the range; nil when every entry is valid and the chain ends exactly at the
    /// checkpoint. `stop` is asked between entries (a closing store ends it early: nil), and so is
    /// `limit`, the lowest position a truncation cut since the open: what is there now was written
    /// after the cut and is not the log this verifies (a finding there is dropped by the caller).
    func run(stop: () -> Bool, limit: () -> UInt64 = { .max }) throws(StorageError) -> Finding? {
        var expected: LogIndex? = nil
        var previousChain: UInt32? = nil
        var lastTerm = Term(0)
        let target = checkpoint.endPosition
        for k in fromSegment..<segments.count {
            let segment = segments[k]
            guard segment.start < target else { break }
            segment.adviseSequential()
            var reader = SegmentReader(segment: segment, limit: segment.end, chunkBytes: chunkBytes)
            var position = segment.start
            scan: while position < target {
                if stop() || position >= limit() { return nil }
                switch try reader.item(at: position) {
                case let .blank(padding):
                    guard UInt64(exactly: padding) == segment.end - position else {
                        return Finding(file: segment.path, position: position, reason: "blank record of \(padding) bytes does not reach the segment's end")
                    }
                    position = segment.end
                    break scan
                case .end:
                    return Finding(file: segment.path, position: position, reason: "the data ends here, before the checkpoint's position \(target): durable entries are missing")
                case let .invalid(reason):
                    return Finding(file: segment.path, position: position, reason: reason)
                case let .entry(header):
                    if let why = try reader.verify(header, at: position, expectedIndex: expected, previousChainCRC: previousChain) {
                        return Finding(file: segment.path, position: position, reason: why)
                    }
                    guard header.term >= lastTerm else {
                        return Finding(file: segment.path, position: position, reason: "entry \(header.index) has term \(header.term), below the previous term \(lastTerm)")
                    }
                    expected = header.index.next
                    previousChain = header.chainCRC
                    lastTerm = header.term
                    position += UInt64(header.totalByteCount)
                }
            }
            if position > target {
                return Finding(file: segment.path, position: target, reason: "the checkpoint's position \(target) is inside an entry")
            }
        }
        if let expected, limit() >= target, expected != checkpoint.nextIndex || previousChain != checkpoint.lastChainCRC || lastTerm != checkpoint.lastTerm {
            let last = segments.last { $0.start < target } ?? segments[fromSegment]
            return Finding(file: last.path, position: target, reason: "the entries before the checkpoint end at index \(expected) (chain CRC \(previousChain ?? 0), term \(lastTerm)); the checkpoint says \(checkpoint.nextIndex) (\(checkpoint.lastChainCRC), term \(checkpoint.lastTerm))")
        }
        return nil
    }

    // MARK: - The marker

    static func markerText(_ f: Finding) -> String {
        "file=\(f.file)\nposition=\(f.position)\nreason=\(f.reason)\n"
    }

    static func parseMarker(_ bytes: [UInt8]) -> Finding? {
        var fields: [String: String] = [:]
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            fields[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        guard let file = fields["file"], let p = fields["position"].flatMap({ UInt64($0) }) else { return nil }
        return Finding(file: file, position: p, reason: fields["reason"] ?? "")
    }
}

extension LogStore {
    /// Whether the verification of the entries before the checkpoint (see `Verification`) is still
    /// running, and what it found.
    public var verification: (running: Bool, finding: String?) {
        lock.withLock { (state.verifierRunning, state.verificationFinding) }
    }

    /// Tests: waits until the verification ended (or `timeoutSeconds` passed); returns its finding.
    public func awaitVerification(timeoutSeconds: Double = 60) -> String? {
        let deadline = monotonicMilliseconds() + UInt64(timeoutSeconds * 1000)
        while lock.withLock({ state.verifierRunning }) && monotonicMilliseconds() < deadline { usleep(2_000) }
        return lock.withLock { state.verificationFinding }
    }

    func startVerification(_ v: Verification) {
        lock.withLock { state.verifierRunning = true }
        startThread { [self] in
            // The idle scheduling class for this thread only (Linux SCHED_IDLE = 5): serving comes first.
            var param = sched_param()
            _ = pthread_setschedparam(pthread_self(), 5, &param)
            let result: Result<Verification.Finding?, StorageError>
            do throws(StorageError) {
                result = .success(try v.run(stop: { lock.withLock { state.closing } }, limit: { lock.withLock { state.verifyLimit } }))
            } catch {
                result = .failure(error)
            }
            var finding: Verification.Finding?
            switch result {
            case .success(let f): finding = f
            case .failure(let e):
                // A read error on the way is itself a finding about the files.
                finding = Verification.Finding(file: v.segments[v.fromSegment].path, position: v.segments[v.fromSegment].start, reason: "reading failed: \(e)")
            }
            // Found where a truncation cut meanwhile (a Raft conflict, a reset): the entries read
            // there are not the ones the checkpoint described.
            if let f = finding, f.position >= lock.withLock({ state.verifyLimit }) { finding = nil }
            if let finding {
                let text = "corrupt entry found by the verification after the open: \(finding.file) at position \(finding.position): \(finding.reason). Restore this node from a replica (or move the damaged files aside), then remove \(options.directory)/\(Verification.markerName)"
                // The marker first: the next open must refuse, whatever happens to this process.
                try? FileIO.writeAtomically(Array(Verification.markerText(finding).utf8), to: options.directory + "/" + Verification.markerName)
                lock.withLock {
                    state.verificationFinding = text
                    if state.failure == nil { state.failure = text }
                    failWaiters(StorageError.corrupt(file: finding.file, position: finding.position, detail: finding.reason))
                }
            }
            lock.withLock {
                state.verifierRunning = false
                lock.broadcast()
            }
        }
    }
}
