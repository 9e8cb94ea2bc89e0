import Broker
import Config
import Foundation
import LogStore
import Logging
import NIOCore
import RaftCore
import Remoting

/// What a Raft member and a classic broker set up alike: the commitlog, the consume queues and
/// metadata over it, the broker protocol's options and the nameserver registration.
enum BrokerSetup {
    /// The largest entry: messages are held to maxMessageSize by the broker; entries may be larger
    /// (metadata snapshots of many topics), up to what a segment holds.
    static func entryBytesMax(_ settings: BrokerSettings) -> Int {
        max(Int(settings.store.maxMessageSize), min(RaftNodeMode.snapshotBytesMax, Int(settings.store.mappedFileSizeCommitLog) - 4_096))
    }

    /// brokerIP1:listenPort (bindAddress when brokerIP1 is empty).
    static func brokerAddr(_ settings: BrokerSettings) -> String {
        "\(settings.broker.brokerIP1.isEmpty ? settings.broker.bindAddress : settings.broker.brokerIP1):\(settings.broker.listenPort)"
    }

    /// brokerIP2 (else brokerIP1, else bindAddress):haListenPort.
    static func haServerAddr(_ settings: BrokerSettings) -> String {
        let b = settings.broker
        let host = b.brokerIP2.isEmpty ? (b.brokerIP1.isEmpty ? b.bindAddress : b.brokerIP1) : b.brokerIP2
        return "\(host):\(b.haListenPort)"
    }

    static func openLog(_ settings: BrokerSettings, logger: Logger) throws -> LogStore {
        let store: LogStore
        do {
            try FileManager.default.createDirectory(atPath: settings.store.storePathRootDir + "/raft", withIntermediateDirectories: true)
            var options = LogStoreOptions(
                directory: settings.store.storePathCommitLog,
                segmentBytes: UInt64(settings.store.mappedFileSizeCommitLog),
                indexFileBytes: UInt64(settings.store.commitLogIndexFileSize),
                flushMode: settings.store.flushDiskType == .SYNC_FLUSH ? .sync : .async(
                    intervalMs: Int(settings.store.flushIntervalCommitLog),
                    leastBytes: Int(settings.store.flushCommitLogLeastPages) * 4096,
                    thoroughIntervalMs: Int(settings.store.flushCommitLogThoroughInterval)),
                entryBodyBytesMax: entryBytesMax(settings),
                diskMaxUsedSpaceRatio: Int(settings.store.diskMaxUsedSpaceRatio))
            if settings.store.warmMapedFileEnable { options.prepareAheadBytes = LogStoreOptions.brokerPrepareAheadBytes }
            store = try LogStore.open(options)
        } catch {
            throw RaftModeError("cannot open the commitlog at \(settings.store.storePathCommitLog): \(error)")
        }
        logger.info("\(store.recoveryReport)")
        return store
    }

    static func openMessages(_ settings: BrokerSettings, log: LogStore, logger: Logger) throws -> MessageStore {
        let nowMs = Int64(Date().timeIntervalSince1970 * 1000)
        let b = settings.broker
        let initialTopics = TopicConfigTable(
            clusterName: b.brokerClusterName, brokerName: b.brokerName,
            defaultTopicQueueNums: Int(b.defaultTopicQueueNums), autoCreateTopicEnable: b.autoCreateTopicEnable,
            clusterTopicEnable: b.clusterTopicEnable, brokerTopicEnable: b.brokerTopicEnable,
            traceTopicEnable: b.traceTopicEnable, nowMs: nowMs)
        do {
            var options = MessageStore.Options(rootDirectory: settings.store.storePathRootDir, initialTopics: initialTopics)
            options.consumeQueueFileBytes = UInt64(settings.store.mappedFileSizeConsumeQueue)
            options.consumeQueueDirectory = settings.store.storePathConsumeQueue
            options.delayLevels = DelayLevels(settings.store.messageDelayLevel)
            // Bounded by what an entry may hold (not today's maxMessageSize: older messages may be larger).
            options.recordBytesMax = entryBytesMax(settings) + 64 << 10
            if settings.store.messageIndexEnable {
                options.keyIndex = try KeyIndex(directory: settings.store.storePathIndex, slots: Int(settings.store.maxHashSlotNum),
                                                entries: Int(settings.store.maxIndexNum))
            }
            return try MessageStore(options: options, log: log, logger: logger)
        } catch {
            throw RaftModeError("cannot open the consume queues under \(settings.store.storePathRootDir): \(error)")
        }
    }

