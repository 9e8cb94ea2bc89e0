import LogFormat

/// When appended entries become durable.
public enum FlushMode: Sendable, Equatable {
    /// `flushDiskType=SYNC_FLUSH`: `append` returns only after the entries are fdatasync'ed. Appends
    /// that arrive while a sync runs share the next one (group commit).
    case sync
    /// `flushDiskType=ASYNC_FLUSH`: `append` returns once the bytes are in the page cache. A
    /// background flush runs every `intervalMs` when at least `leastBytes` are dirty, and regardless
    /// every `thoroughIntervalMs` (RocketMQ's flushIntervalCommitLog, flushCommitLogLeastPages x 4 KiB,
    /// flushCommitLogThoroughInterval).
    case async(intervalMs: Int, leastBytes: Int, thoroughIntervalMs: Int)

    public static let rocketMQAsyncDefault = FlushMode.async(intervalMs: 500, leastBytes: 4 * 4096, thoroughIntervalMs: 10_000)
}

/// Everything `LogStore.open` needs. Sizes are validated there.
public struct LogStoreOptions: Sendable {
    /// The store's directory; data segments live in `data/`, index files in `index/`.
    public var directory: String
    /// Size of one data segment (`mappedFileSizeCommitLog`, 1 GiB by default).
    public var segmentBytes: UInt64
    /// Size of one index file; a multiple of 32 (DLedger: 160 MiB, 5,242,880 records).
    public var indexFileBytes: UInt64
    public var flushMode: FlushMode
    /// Largest body accepted by `append` (RocketMQ's maxMessageSize is checked above this; this bound
    /// protects the segment: an entry must fit in one segment with room for a blank record).
    public var entryBodyBytesMax: Int
    /// How often the checkpoint (the position recovery starts from) is made durable.
    public var checkpointIntervalMs: Int
    /// Writes are refused while the disk is fuller than this (`diskMaxUsedSpaceRatio`, percent).
    public var diskMaxUsedSpaceRatio: Int
    /// How often disk usage is sampled for the guard above.
    public var diskUsageSampleIntervalMs: Int
    /// The index of the first entry of a store that has never held one (DLedger starts at 0).
    public var firstIndexOfEmptyStore: LogIndex
    /// Where an empty store's first segment starts (RocketMQ's dividedCommitlogOffset when a classic
    /// commitlog precedes it; 0 otherwise). Must be a multiple of nothing in particular: positions are
    /// absolute, segments are `segmentBytes` apart from here.
    public var firstPositionOfEmptyStore: LogPosition
    /// Zeros kept written and synced this far ahead of the log's end in the active segment, so a
    /// group commit's fdatasync overwrites allocated blocks instead of growing the file (about twice
    /// as fast here; LogStore+Prepare.swift). 0: segments grow as the log writes them.
    /// The broker's `warmMapedFileEnable`.
    public var prepareAheadBytes: UInt64 = 0
    /// Tests: the preparer sleeps this long between claiming a chunk and writing it, so that
    /// appenders reach the claimed chunk meanwhile.
    var prepareClaimDelayMicroseconds: UInt32 = 0
    /// What the broker keeps prepared with `warmMapedFileEnable=true`.
    public static let brokerPrepareAheadBytes: UInt64 = 16 << 20
    /// Disk usage source; tests replace it. Returns a fraction 0...1 for the directory.
    public var diskUsage: @Sendable (String) throws(StorageError) -> Double

    public init(
        directory: String,
        segmentBytes: UInt64 = 1 << 30,
        indexFileBytes: UInt64 = 32 * 5 * 1024 * 1024,
        flushMode: FlushMode = .rocketMQAsyncDefault,
        entryBodyBytesMax: Int = 4 * 1024 * 1024,
        checkpointIntervalMs: Int = 1000,
        diskMaxUsedSpaceRatio: Int = 75,
        diskUsageSampleIntervalMs: Int = 100,
        firstIndexOfEmptyStore: LogIndex = LogIndex(0),
        firstPositionOfEmptyStore: LogPosition = LogPosition(0),
        diskUsage: @escaping @Sendable (String) throws(StorageError) -> Double = LogStoreOptions.statvfsDiskUsage
    ) {
        self.directory = directory
        self.segmentBytes = segmentBytes
        self.indexFileBytes = indexFileBytes
        self.flushMode = flushMode
        self.entryBodyBytesMax = entryBodyBytesMax
        self.checkpointIntervalMs = checkpointIntervalMs
        self.diskMaxUsedSpaceRatio = diskMaxUsedSpaceRatio
        self.diskUsageSampleIntervalMs = diskUsageSampleIntervalMs
        self.firstIndexOfEmptyStore = firstIndexOfEmptyStore
        self.firstPositionOfEmptyStore = firstPositionOfEmptyStore
        self.diskUsage = diskUsage
    }

    /// Disk usage of the filesystem holding `path`, from statvfs (what `df` shows).
    public static func statvfsDiskUsage(_ path: String) throws(StorageError) -> Double { try FileIO.diskUsedRatio(path) }

    func validate() throws(StorageError) {
        guard segmentBytes >= 4096 else { throw .invalidArgument("segment size \(segmentBytes) is below 4096 bytes") }
        guard segmentBytes <= UInt64(Int32.max) + 1 else {
            throw .invalidArgument("segment size \(segmentBytes) is above 2 GiB (entry sizes are 32-bit)")
        }
        guard indexFileBytes >= 32, indexFileBytes % UInt64(IndexRecord.byteCount) == 0 else {
            throw .invalidArgument("index file size \(indexFileBytes) is not a positive multiple of 32")
        }
        guard entryBodyBytesMax > 0,
            UInt64(entryBodyBytesMax + EntryHeader.byteCount + BlankRecord.headerByteCount) <= segmentBytes
        else {
            throw .invalidArgument(
                "largest entry (\(entryBodyBytesMax) + 48 bytes) does not fit in a \(segmentBytes)-byte segment")
        }
        guard (1...100).contains(diskMaxUsedSpaceRatio) else {
            throw .invalidArgument("diskMaxUsedSpaceRatio \(diskMaxUsedSpaceRatio) is not within 1...100")
        }
        guard checkpointIntervalMs > 0, diskUsageSampleIntervalMs > 0 else {
            throw .invalidArgument("intervals must be positive")
        }
        guard prepareAheadBytes == 0 || prepareAheadBytes >= 1 << 20 else {
            throw .invalidArgument("prepareAheadBytes \(prepareAheadBytes) is neither 0 nor at least 1 MiB")
        }
        if case let .async(interval, least, thorough) = flushMode {
            guard interval > 0, least >= 0, thorough > 0 else {
                throw .invalidArgument("ASYNC_FLUSH intervals must be positive")
            }
        }
    }
}
