import LogFormat

/// Which old segments may go, RocketMQ's rules (`CleanCommitLogService`, `DefaultMessageStore`):
///
/// - a segment is *expired* when its last modification is more than `fileReservedHours` ago;
/// - expired segments are deleted during the `deleteWhen` hours, or at any hour when the disk is
///   fuller than `diskMaxUsedSpaceRatio`;
/// - above `forceCleanRatio` (RocketMQ's 85%) with `cleanFileForcibly`, segments go even unexpired;
/// - oldest first, at most `segmentsPerRunMax` per run, never the segment being written, stopping at
///   the first one that may not go.
///
/// A pure function of its inputs: the wall clock and the hour come in as values.
public struct RetentionPolicy: Sendable, Equatable {
    public var fileReservedHours: Int
    /// Hours of the day (0-23) in which expired segments are deleted (`deleteWhen=04;05`).
    public var deleteWhenHours: Set<Int>
    public var diskMaxUsedSpaceRatio: Int
    public var forceCleanRatio: Int
    public var cleanFileForcibly: Bool
    public var segmentsPerRunMax: Int

    public init(
        fileReservedHours: Int = 72, deleteWhenHours: Set<Int> = [4], diskMaxUsedSpaceRatio: Int = 75,
        forceCleanRatio: Int = 85, cleanFileForcibly: Bool = true, segmentsPerRunMax: Int = 10
    ) {
        self.fileReservedHours = fileReservedHours
        self.deleteWhenHours = deleteWhenHours
        self.diskMaxUsedSpaceRatio = diskMaxUsedSpaceRatio
        self.forceCleanRatio = forceCleanRatio
        self.cleanFileForcibly = cleanFileForcibly
        self.segmentsPerRunMax = segmentsPerRunMax
    }

    /// Why a run deletes (or not).
    public enum Reason: String, Sendable, Equatable {
        case deleteWhenHour, diskAboveMaxUsedRatio, diskAboveForceCleanRatio
    }

    /// How many of the oldest segments to delete now. `modificationTimes` are seconds since the
    /// epoch, oldest segment first, the last one being the segment in use.
    public func segmentsToDelete(modificationTimes: [Int64], nowSeconds: Int64, hourOfDay: Int, diskUsedRatio: Double) -> (count: Int, reason: Reason?) {
        let usedPercent = diskUsedRatio * 100
        let reason: Reason?
        if cleanFileForcibly && usedPercent > Double(forceCleanRatio) {
            reason = .diskAboveForceCleanRatio
        } else if usedPercent > Double(diskMaxUsedSpaceRatio) {
            reason = .diskAboveMaxUsedRatio
        } else if deleteWhenHours.contains(hourOfDay) {
            reason = .deleteWhenHour
        } else {
            reason = nil
        }
        guard let reason else { return (0, nil) }
        let reserved = Int64(fileReservedHours) * 3600
        var count = 0
        for mtime in modificationTimes.dropLast() {
            guard count < segmentsPerRunMax else { break }
            let expired = mtime + reserved < nowSeconds
            guard expired || reason == .diskAboveForceCleanRatio else { break }
            count += 1
        }
        return (count, count > 0 ? reason : nil)
    }

    /// Parses `deleteWhen` ("04", "04;05"): hours 0-23 separated by semicolons.
    public static func parseDeleteWhen(_ text: String) -> Set<Int>? {
        var hours = Set<Int>()
        for part in text.split(separator: ";", omittingEmptySubsequences: true) {
            guard let h = Int(part.trimmingSpaces), (0...23).contains(h) else { return nil }
            hours.insert(h)
        }
        return hours.isEmpty ? nil : hours
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return s
    }
}

/// What one retention run did.
public struct RetentionResult: Sendable, Equatable {
    public var segmentsDeleted: Int
    public var reason: RetentionPolicy.Reason?
    public var firstIndex: LogIndex
}

extension LogStore {
    /// Applies `policy` once: deletes the old segments it selects, but never one holding an entry at
    /// or after `keepFrom` (the caller's floor, e.g. entries not yet dispatched or replicated).
    @discardableResult
    public func applyRetention(
        _ policy: RetentionPolicy, nowSeconds: Int64, hourOfDay: Int, keepFrom: LogIndex? = nil
    ) throws(StorageError) -> RetentionResult {
        let paths = lock.withLock { state.segments.map(\.path) }
        var mtimes: [Int64] = []
        for p in paths { mtimes.append(try FileIO.modificationTime(p)) }
        let ratio = try options.diskUsage(options.directory)
        let (count, reason) = policy.segmentsToDelete(modificationTimes: mtimes, nowSeconds: nowSeconds, hourOfDay: hourOfDay, diskUsedRatio: ratio)
        var deleted = 0
        if count > 0 {
            var allowed = 0
            deleted = try deleteLeadingSegments { _, nextFirst in
                guard allowed < count else { return false }
                if let keepFrom, nextFirst > keepFrom { return false }
                allowed += 1
                return true
            }
        }
        return RetentionResult(segmentsDeleted: deleted, reason: deleted > 0 ? reason : nil, firstIndex: firstIndex)
    }
}