    static func serviceOptions(_ settings: BrokerSettings, clientAddresses: [NodeID: String]) -> BrokerService.Options {
        let b = settings.broker
        var o = BrokerService.Options(
            clusterName: b.brokerClusterName, brokerName: b.brokerName, storeHost: brokerAddr(settings),
            maxMessageSize: Int(settings.store.maxMessageSize), autoCreateTopicEnable: b.autoCreateTopicEnable,
            defaultTopicQueueNums: Int(b.defaultTopicQueueNums), clientAddresses: clientAddresses)
        o.configuration = settings.effectiveProperties()
        o.delayLevels = DelayLevels(settings.store.messageDelayLevel)
        o.autoCreateSubscriptionGroup = b.autoCreateSubscriptionGroup
        o.slaveReadEnable = b.slaveReadEnable
        // At most a second of offsets is what a leader kill can lose (RocketMQ saves its file every 5 s).
        o.offsetFlushInterval = .milliseconds(max(100, min(Int64(b.flushConsumerOffsetInterval), 1_000)))
        return o
    }

    /// `<step>Ms` for each step of a stop (from the previous step's end, the first from `start`) and `tookMs`.
    static func stopTimes(from start: ContinuousClock.Instant, _ steps: [(String, ContinuousClock.Instant)]) -> Logger.Metadata {
        func ms(_ d: Duration) -> String { "\(d.components.seconds * 1_000 + d.components.attoseconds / 1_000_000_000_000_000)" }
        var out: Logger.Metadata = [:]
        var previous = start
        for (name, at) in steps {
            out[name + "Ms"] = "\(ms(at - previous))"
            previous = at
        }
        out["tookMs"] = "\(ms(previous - start))"
        return out
    }

    /// The dashboard of `GET /` (Dashboard.swift), asking the configured nameservers.
    static func dashboard(_ settings: BrokerSettings, selfState: @escaping @Sendable () -> String, group: any EventLoopGroup, logger: Logger) -> Dashboard {
        let b = settings.broker
        var options = Dashboard.Options(nameServers: b.namesrvAddresses.map { "\($0)" }, selfState: selfState, selfAddress: brokerAddr(settings),
                                        clusterName: b.brokerClusterName, brokerName: b.brokerName)
        // The names a browser may use for this broker: its configured addresses and the host's name.
        var names: Set<String> = [b.brokerIP1, b.brokerIP2, b.bindAddress, ProcessInfo.processInfo.hostName]
        if settings.raft.enableDLegerCommitLog, let me = settings.raft.selfPeer { names.insert(me.address.host) }
        options.allowedHosts = Set(names.filter { !$0.isEmpty }.map { $0.lowercased() })
        return Dashboard(options: options, remoting: RemotingClient(group: group, logger: logger), logger: logger)
    }

    static func registrar(_ settings: BrokerSettings, topics: TopicConfigTable, group: any EventLoopGroup, logger: Logger) -> NameServerRegistrar {
        let b = settings.broker
        return NameServerRegistrar(
            identity: .init(clusterName: b.brokerClusterName, brokerName: b.brokerName, brokerAddr: brokerAddr(settings),
                            haServerAddr: haServerAddr(settings), brokerPermission: Int(b.brokerPermission)),
            nameServers: b.namesrvAddresses.map { "\($0)" }, topics: topics,
            client: RemotingClient(group: group, logger: logger), logger: logger)
    }

    /// The registration period: registerNameServerPeriod within 10-60 s.
    static func registrationPeriod(_ settings: BrokerSettings) -> Duration {
        .milliseconds(max(10_000, min(settings.broker.registerNameServerPeriod, 60_000)))
    }

    /// Serves the broker port until cancelled, logging RocketMQ's boot line (INTERFACES.md) once bound;
    /// the failure to serve, if any.
    static func serveBrokerPort(_ server: RemotingServer, _ settings: BrokerSettings, logger: Logger) async -> (any Error)? {
        let b = settings.broker
        do {
            try await server.run { _ in
                logger.info("The broker[\(b.brokerName), \(brokerAddr(settings))] boot success. serializeType=JSON and name server is \(b.namesrvAddr)")
            }
            return nil
        } catch { return RaftModeError("cannot serve the broker port \(b.bindAddress):\(b.listenPort): \(error)") }
    }

    /// Returns when the calling task is cancelled.
    static func untilCancelled() async {
        while !Task.isCancelled { try? await Task.sleep(for: .seconds(3_600)) }
    }
}
