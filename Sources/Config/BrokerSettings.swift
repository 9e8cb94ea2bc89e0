/// Roles of a classic (non-Raft) broker.
public enum BrokerRole: String, Sendable, CaseIterable {
    case ASYNC_MASTER, SYNC_MASTER, SLAVE
}

/// `flushDiskType`.
public enum FlushDiskType: String, Sendable, CaseIterable {
    case ASYNC_FLUSH, SYNC_FLUSH
}

/// logLevel: logback's level names, as RocketMQ's logback configuration uses them.
public enum LogLevelName: String, Sendable, CaseIterable {
    case TRACE, DEBUG, INFO, WARN, ERROR
}

/// RaftMQ: where and how much a server process logs (logDir, logLevel). RocketMQ's habit: files under
/// ~/logs/rocketmqlogs/ (broker.log, namesrv.log), rolled by size; every line goes to standard error too.
public struct LoggingSettings: Sendable, Equatable {
    /// Empty: standard error only.
    public var logDir = "~/logs/rocketmqlogs"
    public var logLevel = LogLevelName.INFO
    public init() {}
}

/// RocketMQ's BrokerConfig and the network keys (NettyServerConfig), with RocketMQ 4.9's defaults.
public struct BrokerConfig: Sendable, Equatable {
    public var brokerClusterName = "DefaultCluster"
    public var brokerName = "DefaultBrokerName"
    /// -1 in a Raft group until its first role (see `RaftPeer.followerBrokerId`).
    public var brokerId: Int64 = 0
    /// The address registered with the nameservers; empty = detected at start.
    public var brokerIP1 = ""
    /// The HA address of a master; empty = brokerIP1.
    public var brokerIP2 = ""
    public var namesrvAddr = ""
    public var brokerPermission: Int64 = 6
    public var defaultTopicQueueNums: Int64 = 8
    public var autoCreateTopicEnable = true
    public var clusterTopicEnable = true
    public var brokerTopicEnable = true
    public var autoCreateSubscriptionGroup = true
    public var sendMessageThreadPoolNums: Int64 = 4
    public var pullMessageThreadPoolNums: Int64 = 20
    public var flushConsumerOffsetInterval: Int64 = 5000
    public var longPollingEnable = true
    public var shortPollingTimeMills: Int64 = 1000
    public var registerBrokerTimeoutMills: Int64 = 6000
    public var registerNameServerPeriod: Int64 = 30000
    public var slaveReadEnable = false
    public var brokerFastFailureEnable = true
    public var waitTimeMillsInSendQueue: Int64 = 200
    public var traceTopicEnable = false
    public var aclEnable = false
    public var checkTransactionMessageEnable = false
    /// Broker client port; fast channel = listenPort - 2, HA = listenPort + 1, HTTP = listenPort + 2.
    public var listenPort = 10911
    /// RaftMQ: the address every listener binds to.
    public var bindAddress = "0.0.0.0"
    /// `serverSelectorThreads` as the file sets it (BrokerSettings.serverSelectorThreads: the value
    /// in effect).
    public var serverSelectorThreadsSetting: Int64?
    /// The machine's cores, for defaults that follow them.
    public var cores: Int64 = 1
    /// RaftMQ: the HTTP/2 admin port; nil = listenPort + 2.
    public var httpListenPortSetting: Int?

    public var httpListenPort: Int { httpListenPortSetting ?? listenPort + 2 }
    public var fastListenPort: Int { listenPort - 2 }
    public var haListenPort: Int { listenPort + 1 }
    public var namesrvAddresses: [HostPort] { (try? Values.addressList(namesrvAddr)) ?? [] }
}

