import AdminHTTP
import Broker
import ClassicHA
import Config
import Foundation
import Glibc
import LogFormat
import LogStore
import Logging
import NIOCore
import NIOPosix
import ProcessLifecycle
import Replication
import Remoting
import Synchronization

/// `mqbroker -c FILE` with `brokerRole=ASYNC_MASTER|SYNC_MASTER|SLAVE` (and no
/// enableDLegerCommitLog): a classic RocketMQ master or slave on RaftMQ's log format. The master
/// takes writes and serves its HA port (listenPort + 1); the slave streams the master's log from
/// there, byte for byte, and serves reads.
enum ClassicMode {
    static func run(_ settings: BrokerSettings) async throws {
        let logger = Logger(label: "mqbroker")
        let b = settings.broker
        let roleName = settings.store.brokerRole.rawValue
        let log = try BrokerSetup.openLog(settings, logger: logger)
        let messages = try BrokerSetup.openMessages(settings, log: log, logger: logger)
        // Entries written before this start (by this master, a slave's stream, or a Raft group) reach
        // the consume queues first.
        if let last = log.lastIndex {
            do { try messages.dispatch(upTo: Int64(last.rawValue)) } catch {
                throw RaftModeError("dispatching the log to the consume queues failed: \(error)")
            }
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: Int(settings.serverSelectorThreads))
        let isSlave = settings.store.brokerRole == .SLAVE
        let brokerAddr = BrokerSetup.brokerAddr(settings)

        let haMaster: HAMaster? = isSlave ? nil : {
            var o = HAMaster.Options(host: b.bindAddress, port: b.haListenPort)
            o.batchBytes = Int(min(settings.store.haTransferBatchSize, 4 << 20))
            o.housekeeping = .milliseconds(settings.store.haHousekeepingInterval)
            o.fallBehindMax = UInt64(max(0, settings.store.haSlaveFallbehindMax))
            return HAMaster(options: o, store: log, group: group, logger: logger)
        }()
        let writes = ClassicWritePath(
            role: isSlave ? .slave : .master(sync: settings.store.brokerRole == .SYNC_MASTER), brokerName: b.brokerName,
            log: log, store: messages, ha: haMaster, slaveTimeout: .milliseconds(settings.store.syncFlushTimeout))

        let registrar = BrokerSetup.registrar(settings, topics: messages.topics, group: group, logger: logger)
        // The slave's master: haMasterAddress when configured (RocketMQ takes it at 6+ characters),
        // else what the nameservers answer its registration.
        let learnedMaster = LearnedMaster(configured: settings.store.haMasterAddress.count >= 6 ? settings.store.haMasterAddress : nil)
        let haSlave: HASlave? = !isSlave ? nil : {
            var o = HASlave.Options()
            o.heartbeat = .milliseconds(settings.store.haSendHeartbeatInterval)
            o.housekeeping = .milliseconds(settings.store.haHousekeepingInterval)
            return HASlave(options: o, store: log, group: group, logger: logger, masterAddress: { learnedMaster.haAddress },
                           written: { try writes.dispatch(upTo: $0) },
                           reset: { base in try messages.logReset(toStoreIndex: Int64(base.nextIndex.rawValue) - 1) })
        }()

        let metrics = BrokerMetrics(store: log, storeDirectory: settings.store.storePathCommitLog)
        var brokerOptions = BrokerSetup.serviceOptions(settings, clientAddresses: [:])
        brokerOptions.observer = metrics
        let broker = BrokerService(options: brokerOptions, store: messages, writes: writes,
                                   forwarder: RemotingClient(group: group, logger: logger), logger: logger)
        let runtime = RuntimeInfo(role: { ["brokerRole": roleName] }, store: log, storeDirectory: settings.store.storePathCommitLog,
                                  totals: { broker.totals })

        let stateJSON: @Sendable () -> String = {
            var j = JSONObject()
            j.string("mode", "classic")
            j.string("role", roleName)
            j.string("brokerName", b.brokerName)
            j.number("brokerId", b.brokerId)
            j.string("brokerAddr", brokerAddr)
            j.number("maxOffset", Int64(log.writePosition.rawValue))
            j.number("lastIndex", log.lastIndex.map { Int64($0.rawValue) } ?? -1)
            j.number("epoch", isSlave ? Int64(log.lastTerm.rawValue) : Int64(writes.epoch.rawValue))
            j.number("appliedIndex", messages.dispatchedIndex)
            if let haMaster {
                let slaves = haMaster.slaves.map { s -> String in
                    var o = JSONObject()
                    o.string("addr", s.address)
                    o.number("ackOffset", Int64(s.ackOffset))
                    return o.finish()
                }
                j.raw("slaves", "[" + slaves.joined(separator: ",") + "]")
            }
            if let haSlave {
                let st = haSlave.currentStatus
                j.string("masterAddr", learnedMaster.brokerAddress)
                j.string("masterHaAddr", st.masterAddress)
                j.raw("connected", st.connected ? "true" : "false")
                j.number("ackOffset", Int64(st.ackOffset))
                j.string("lastError", st.lastError)
            }
            return j.finish()
        }
        // METADATA (the raw-log API's state query) answers the same object as /raft/state, so
        // `mqadmin raftState` and the dashboard read a classic broker as they read a Raft member.
        let state = RemotingProcessor(name: "classic-state", codes: [RaftLogCode.metadata], maxQueuedRequests: 256) { request, _ in
            var body = ByteBuffer()
            body.writeString(stateJSON())
            return .response(to: request, code: RaftLogResponse.success, extFields: ["group": b.brokerName, "mode": "classic"], body: body)
        }
        let brokerServer = RemotingServer(options: RemotingServerOptions(host: b.bindAddress, port: b.listenPort),
                                          processors: broker.processors + [runtime.processor, state], group: group, logger: logger)
        let health: @Sendable () -> AdminResponse = {
            if let haSlave, !haSlave.currentStatus.connected {
                let why = haSlave.currentStatus.lastError ?? (learnedMaster.haAddress == nil ? "the master's HA address is not known yet" : "connecting")
                var j = JSONObject()
                j.string("status", "not replicating from the master")
                j.string("role", roleName)
                j.string("reason", why)
                return AdminResponse(status: .serviceUnavailable, body: j.finish())
            }
            return AdminResponse(status: .ok, body: #"{"status":"ok","role":"\#(roleName)"}"#)
        }
        let dashboard = BrokerSetup.dashboard(settings, selfState: stateJSON, group: group, logger: logger)
        let admin = AdminServer(host: b.bindAddress, port: b.httpListenPort,
                                routes: AdminRoutes(routes: [
                                    "/raft/state": { AdminResponse(status: .ok, body: stateJSON()) }, "/healthz": health,
                                    "/metrics": {
                                        AdminResponse(status: .ok, contentType: BrokerMetrics.contentType, body: metrics.scrape(messages) { w in
                                            w.gauge("raftmq_broker_info", [("cluster", b.brokerClusterName), ("broker", b.brokerName), ("group", b.brokerName),
                                                                           ("node", "\(b.brokerId)"), ("mode", "classic")], 1, help: "The broker's identity (always 1)")
                                            for role in ["ASYNC_MASTER", "SYNC_MASTER", "SLAVE"] {
                                                w.gauge("raftmq_classic_role", [("role", role)], role == roleName ? 1 : 0,
                                                        help: "1 for the classic broker's brokerRole, 0 for the others")
                                            }
                                            w.gauge("raftmq_classic_epoch", isSlave ? Int64(log.lastTerm.rawValue) : Int64(writes.epoch.rawValue),
                                                    help: "The master epoch this broker's log continues")
                                            w.gauge("raftmq_dispatched_index", messages.dispatchedIndex, help: "Highest log index dispatched to the consume queues")
                                            let end = Int64(log.writePosition.rawValue)
                                            for slave in haMaster?.slaves ?? [] {
                                                w.gauge("raftmq_classic_slave_ack_offset_bytes", [("slave", slave.address)], Int64(slave.ackOffset),
                                                        help: "Master only: the log position each slave has acknowledged")
                                                w.gauge("raftmq_classic_slave_lag_bytes", [("slave", slave.address)], end - Int64(slave.ackOffset),
                                                        help: "Master only: bytes of the master's log a slave has not acknowledged")
                                            }
                                            if let st = haSlave?.currentStatus {
                                                w.gauge("raftmq_classic_master_connected", st.connected ? 1 : 0, help: "Slave only: 1 while replicating from the master")
                                                w.gauge("raftmq_classic_ack_offset_bytes", Int64(st.ackOffset), help: "Slave only: the log position this slave holds")
                                            }
                                        })
                                    },
                                ]).adding(dashboard.routes()),
                                group: group, logger: logger)
        let retention = RetentionPolicy(
            fileReservedHours: Int(settings.store.fileReservedTime),
            deleteWhenHours: RetentionPolicy.parseDeleteWhen(settings.store.deleteWhen) ?? [4],
            diskMaxUsedSpaceRatio: Int(settings.store.diskMaxUsedSpaceRatio),
            cleanFileForcibly: settings.store.cleanFileForciblyEnable)

        let stop = SignalWaiter()
        logger.info("classic broker started", metadata: [
            "brokerName": "\(b.brokerName)", "brokerRole": "\(roleName)", "brokerId": "\(b.brokerId)",
            "ha": "\(b.bindAddress):\(b.haListenPort)", "http": "\(b.bindAddress):\(b.httpListenPort)",
            "flushDiskType": "\(settings.store.flushDiskType)", "epoch": "\(writes.epoch)",
        ])
        let service: @Sendable () async -> (any Error)? = {
            await withTaskGroup(of: (any Error)?.self) { tasks in
                tasks.addTask { do { try await admin.run(); return nil } catch { return error } }
                tasks.addTask { await BrokerSetup.serveBrokerPort(brokerServer, settings, logger: logger) }
                tasks.addTask {
                    // Without nameservers there is nothing to register with; the task must still last until the
                    // broker stops (the first task to end stops them all).
                    guard !registrar.nameServers.isEmpty else { await BrokerSetup.untilCancelled(); return nil }
                    let period = BrokerSetup.registrationPeriod(settings)
                    var last: ContinuousClock.Instant?
                    var missed = false
                    var version = messages.topics.dataVersion
                    // Sleeps until a registration is due or the topics change.
                    let bell = Doorbell()
                    messages.ringOnTopicChange(bell)
                    while !Task.isCancelled {
                        let topics = messages.topics
                        let topicsChanged = topics.dataVersion != version
                        if topicsChanged {
                            version = topics.dataVersion
                            await registrar.update(topics: topics)
                        }
                        // A nameserver that did not take the registration, or a slave that has not learned
                        // its master yet, is asked again every 2 s.
                        let soon = missed || (isSlave && learnedMaster.haAddress == nil)
                        let due = last.map { ContinuousClock.now - $0 >= (soon ? .seconds(2) : period) } ?? true
                        if due || topicsChanged {
                            last = .now
                            missed = await registrar.register(brokerId: b.brokerId) < registrar.nameServers.count
                            if isSlave, let m = await registrar.master { learnedMaster.learn(brokerAddr: m.brokerAddr, haAddress: m.haServerAddr) }
                        }
                        let again = missed || (isSlave && learnedMaster.haAddress == nil)
                        await bell.wait(upTo: max((again ? .seconds(2) : period) - (ContinuousClock.now - (last ?? .now)), .milliseconds(1)))
                    }
                    return nil
                }
                tasks.addTask {
                    // Retention (RocketMQ's CleanCommitLogService), never past what is dispatched nor the
                    // latest metadata snapshot.
                    while !Task.isCancelled {
                        // A stop (cancellation) ends the loop here, not after one more pass.
                        guard (try? await Task.sleep(for: .milliseconds(max(1_000, settings.store.cleanResourceInterval)))) != nil else { break }
                        var now = time(nil)
                        var parts = tm()
                        localtime_r(&now, &parts)
                        let dispatched = LogFormat.LogIndex(UInt64(max(0, messages.dispatchedIndex + 1)))
                        let floor = messages.latestSnapshotIndex.map { LogFormat.LogIndex(UInt64($0)) }.map { min($0, dispatched) } ?? dispatched
                        do {
                            let r = try log.applyRetention(retention, nowSeconds: Int64(now), hourOfDay: Int(parts.tm_hour), keepFrom: floor)
                            if r.segmentsDeleted > 0 {
                                logger.info("retention deleted old commitlog segments", metadata: [
                                    "segments": "\(r.segmentsDeleted)", "reason": "\(r.reason.map(\.rawValue) ?? "-")", "firstIndex": "\(r.firstIndex)"])
                            }
                        } catch {
                            return RaftModeError("storage failure during retention: \(error)")
                        }
                    }
                    return nil
                }
                tasks.addTask { await runtime.run(); return nil }
                tasks.addTask { await messages.run(); return nil }
                tasks.addTask { await broker.run(); return nil }
                tasks.addTask { await stop.wait(); return nil }
                let first = await tasks.next() ?? nil
                tasks.cancelAll()
                for await _ in tasks {}
                return first
            }
        }
        // The HA side outlives the broker's tasks: a clean stop ends those first (the last offsets
        // go to the log, nothing more is written), then the master waits up to 3 s for its
        // connected slaves to acknowledge its log's end, so a group stopped master first holds the
        // same log everywhere.
        let failure: (any Error)? = await withTaskGroup(of: (any Error)?.self) { tasks in
            if let haMaster {
                tasks.addTask {
                    do { try await haMaster.run(); return nil } catch {
                        return RaftModeError("cannot serve the HA port \(b.bindAddress):\(b.haListenPort): \(error)")
                    }
                }
            }
            if let haSlave { tasks.addTask { await haSlave.run(); return nil } }
            tasks.addTask {
                let failure = await service()
                if let haMaster, failure == nil {
                    let end = log.fileEndPosition.rawValue
                    if !(await haMaster.drain(to: end, timeout: .seconds(3))) {
                        logger.warning("stopping before every slave has the log's end", metadata: [
                            "end": "\(end)", "slaves": "\(haMaster.slaves.map { "\($0.address)@\($0.ackOffset)" })"])
                    }
                }
                return failure
            }
            let first = await tasks.next() ?? nil
            tasks.cancelAll()
            for await _ in tasks {}
            return first
        }
        await registrar.unregister()
        do { try log.close() } catch { logger.error("closing the commitlog failed", metadata: ["error": "\(error)"]) }
        try? await group.shutdownGracefully()
        if let failure { throw RaftModeError("the broker stopped: \(failure)") }
        logger.info("classic broker stopped")
    }
}

/// A slave's master as configured (haMasterAddress) or learned from the nameservers.
final class LearnedMaster: Sendable {
    private let configured: String?
    private let learned = Mutex<(broker: String?, ha: String?)>((nil, nil))
    init(configured: String?) { self.configured = configured }

    /// A configured haMasterAddress wins over what the nameservers say.
    var haAddress: String? { configured ?? learned.withLock { $0.ha } }
    var brokerAddress: String? { learned.withLock { $0.broker } }

    func learn(brokerAddr: String, haAddress: String) {
        learned.withLock { $0 = (brokerAddr, haAddress) }
    }
}
