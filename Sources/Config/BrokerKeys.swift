/// Every key a broker file may hold: one flat namespace over BrokerConfig, MessageStoreConfig, the
/// DLedger keys and RaftMQ's own keys, as RocketMQ matches keys to setters by name.
enum BrokerKeys {
    typealias Key = ConfigKey<BrokerSettings>

    static let identity = "Cluster identity"
    static let network = "Network"
    static let paths = "Storage paths"
    static let storage = "Commitlog, consume queues and flushing"
    static let retention = "Retention and disk space"
    static let raft = "Raft group (enableDLegerCommitLog=true)"
    static let classic = "Classic master/slave groups"
    static let limits = "Topics, consumers and limits"
    static let logs = "Logs"

    static var all: [Key] {
        [
            // Cluster identity
            .string("brokerClusterName", \.broker.brokerClusterName, section: identity, check: Values.name, "Cluster this broker belongs to (brokers with the same name form one cluster)."),
            .string("brokerName", \.broker.brokerName, section: identity, check: Values.name, "Broker group name: a master and its slaves, or the members of a Raft group, share it."),
            .int("brokerId", \.broker.brokerId, 0...Int64(Int32.max), section: identity, "0 = master, > 0 = slave (classic groups). In a Raft group the id follows the role: 0 on the leader, digits of dLegerSelfId + 1 on followers."),
            .string("brokerIP1", \.broker.brokerIP1, section: identity, "Address registered with the nameservers. Empty: bindAddress if it is specific, otherwise detected at start."),
            .string("brokerIP2", \.broker.brokerIP2, section: identity, "Address slaves use to reach this master for HA. Empty: brokerIP1."),
            .string("namesrvAddr", \.broker.namesrvAddr, section: identity, check: { (t: String) throws(ValueError) -> String in _ = try Values.addressList(t); return t }, "Nameservers, host:port separated by ';'. Default: $NAMESRV_ADDR. mqbroker -n overrides it."),
            // Network
            .port("listenPort", \.broker.listenPort, section: network, "Client port. The broker also takes listenPort - 2 (fast channel), listenPort + 1 (classic HA) and listenPort + 2 (HTTP, unless httpListenPort says otherwise)."),
            Key(name: "serverSelectorThreads", aliases: [], section: network, doc: "Event loop threads of the broker's network I/O: client connections, HTTP, nameserver registration (RocketMQ: NIO selector threads, default 3). In a Raft member the Raft driver and its peer connections run on the first of them, so a send read on that loop reaches the driver without a thread hand-off; on the 2-core machine of BENCHMARKS.md one loop gave 14-33 % less server CPU per message (ASYNC_FLUSH: 7-41 % more msgs/s) than a driver thread of its own beside two loops. Default: a quarter of the cores, at least 1, in a Raft member; one per core in a classic broker.", apply: { (s: inout BrokerSettings, t: String) throws(ValueError) in
                s.broker.serverSelectorThreadsSetting = try Values.int(t, 1...256)
            }, render: { String($0.serverSelectorThreads) }),
            .string("bindAddress", \.broker.bindAddress, section: network, "RaftMQ: the address every broker listener binds to (client, fast, HA, HTTP). Raft peers bind the address of their own dLegerPeers entry."),
            Key(name: "httpListenPort", aliases: [], section: network, doc: "RaftMQ: HTTP/2 (h2c) and HTTP/1.1 admin port serving /raft/state, /healthz, /metrics. Default: listenPort + 2.", apply: { (s: inout BrokerSettings, t: String) throws(ValueError) in
                s.broker.httpListenPortSetting = try Values.port(t)
            }, render: { String($0.broker.httpListenPort) }),
            Key(name: "haListenPort", aliases: [], section: classic, doc: "Classic HA port. As in RocketMQ it is always listenPort + 1; a different value is ignored with a warning.", apply: { (_: inout BrokerSettings, t: String) throws(ValueError) in
                _ = try Values.port(t)
            }, render: { String($0.broker.haListenPort) }),
            // Logs
            .string("logDir", \.logging.logDir, section: logs, "RaftMQ: directory of broker.log (rolled at 128 MiB, 10 files kept); every line also goes to standard error. Empty: standard error only. Default: $HOME/logs/rocketmqlogs (RocketMQ's place). Brokers sharing a host should each have their own."),
            .enumeration("logLevel", \.logging.logLevel, section: logs, "RaftMQ: TRACE, DEBUG, INFO, WARN or ERROR."),
            // Paths
            .string("storePathRootDir", \.store.storePathRootDir, section: paths, "Root of the store. Default: $HOME/store."),
            .derivedString("storePathCommitLog", \.store.storePathCommitLogSetting, effective: { $0.store.storePathCommitLog }, section: paths, "Classic commitlog directory. Default: <storePathRootDir>/commitlog. (A Raft group keeps its log in <storePathRootDir>/dledger-<selfId>.)"),
            .derivedString("storePathConsumeQueue", \.store.storePathConsumeQueueSetting, effective: { $0.store.storePathConsumeQueue }, section: paths, "Consume queue directory. Default: <storePathRootDir>/consumequeue."),
            .derivedString("storePathIndex", \.store.storePathIndexSetting, effective: { $0.store.storePathIndex }, section: paths, "Message key index directory. Default: <storePathRootDir>/index."),
            .derivedString("storeCheckpoint", \.store.storeCheckpointSetting, effective: { $0.store.storeCheckpoint }, section: paths, "Checkpoint file. Default: <storePathRootDir>/checkpoint."),
            .derivedString("abortFile", \.store.abortFileSetting, effective: { $0.store.abortFile }, section: paths, "Abort marker file (present while running). Default: <storePathRootDir>/abort."),
            // Storage
            .int("mappedFileSizeCommitLog", \.store.mappedFileSizeCommitLog, 4096...Int64(Int32.max), section: storage, aliases: ["mapedFileSizeCommitLog"], "Bytes per commitlog segment file (legacy spelling mapedFileSizeCommitLog accepted). All members of a group must agree."),
            .int("mappedFileSizeConsumeQueue", \.store.mappedFileSizeConsumeQueue, 20...Int64(Int32.max), section: storage, aliases: ["mapedFileSizeConsumeQueue"], "Bytes per consume queue file, 20 bytes an entry (legacy spelling mapedFileSizeConsumeQueue accepted)."),
            .int("commitLogIndexFileSize", \.store.commitLogIndexFileSize, 32...Int64(Int32.max), section: storage, "RaftMQ: bytes per commitlog index file, a multiple of 32 (one 32-byte record per entry)."),
            .enumeration("flushDiskType", \.store.flushDiskType, section: storage, "SYNC_FLUSH: a send is acknowledged after fdatasync (group commit). ASYNC_FLUSH: after the page cache; flushed on an interval."),
            .int("flushIntervalCommitLog", \.store.flushIntervalCommitLog, 1...3_600_000, section: storage, "ASYNC_FLUSH: ms between flushes."),
            .int("flushCommitLogLeastPages", \.store.flushCommitLogLeastPages, 0...1_000_000, section: storage, "ASYNC_FLUSH: flush only when at least this many 4 KiB pages are dirty."),
            .int("flushCommitLogThoroughInterval", \.store.flushCommitLogThoroughInterval, 1...3_600_000, section: storage, "ASYNC_FLUSH: ms after which dirty data is flushed regardless of its size."),
            .bool("flushCommitLogTimed", \.store.flushCommitLogTimed, section: storage, "ASYNC_FLUSH: sleep a fixed interval between flushes (RocketMQ's meaning)."),
            .int("flushIntervalConsumeQueue", \.store.flushIntervalConsumeQueue, 1...3_600_000, section: storage, "ms between consume queue flushes."),
            .int("flushConsumeQueueLeastPages", \.store.flushConsumeQueueLeastPages, 0...1_000_000, section: storage, "Consume queue pages that must be dirty before a flush."),
            .int("flushConsumeQueueThoroughInterval", \.store.flushConsumeQueueThoroughInterval, 1...3_600_000, section: storage, "ms after which consume queues are flushed regardless."),
            .int("syncFlushTimeout", \.store.syncFlushTimeout, 1...600_000, section: storage, "SYNC_FLUSH: ms a send waits for its flush before FLUSH_DISK_TIMEOUT."),
            .bool("checkCRCOnRecover", \.store.checkCRCOnRecover, section: storage, "Verify message body CRCs while recovering. (RaftMQ always verifies its own entry checksums.)"),
            Key(name: "warmMapedFileEnable", aliases: [], section: storage, doc: "Keep the commitlog written with zeros (and synced) 16 MiB ahead of its end, so a flush overwrites allocated blocks instead of growing the file: about 2x faster fdatasyncs here. RaftMQ's default follows flushDiskType: true with SYNC_FLUSH (every send waits for a flush), false with ASYNC_FLUSH (the zeros would cost CPU and disk for nothing). RocketMQ's is false, where it pre-touches a whole new mapped file.", apply: { (s: inout BrokerSettings, t: String) throws(ValueError) in
                s.store.warmMapedFileEnableSetting = try Values.bool(t)
            }, render: { String($0.store.warmMapedFileEnable) }),
            .bool("transientStorePoolEnable", \.store.transientStorePoolEnable, section: storage, "RocketMQ's off-heap write buffer. Accepted; RaftMQ's SYNC_FLUSH write-behind buffer plays this part."),
            .bool("messageIndexEnable", \.store.messageIndexEnable, section: storage, "Index messages by key and id (queryMsgByKey, queryMsgById)."),
            .int("maxHashSlotNum", \.store.maxHashSlotNum, 1...Int64(Int32.max), section: storage, "Hash slots per index file."),
            .int("maxIndexNum", \.store.maxIndexNum, 1...Int64(Int32.max), section: storage, "Entries per index file."),
            // Retention
            .string("deleteWhen", \.store.deleteWhen, section: retention, check: Values.hours, "Hours of the day (0-23, ';'-separated) in which expired commitlog files are deleted."),
            .int("fileReservedTime", \.store.fileReservedTime, 0...876_000, section: retention, "Hours a commitlog file is kept after its last write (0: any file no longer written may go)."),
            .int("diskMaxUsedSpaceRatio", \.store.diskMaxUsedSpaceRatio, 10...95, section: retention, "Percent of the disk the store may fill. Above it expired files are deleted at any hour, and RaftMQ refuses writes (reads are still served)."),
            .bool("cleanFileForciblyEnable", \.store.cleanFileForciblyEnable, section: retention, "Above 85 % disk use, delete files even before they expire."),
            .int("cleanResourceInterval", \.store.cleanResourceInterval, 100...3_600_000, section: retention, "ms between retention runs."),
            .int("destroyMapedFileIntervalForcibly", \.store.destroyMapedFileIntervalForcibly, 0...86_400_000, section: retention, "ms after which a file still in use is deleted anyway."),
            .int("redeleteHangedFileInterval", \.store.redeleteHangedFileInterval, 0...86_400_000, section: retention, "ms between retries of a file deletion that did not finish."),
            // Raft group
            .bool("enableDLegerCommitLog", \.raft.enableDLegerCommitLog, section: raft, "true: the commitlog is a Raft log replicated in the group dLegerPeers; the elected leader is the master."),
            .string("dLegerGroup", \.raft.dLegerGroup, section: raft, "Raft group name (keep it equal to brokerName)."),
            .string("dLegerPeers", \.raft.dLegerPeersText, section: raft, check: { (t: String) throws(ValueError) -> String in _ = try RaftPeer.parseList(t); return t }, "Group members: id-host:port separated by ';', identical on every member, e.g. n0-mq1:40911;n1-mq2:40911;n2-mq3:40911."),
            .string("dLegerSelfId", \.raft.dLegerSelfId, section: raft, "This node's id in dLegerPeers (must be unique in the group)."),
            .string("preferredLeaderId", \.raft.preferredLeaderId, section: raft, "Node that should lead when it is healthy and caught up (leadership moves to it). Empty: none."),
            .bool("enableBatchPush", \.raft.enableBatchPush, section: raft, "DLedger's batch replication switch. Accepted; RaftMQ always batches."),
            .int("raftHeartbeatIntervalMs", \.raft.raftHeartbeatIntervalMs, 10...60_000, section: raft, "RaftMQ: ms between leader heartbeats."),
            .int("raftElectionTimeoutMinMs", \.raft.raftElectionTimeoutMinMs, 20...600_000, section: raft, "RaftMQ: a follower campaigns after hearing nothing for a random time between min and max ms."),
            .int("raftElectionTimeoutMaxMs", \.raft.raftElectionTimeoutMaxMs, 21...600_000, section: raft, "RaftMQ: see raftElectionTimeoutMinMs."),
            // Classic groups
            .enumeration("brokerRole", \.store.brokerRole, section: classic, "ASYNC_MASTER, SYNC_MASTER (a send waits until a slave has it) or SLAVE. Ignored in a Raft group."),
            .string("haMasterAddress", \.store.haMasterAddress, section: classic, "SLAVE: master HA address host:port. Empty: learned from the nameservers."),
            .int("haSendHeartbeatInterval", \.store.haSendHeartbeatInterval, 100...600_000, section: classic, "SLAVE: ms between progress reports to the master."),
            .int("haHousekeepingInterval", \.store.haHousekeepingInterval, 100...600_000, section: classic, "MASTER: ms of silence after which a slave connection is dropped."),
            .int("haTransferBatchSize", \.store.haTransferBatchSize, 1024...Int64(Int32.max), section: classic, "Bytes per HA transfer."),
            .int("haSlaveFallbehindMax", \.store.haSlaveFallbehindMax, 0...Int64.max, section: classic, "SYNC_MASTER: a slave more than this many bytes behind does not count as in sync."),
            .bool("slaveReadEnable", \.broker.slaveReadEnable, section: classic, "Let consumers read from slaves when the master is busy."),
            // Topics, consumers, limits
            .int("defaultTopicQueueNums", \.broker.defaultTopicQueueNums, 1...1024, section: limits, "Queues of a topic created on first send."),
            .bool("autoCreateTopicEnable", \.broker.autoCreateTopicEnable, section: limits, "Create a topic on its first send (recommended off in production)."),
            .bool("autoCreateSubscriptionGroup", \.broker.autoCreateSubscriptionGroup, section: limits, "Create a consumer group on its first use."),
            .bool("clusterTopicEnable", \.broker.clusterTopicEnable, section: limits, "Create the topic named after the cluster."),
            .bool("brokerTopicEnable", \.broker.brokerTopicEnable, section: limits, "Create the topic named after the broker."),
            .int("brokerPermission", \.broker.brokerPermission, 0...15, section: limits, "6 = read and write, 4 = read only, 2 = write only."),
            .int("maxMessageSize", \.store.maxMessageSize, 1...Int64(Int32.max), section: limits, "Largest message record accepted, bytes."),
            .string("messageDelayLevel", \.store.messageDelayLevel, section: limits, check: Values.delayLevels, "Delays of the 18 delay levels."),
            .int("sendMessageThreadPoolNums", \.broker.sendMessageThreadPoolNums, 1...1024, section: limits, "Send handlers working at once."),
            .int("pullMessageThreadPoolNums", \.broker.pullMessageThreadPoolNums, 1...1024, section: limits, "Pull handlers working at once."),
            .bool("longPollingEnable", \.broker.longPollingEnable, section: limits, "Hold pulls until messages arrive."),
            .int("shortPollingTimeMills", \.broker.shortPollingTimeMills, 1...600_000, section: limits, "ms a pull is held when long polling is off."),
            .int("flushConsumerOffsetInterval", \.broker.flushConsumerOffsetInterval, 100...600_000, section: limits, "ms between consumer offset saves."),
            .int("registerBrokerTimeoutMills", \.broker.registerBrokerTimeoutMills, 100...600_000, section: limits, "ms a nameserver registration may take."),
            .int("registerNameServerPeriod", \.broker.registerNameServerPeriod, 1000...600_000, section: limits, "ms between registrations with every nameserver."),
            .bool("brokerFastFailureEnable", \.broker.brokerFastFailureEnable, section: limits, "Answer SYSTEM_BUSY to sends that waited too long in the queue."),
            .int("waitTimeMillsInSendQueue", \.broker.waitTimeMillsInSendQueue, 1...600_000, section: limits, "ms a send may wait in the queue before SYSTEM_BUSY."),
            .bool("traceTopicEnable", \.broker.traceTopicEnable, section: limits, "Create RMQ_SYS_TRACE_TOPIC for message traces."),
            .bool("aclEnable", \.broker.aclEnable, section: limits, "Access control lists. Accepted; not supported yet (a broker with aclEnable=true refuses to start)."),
            .bool("checkTransactionMessageEnable", \.broker.checkTransactionMessageEnable, section: limits, "Old RocketMQ key, accepted and ignored."),
        ]
    }

    /// Names and legacy spellings, for lookups and suggestions.
    static func index() -> [String: Key] {
        var out: [String: Key] = [:]
        for k in all {
            out[k.name] = k
            for a in k.aliases { out[a] = k }
        }
        return out
    }
}