/// RocketMQ's MessageStoreConfig, with RocketMQ 4.9's defaults. Paths left unset derive from
/// `storePathRootDir`.
public struct MessageStoreConfig: Sendable, Equatable {
    public var storePathRootDir = "~/store"
    public var storePathCommitLogSetting: String?
    public var storePathConsumeQueueSetting: String?
    public var storePathIndexSetting: String?
    public var storeCheckpointSetting: String?
    public var abortFileSetting: String?
    public var mappedFileSizeCommitLog: Int64 = 1_073_741_824
    public var mappedFileSizeConsumeQueue: Int64 = 6_000_000
    /// RaftMQ: size of one commitlog index file (32-byte records; DLedger's 160 MiB).
    public var commitLogIndexFileSize: Int64 = 167_772_160
    public var flushIntervalCommitLog: Int64 = 500
    public var flushCommitLogLeastPages: Int64 = 4
    public var flushCommitLogThoroughInterval: Int64 = 10000
    public var flushCommitLogTimed = true
    public var flushIntervalConsumeQueue: Int64 = 1000
    public var flushConsumeQueueLeastPages: Int64 = 2
    public var flushConsumeQueueThoroughInterval: Int64 = 60000
    public var syncFlushTimeout: Int64 = 5000
    public var cleanResourceInterval: Int64 = 10000
    public var deleteWhen = "04"
    public var fileReservedTime: Int64 = 72
    public var diskMaxUsedSpaceRatio: Int64 = 75
    public var destroyMapedFileIntervalForcibly: Int64 = 120_000
    public var redeleteHangedFileInterval: Int64 = 120_000
    public var cleanFileForciblyEnable = true
    public var maxMessageSize: Int64 = 4_194_304
    public var checkCRCOnRecover = true
    /// `warmMapedFileEnable` as the file sets it; unset: `warmMapedFileEnable` follows the flush type.
    public var warmMapedFileEnableSetting: Bool?
    public var brokerRole = BrokerRole.ASYNC_MASTER
    public var flushDiskType = FlushDiskType.ASYNC_FLUSH
    public var haSendHeartbeatInterval: Int64 = 5000
    public var haHousekeepingInterval: Int64 = 20000
    public var haTransferBatchSize: Int64 = 32768
    public var haMasterAddress = ""
    public var haSlaveFallbehindMax: Int64 = 268_435_456
    public var messageIndexEnable = true
    public var maxHashSlotNum: Int64 = 5_000_000
    public var maxIndexNum: Int64 = 20_000_000
    public var transientStorePoolEnable = false
    public var messageDelayLevel = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"

    public var storePathCommitLog: String { storePathCommitLogSetting ?? storePathRootDir + "/commitlog" }
    /// Prepared space (LogStoreOptions.prepareAheadBytes). Unset: on with SYNC_FLUSH, where every
    /// acknowledgement waits for an fdatasync that prepared space makes about 2x faster; off with
    /// ASYNC_FLUSH, where the flushes run beside the sends and the zeros cost CPU and disk bandwidth
    /// for nothing (BENCHMARKS.md: ASYNC_FLUSH 9-17 % faster without them). RocketMQ: false.
    public var warmMapedFileEnable: Bool { warmMapedFileEnableSetting ?? (flushDiskType == .SYNC_FLUSH) }
    public var storePathConsumeQueue: String { storePathConsumeQueueSetting ?? storePathRootDir + "/consumequeue" }
    public var storePathIndex: String { storePathIndexSetting ?? storePathRootDir + "/index" }
    public var storeCheckpoint: String { storeCheckpointSetting ?? storePathRootDir + "/checkpoint" }
    public var abortFile: String { abortFileSetting ?? storePathRootDir + "/abort" }
}

/// The Raft group keys (RocketMQ's DLedger keys) and RaftMQ's Raft timing.
public struct RaftGroupConfig: Sendable, Equatable {
    public var enableDLegerCommitLog = false
    public var dLegerGroup = ""
    public var dLegerPeersText = ""
    public var dLegerSelfId = ""
    public var preferredLeaderId = ""
    public var enableBatchPush = false
    /// Leader heartbeat period. Defaults give sub-second failover: a follower that hears nothing for
    /// 300-600 ms campaigns (DLedger: 2 s heartbeats, 6 s detection).
    public var raftHeartbeatIntervalMs: Int64 = 100
    public var raftElectionTimeoutMinMs: Int64 = 300
    public var raftElectionTimeoutMaxMs: Int64 = 600

    /// Parsed `dLegerPeers` (validated by the loader when the Raft commitlog is enabled).
    public var peers: [RaftPeer] { (try? RaftPeer.parseList(dLegerPeersText)) ?? [] }
    public var selfPeer: RaftPeer? { peers.first { $0.id == dLegerSelfId } }
}

/// Everything a broker's configuration file says, validated.
public struct BrokerSettings: Sendable, Equatable {
    public var broker = BrokerConfig()
    public var store = MessageStoreConfig()
    public var raft = RaftGroupConfig()
    public var logging = LoggingSettings()
    /// The file it was read from.
    public var path = ""

    /// The broker's event loop threads (RocketMQ's selector threads). Unset: in a Raft member, whose
    /// driver shares the first loop, a quarter of the cores and at least one (measured on 2 cores,
    /// BENCHMARKS.md); in a classic broker, one per core, as before (not measured with fewer).
    public var serverSelectorThreads: Int64 {
        broker.serverSelectorThreadsSetting ?? (raft.enableDLegerCommitLog ? max(1, broker.cores / 4) : broker.cores)
    }

    /// Every supported key with its effective value (derived values included, legacy spellings under
    /// their current names), sorted by key: what `mqbroker -p` prints.
    public func effectiveProperties() -> [(String, String)] {
        BrokerKeys.all.map { ($0.name, $0.render(self)) }.sorted { $0.0 < $1.0 }
    }
}
