import AdminHTTP
import Broker
import Config
import Dispatch
import Foundation
import Glibc
import LogFormat
import LogStore
import Logging
import ProcessLifecycle
import NIOCore
import NIOPosix
import RaftCore
import Remoting
import Replication

/// `mqbroker -c FILE` with `enableDLegerCommitLog=true`: a member of a Raft group. This stage runs
/// the Raft replica over the commitlog and the HTTP admin endpoint; the RocketMQ client port (send,
/// pull, nameserver registration) comes with issue 5.
enum RaftNodeMode {
    /// One RaftCore tick of real time; the configured Raft timings are multiples of it.
    static let tickIntervalMs: Int64 = 10
    /// The largest metadata snapshot entry (about 10,000 topics of 16 queues with their groups).
    static let snapshotBytesMax = 8 << 20

    static func run(_ settings: BrokerSettings) async throws {
        let logger = Logger(label: "mqbroker")
        let raft = settings.raft
        guard let me = raft.selfPeer else { throw RaftModeError("dLegerSelfId \(raft.dLegerSelfId) is not among dLegerPeers") }
        var addresses: [NodeID: String] = [:]
        var names: [NodeID: String] = [:]
        for p in raft.peers {
            let id = nodeID(p.id)
            addresses[id] = "\(p.address)"
            names[id] = p.id
        }
        let selfID = nodeID(me.id)
        var config = RaftConfig(id: selfID, voters: raft.peers.map { nodeID($0.id) })
        config.heartbeatTicks = Int(max(1, raft.raftHeartbeatIntervalMs / tickIntervalMs))
        config.electionTimeoutTicks = Int(max(2, raft.raftElectionTimeoutMinMs / tickIntervalMs))
        config.electionTimeoutMaxTicks = max(config.electionTimeoutTicks + 1, Int(raft.raftElectionTimeoutMaxMs / tickIntervalMs))
        let entryBytesMax = BrokerSetup.entryBytesMax(settings)
        config.maxEntryBytes = entryBytesMax
        config.randomSeed = UInt64.random(in: 0...UInt64.max)
        // RaftConfig.campaignOnStart stays off here for now: a node's early pre-vote can land in the
        // moment after another election, when a voter has granted its vote but not yet heard the new
        // leader, win that voter's pre-vote, and depose the new leader with its higher term (seen
        // once in the process tests). docs/raft.md has the fix it waits for.
        if !raft.preferredLeaderId.isEmpty { config.preferredLeader = nodeID(raft.preferredLeaderId) }
        var options = RaftReplicaOptions(raft: config, peerAddresses: addresses)
        options.tickIntervalMs = Int(tickIntervalMs)
        options.syncBeforeAcknowledging = settings.store.flushDiskType == .SYNC_FLUSH
        options.retention = RetentionPolicy(
            fileReservedHours: Int(settings.store.fileReservedTime),
            deleteWhenHours: RetentionPolicy.parseDeleteWhen(settings.store.deleteWhen) ?? [4],
            diskMaxUsedSpaceRatio: Int(settings.store.diskMaxUsedSpaceRatio),
            cleanFileForcibly: settings.store.cleanFileForciblyEnable)
        options.retentionIntervalMs = Int(settings.store.cleanResourceInterval)

        let hardStateDirectory = settings.store.storePathRootDir + "/raft"
        let store = try BrokerSetup.openLog(settings, logger: logger)
        let messages = try BrokerSetup.openMessages(settings, log: store, logger: logger)
        // Dispatch is the replica's apply step: committed entries reach the consume queues before the
        // producers waiting for them are answered, and the applied index is the dispatched one.
        options.appliedIndex = RaftCore.LogIndex(UInt64(messages.dispatchedIndex + 1))
        options.bodyPatch = BrokerLogHooks.bodyPatch
        // The registration loop sleeps until the role, the leader or the topics change (or a period ends).
        let registrationBell = Doorbell()
        options.onRoleChange = { registrationBell.ring() }
        messages.ringOnTopicChange(registrationBell)
        // Retention keeps the latest metadata snapshot: a member reset to this log's base finds one.
        options.retentionFloor = { messages.latestSnapshotIndex.map { LogFormat.LogIndex(UInt64($0)) } ?? store.firstIndex }
        // The Raft driver runs on the first loop, beside the clients served there (serverSelectorThreads).
        let group = MultiThreadedEventLoopGroup(numberOfThreads: Int(settings.serverSelectorThreads))
        let replicaLoop = group.next()
        let emptyLogBase = options.storeIndexOfEmptyLog
        let replica = RaftReplica(options: options, store: store, hardStateFile: HardStateFile(path: hardStateDirectory + "/hardstate"),
                                  logger: logger, apply: { batch in
            // A failure stops the node: committed entries cannot be skipped.
            try messages.apply(batch, storeIndexOfEmptyLog: emptyLogBase)
        }, logReset: { base in
            do { try messages.logReset(toStoreIndex: Int64(base.rawValue) - 1) } catch {
                logger.error("dropping the consume queues after a log reset failed", metadata: ["error": "\(error)"])
            }
        })
        let writes = WritePath(replica: replica, store: messages)
        let peerNames = names, peerAddresses = addresses
        let brokerAddr = BrokerSetup.brokerAddr(settings)
        let stateJSON: @Sendable () -> String = {
            raftStateJSON(replica.status, group: raft.dLegerGroup, selfName: me.id, names: peerNames, addresses: peerAddresses, brokerAddr: brokerAddr)
        }
        let state: @Sendable () -> AdminResponse = { AdminResponse(status: .ok, body: stateJSON()) }
        // Every member serves its broker port on its peer host with the same listenPort (as in the
        // guide's layouts); NOT_LEADER answers point there.
        var clientAddresses: [NodeID: String] = [:]
        for p in raft.peers {
            let host = p.id == me.id && !settings.broker.brokerIP1.isEmpty ? settings.broker.brokerIP1 : p.address.host
            clientAddresses[nodeID(p.id)] = (host.contains(":") ? "[\(host)]" : host) + ":\(settings.broker.listenPort)"
        }
        let service = RaftLogService(options: RaftLogService.Options(group: raft.dLegerGroup, selfName: me.id, names: names, clientAddresses: clientAddresses),
                                     replica: replica, logger: logger, append: { data, timeout in
            // Raw-log bodies must not pass for messages or metadata: dispatch reads bodies by their magic.
            guard BrokerLogHooks.isOpaque(data) else {
                throw RaftLogService.AppendRefused("the body starts like a RocketMQ message record or a RaftMQ metadata entry; raw-log appends must not (send messages with SEND_MESSAGE)")
            }
            do throws(WriteError) {
                return try await writes.appendOpaque(data, timeout: timeout)
            } catch {
                switch error {
                case .notLeader(let l): throw ReplicaError.refused(.notLeader(leader: l))
                case .notReady, .busy: throw ReplicaError.busy
                case .tooLarge(let b, let l): throw ReplicaError.refused(.proposalTooLarge(bytes: b, limit: l))
                case .timedOut: throw ReplicaError.timedOut(index: .zero)
                case .failed(let e): throw e
                case .slave, .storage: throw ReplicaError.busy  // not a Raft writer's errors
                }
            }
        }, stateJSON: stateJSON)
        let metrics = BrokerMetrics(store: store, storeDirectory: settings.store.storePathCommitLog)
        var brokerOptions = BrokerSetup.serviceOptions(settings, clientAddresses: clientAddresses)
        brokerOptions.observer = metrics
        let broker = BrokerService(options: brokerOptions, store: messages, writes: writes,
                                   forwarder: RemotingClient(group: group, logger: logger), logger: logger)
        let runtime = RuntimeInfo(role: {
            guard let s = replica.status else { return [:] }
            return ["dLegerRole": s.raft.role.rawValue.uppercased(), "commitIndex": "\(s.storeNumber(s.raft.commit))"]
        }, store: store, storeDirectory: settings.store.storePathCommitLog, totals: { broker.totals })
        let brokerServer = RemotingServer(options: RemotingServerOptions(host: settings.broker.bindAddress, port: settings.broker.listenPort),
                                          processors: service.processors + broker.processors + [runtime.processor], group: group, logger: logger)

        // Registration with every nameserver: the leader as brokerId 0, a follower as the digit of its
        // dLegerSelfId + 1 (as RocketMQ with DLedger shows the group), at once on every role change.
        let registrar = BrokerSetup.registrar(settings, topics: messages.topics, group: group, logger: logger)
        let followerId = Int64(me.id.dropFirst()).map { $0 + 1 } ?? 1
        let period = BrokerSetup.registrationPeriod(settings)
        let health: @Sendable () -> AdminResponse = {
            guard let s = replica.status else { return AdminResponse(status: .serviceUnavailable, body: #"{"status":"starting"}"#) }
            if s.raft.role == .leader || (s.raft.role == .follower && s.raft.leader != nil) {
                return AdminResponse(status: .ok, body: #"{"status":"ok","role":"\#(s.raft.role)"}"#)
            }
            return AdminResponse(status: .serviceUnavailable, body: #"{"status":"no leader known","role":"\#(s.raft.role)"}"#)
        }
        let dashboard = BrokerSetup.dashboard(settings, selfState: stateJSON, group: group, logger: logger)
        let admin = AdminServer(host: settings.broker.bindAddress, port: settings.broker.httpListenPort,
                                routes: AdminRoutes(routes: ["/raft/state": state, "/healthz": health, "/metrics": {
                                    AdminResponse(status: .ok, contentType: BrokerMetrics.contentType, body: metrics.scrape(messages) { w in
                                        raftMetrics(&w, replica.status, settings: settings, selfName: me.id, names: peerNames)
                                    })
                                }]).adding(dashboard.routes()), group: group, logger: logger)

        let stop = SignalWaiter()
        logger.info("raft node started", metadata: [
            "group": "\(raft.dLegerGroup)", "selfId": "\(me.id)", "peer": "\(me.address)",
            "http": "\(settings.broker.bindAddress):\(settings.broker.httpListenPort)", "flushDiskType": "\(settings.store.flushDiskType)",
        ])
        var stopping = ContinuousClock.now
        let failure: (any Error)? = await withTaskGroup(of: (String, (any Error)?).self) { tasks in
            tasks.addTask { do { try await replica.run(on: replicaLoop); return ("raft replica", nil) } catch { return ("raft replica", error) } }
            tasks.addTask { do { try await admin.run(); return ("HTTP admin server", nil) } catch { return ("HTTP admin server", error) } }
            tasks.addTask { ("broker port", await BrokerSetup.serveBrokerPort(brokerServer, settings, logger: logger)) }
            tasks.addTask {
                // Without nameservers there is nothing to register with; the task must still last until the
                // broker stops (the first task to end stops them all).
                guard !registrar.nameServers.isEmpty else { await BrokerSetup.untilCancelled(); return ("registration", nil) }
                var registered: Int64 = -1
                var lastRegistration = ContinuousClock.now
                var missed = false
                var version = messages.topics.dataVersion
                while !Task.isCancelled {
                    let id: Int64
                    if let st = replica.status?.raft {
                        // A candidate re-registers nothing: its old id may be someone else's by now.
                        id = st.role == .leader ? 0 : (st.role == .follower && st.leader != nil ? followerId : -1)
                    } else {
                        id = -1
                    }
                    // A topic change registers at once too, so routes follow it.
                    let topics = messages.topics
                    let topicsChanged = topics.dataVersion != version
                    if topicsChanged {
                        version = topics.dataVersion
                        await registrar.update(topics: topics)
                    }
                    // A nameserver that did not take it is asked again in 2 s, not a period later.
                    var interval: Duration { missed ? .seconds(2) : period }
                    if id >= 0 && (id != registered || topicsChanged || ContinuousClock.now - lastRegistration >= interval) {
                        registered = id
                        lastRegistration = .now
                        missed = await registrar.register(brokerId: id) < registrar.nameServers.count
                    }
                    // Until the next registration is due, or the role, the leader or the topics change.
                    let due = id >= 0 ? interval - (ContinuousClock.now - lastRegistration) : interval
                    await registrationBell.wait(upTo: max(due, .milliseconds(1)))
                }
                return ("registration", nil)
            }
            tasks.addTask { await runtime.run(); return ("runtime sampler", nil) }
            tasks.addTask { await messages.run(); return ("message store", nil) }
            tasks.addTask { await broker.run(); return ("broker housekeeping", nil) }
            tasks.addTask { await stop.wait(); return ("signal", nil) }
            let (name, first) = await tasks.next() ?? ("none", nil)
            stopping = .now
            // The first part to end stops the others: a signal, or a failure (or a part that ended
            // without one, which is a defect: say which).
            if name != "signal" { logger.notice("stopping: the \(name) ended", metadata: first.map { ["error": "\($0)"] } ?? [:]) }
            tasks.cancelAll()
            for await _ in tasks {}
            return first
        }
        // How long each step of the stop took, in the last line: a slow stop says where it waited.
        var steps: [(String, ContinuousClock.Instant)] = [("parts", .now)]
        // Leave the nameservers, so clients stop coming here.
        await registrar.unregister()
        steps.append(("unregister", .now))
        do { try store.close() } catch { logger.error("closing the commitlog failed", metadata: ["error": "\(error)"]) }
        steps.append(("commitlog", .now))
        try? await group.shutdownGracefully()
        steps.append(("eventLoops", .now))
        // A stop after a failure says where it waited too (a supervisor restarts the broker only
        // once it has exited).
        logger.info(failure == nil ? "raft node stopped" : "raft node stopped after a failure", metadata: BrokerSetup.stopTimes(from: stopping, steps))
        if let failure {
            throw RaftModeError("the Raft node stopped: \(failure)")
        }
    }

    /// `n0` -> node 0: the digits of a DLedger peer id (the loader checked the shape).
    static func nodeID(_ name: String) -> NodeID { NodeID(UInt64(name.dropFirst()) ?? 0) }
}

struct RaftModeError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// The Raft part of `/metrics` (docs/operations.md lists every name).
func raftMetrics(_ w: inout BrokerMetrics.Writer, _ status: ReplicaStatus?, settings: BrokerSettings, selfName: String, names: [NodeID: String]) {
    let b = settings.broker
    w.gauge("raftmq_broker_info", [("cluster", b.brokerClusterName), ("broker", b.brokerName), ("group", settings.raft.dLegerGroup),
                                   ("node", selfName), ("mode", "raft")], 1, help: "The broker's identity (always 1)")
    guard let s = status else { return }
    let r = s.raft
    w.gauge("raftmq_raft_term", Int64(r.term.rawValue), help: "The node's current Raft term")
    for role in [RaftCore.Role.leader, .follower, .candidate, .preCandidate] {
        let name = role == .preCandidate ? "precandidate" : role.rawValue
        w.gauge("raftmq_raft_role", [("role", name)], r.role == role ? 1 : 0, help: "1 for the node's current Raft role, 0 for the others")
    }
    w.gauge("raftmq_raft_leader_known", r.leader == nil ? 0 : 1, help: "1 when the node knows its group's leader")
    w.gauge("raftmq_raft_first_index", s.storeNumber(s.firstIndex), help: "Index of the log's first entry (DLedger's numbering: the first entry is 0)")
    w.gauge("raftmq_raft_last_index", s.storeNumber(r.lastIndex), help: "Index of the log's last entry")
    w.gauge("raftmq_raft_last_term", Int64(r.lastTerm.rawValue), help: "Term of the log's last entry")
    w.gauge("raftmq_raft_commit_index", s.storeNumber(r.commit), help: "Highest index known committed (held by a quorum)")
    w.gauge("raftmq_raft_applied_index", s.storeNumber(r.applied), help: "Highest index dispatched to the consume queues")
    w.total("raftmq_raft_prevotes_started_total", Int64(r.elections.preVotesStarted), help: "Pre-vote rounds this node started")
    w.total("raftmq_raft_elections_started_total", Int64(r.elections.electionsStarted), help: "Elections this node started (new terms it campaigned in)")
    w.total("raftmq_raft_elections_won_total", Int64(r.elections.electionsWon), help: "Elections this node won")
    w.total("raftmq_raft_leader_stepdowns_total", Int64(r.elections.stepDowns), help: "Times this node stopped leading")
    let now = ContinuousClock.now
    for (id, name) in names where name != selfName {
        let peer = [("peer", name)]
        if let heard = s.lastHeard[id] {
            w.gauge("raftmq_raft_peer_last_contact_seconds", peer, Double((now - heard).components.attoseconds) / 1e18 + Double((now - heard).components.seconds),
                    help: "Seconds since this node last heard from the peer")
        }
        // Progress is the leader's alone; on other roles these series are absent.
        guard let p = r.peers.first(where: { $0.id == id }) else { continue }
        w.gauge("raftmq_raft_peer_match_index", peer, s.storeNumber(p.match), help: "Leader only: the peer's highest index known replicated")
        w.gauge("raftmq_raft_peer_next_index", peer, s.storeNumber(p.next), help: "Leader only: the next index the leader sends the peer")
        w.gauge("raftmq_raft_peer_lag_entries", peer, Int64(r.lastIndex.rawValue) - Int64(p.match.rawValue),
                help: "Leader only: entries of the leader's log the peer does not hold yet")
        w.gauge("raftmq_raft_peer_inflight_appends", peer, Int64(p.inflightAppends), help: "Leader only: append messages sent to the peer and not yet answered")
    }
}

/// INTERFACES.md's `/raft/state` object: every field present, null where unknown; indexes in the
/// store's (DLedger's) numbering. Written by hand: Foundation's JSONSerialization took about 0.5 ms
/// per answer here (2,000 requests per second), this takes microseconds.
func raftStateJSON(_ status: ReplicaStatus?, group: String, selfName: String, names: [NodeID: String],
                   addresses: [NodeID: String], brokerAddr: String) -> String {
    var j = JSONObject()
    j.string("mode", "raft")
    j.string("group", group)
    j.string("selfId", selfName)
    j.string("brokerAddr", brokerAddr)
    guard let s = status else {
        for k in ["role", "term", "leaderId", "leaderPeerAddr", "firstIndex", "lastIndex", "lastTerm", "commitIndex", "appliedIndex"] { j.null(k) }
        j.number("brokerId", -1)
        j.raw("peers", "[]")
        return j.finish()
    }
    let r = s.raft
    j.string("role", r.role == .preCandidate ? "precandidate" : r.role.rawValue)
    j.number("term", Int64(r.term.rawValue))
    j.string("leaderId", r.leader.flatMap { names[$0] })
    j.string("leaderPeerAddr", r.leader.flatMap { addresses[$0] })
    let digits = Int64(selfName.dropFirst()) ?? 0
    j.number("brokerId", r.role == .leader ? 0 : (r.role == .follower && r.leader != nil ? digits + 1 : -1))
    j.number("firstIndex", s.storeNumber(s.firstIndex))
    j.number("lastIndex", s.storeNumber(r.lastIndex))
    j.number("lastTerm", Int64(r.lastTerm.rawValue))
    j.number("commitIndex", s.storeNumber(r.commit))
    j.number("appliedIndex", s.storeNumber(r.applied))
    let now = ContinuousClock.now
    var peers: [String] = []
    for (id, name) in names.sorted(by: { $0.value < $1.value }) where name != selfName {
        var p = JSONObject()
        p.string("id", name)
        p.string("addr", addresses[id])
        let progress = r.peers.first { $0.id == id }
        p.number("matchIndex", progress.map { s.storeNumber($0.match) })
        p.number("nextIndex", progress.map { s.storeNumber($0.next) })
        var agoMs: Int64?
        if let heard = s.lastHeard[id] {
            let c = (now - heard).components
            agoMs = c.seconds * 1000 + c.attoseconds / 1_000_000_000_000_000
        }
        p.number("lastContactMsAgo", agoMs)
        // Only a leader hears from every peer (followers hear from the leader alone).
        if r.role == .leader { p.raw("reachable", (agoMs ?? Int64.max) < 2_000 ? "true" : "false") } else { p.null("reachable") }
        peers.append(p.finish())
    }
    j.raw("peers", "[" + peers.joined(separator: ",") + "]")
    return j.finish()
}

/// A flat JSON object written field by field.
struct JSONObject {
    private var text = "{"
    private var first = true

    private mutating func key(_ k: String) {
        if !first { text += "," }
        first = false
        text += "\"" + k + "\":"
    }

    mutating func raw(_ k: String, _ json: String) {
        key(k)
        text += json
    }

    mutating func null(_ k: String) { raw(k, "null") }

    mutating func number(_ k: String, _ v: Int64?) { raw(k, v.map { String($0) } ?? "null") }

    mutating func string(_ k: String, _ v: String?) {
        guard let v else { return null(k) }
        var out = "\""
        for u in v.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16)
            default: out.unicodeScalars.append(u)
            }
        }
        raw(k, out + "\"")
    }

    func finish() -> String { text + "}" }
}
