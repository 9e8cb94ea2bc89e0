import RaftCore

/// A whole Raft group in one thread on a simulated network, disk and clock, every choice drawn from
/// one seed (TigerBeetle's VOPR). A run has a safety phase (clients propose and read while faults
/// strike; the checkers run after every step) and a liveness phase (every fault healed: a leader
/// must emerge and every acknowledged proposal must be applied on every node within a bound).
public final class Simulator {
    public let seed: UInt64
    public let options: SimOptions

    enum Event {
        case tick(slot: Int, incarnation: Int)
        case deliver(Message)
        case syncDone(slot: Int, incarnation: Int)
        /// A leader's deferred sync, asked of the flusher when `ticket` was taken, returned; the last
        /// entry it covers.
        case deferredSyncDone(slot: Int, incarnation: Int, generation: Int, ticket: Int, index: LogIndex, term: Term)
        /// A leader's inline sync of its deferred writes returned.
        case inlineSyncDone(slot: Int, incarnation: Int)
        case client(Int)
        case fault
        case heal(generation: Int)
        case restart(slot: Int)
        case resume(slot: Int, incarnation: Int)
        case diskRecovers(slot: Int)
        case crashNewLeader(slot: Int, incarnation: Int)
        /// The transport of `slot` reports that its connection to `peer` closed.
        case connectionLost(slot: Int, incarnation: Int, peer: Int)
        case endOfSafetyPhase
    }

    struct Client {
        var target: Int
        var inFlight = 0
        var sequence = 0
        /// Whether its next `.client` event is in the queue: one chain of proposals per client.
        var scheduled = false
    }

    private var random: SimRandom
    private var now = SimTime.zero
    private var queue = EventQueue<Event>()
    private let nodes: [SimNode]
    private var checker: Checker
    var trace: Trace
    private var clients: [Client] = []
    /// Directed links that drop everything (from slot, to slot).
    private var blocked: Set<Int> = []
    /// When the last message on each link arrives: links are FIFO unless a message is reordered.
    private var linkArrival: [SimTime]
    /// Network faults; all heal at the liveness phase.
    private var lossProbability: Double
    private var duplicateProbability: Double
    private var reorderProbability: Double
    private var partitionGeneration = 0
    private var inLiveness = false
    private var livenessStart = SimTime.zero
    /// The second liveness stage: a minority of followers crashed for good, and proposals that must
    /// be acknowledged by the leader and the followers left, which is an exact quorum (so the
    /// leader's own durable copy counts: its deferred syncs must complete).
    /// Only proposals past the leader's log at that moment count (`firstIndex`): older ones can
    /// still be acknowledged on the crashed followers' answers already on their way.
    private var minorityDown: (since: SimTime, firstIndex: LogIndex, acked: Int, victims: Set<Int>)?
    private var readSequence = 0
    public private(set) var stats = SimStats()

    public init(seed: UInt64, options: SimOptions) {
        precondition(options.nodes >= 1 && options.nodes <= 64, "a simulated group has 1 to 64 nodes")
        self.seed = seed
        self.options = options
        var r = SimRandom(seed: seed)
        var nodes: [SimNode] = []
        for slot in 0..<options.nodes {
            let rate = 1 + r.double(in: -options.clockSkew...options.clockSkew)
            nodes.append(SimNode(slot: slot, tickIntervalUs: max(1, UInt64(Double(options.tickIntervalUs) * rate))))
        }
        self.nodes = nodes
        self.random = r
        self.checker = Checker(nodes: options.nodes)
        self.trace = Trace(capacity: 4_096)
        self.linkArrival = Array(repeating: .zero, count: 64 * 64)
        self.lossProbability = options.lossProbability
        self.duplicateProbability = options.duplicateProbability
        self.reorderProbability = options.reorderProbability
    }

    // MARK: Running

    /// Runs both phases. Returns the violation that ended the run, if any.
    public func run() -> Violation? {
        for n in nodes { start(n) }
        for c in 0..<options.clients {
            clients.append(Client(target: random.int(in: 0...(nodes.count - 1))))
            scheduleClient(c)
        }
        scheduleNextFault()
        let safetyEnd = SimTime(microseconds: UInt64(options.safetyTicks) * options.tickIntervalUs)
        queue.push(.endOfSafetyPhase, at: safetyEnd)
        // Liveness: a leader within livenessTicks of the healing, and then convergence, allowed to
        // take longer only while the slowest node keeps catching up (a group configured with one
        // append in flight catches a long backlog up slowly, but steadily); a stall of livenessTicks,
        // or ten times livenessTicks in all, fails the run.
        let livenessUs = UInt64(options.livenessTicks) * options.tickIntervalUs
        var hardDeadline = safetyEnd + 10 * livenessUs
        var progressAt = safetyEnd
        var slowest = LogIndex.zero
        var ackedAtProgress = 0
        do {
            while let (time, event) = queue.pop() {
                precondition(time >= now, "simulated time went back")
                if time > hardDeadline { break }
                if inLiveness {
                    if stats.livenessLeaderUs == nil && time > safetyEnd + livenessUs { break }
                    if time > progressAt + livenessUs { break }
                }
                now = time
                stats.events += 1
                try handle(event)
                if inLiveness {
                    if try converged() {
                        if let m = minorityDown {
                            stats.minorityDownUs = now.rawValue - m.since.rawValue
                            stats.simulatedUs = now.rawValue
                            return nil
                        }
                        stats.livenessConvergenceUs = now.rawValue - livenessStart.rawValue
                        guard options.minorityDownStage && nodes.count >= 3 else {
                            stats.simulatedUs = now.rawValue
                            return nil
                        }
                        try beginMinorityDown()
                        hardDeadline = now + 10 * livenessUs
                        progressAt = now
                        slowest = .zero
                        ackedAtProgress = checker.acked
                    }
                    // Progress: the slowest live node applies more, or (a minority down) a
                    // proposal is acknowledged.
                    let least = nodes.filter(\.isUp).map(\.appliedIndex).min() ?? .zero
                    if least > slowest || (minorityDown != nil && checker.acked > ackedAtProgress) {
                        slowest = max(slowest, least)
                        ackedAtProgress = checker.acked
                        progressAt = now
                    }
                }
            }
            stats.simulatedUs = now.rawValue
            return Violation(rule: "liveness", detail: livenessReport())
        } catch {
            stats.simulatedUs = now.rawValue
            return error
        }
    }

    private func schedule(_ e: Event, after us: Double) {
        queue.push(e, at: now + UInt64(max(0, us)))
    }

    private func handle(_ event: Event) throws(Violation) {
        switch event {
        case .tick(let slot, let inc):
            let n = nodes[slot]
            guard n.incarnation == inc, n.isUp else { return }
            schedule(.tick(slot: slot, incarnation: inc), after: Double(n.tickIntervalUs))
            if n.paused { return }  // a stopped process misses its timers
            _ = n.enqueue(.tick, limit: options.mailboxLimit)
            try pump(n)
        case .deliver(let m):
            let from = Int(m.from.rawValue), to = Int(m.to.rawValue)
            let n = nodes[to]
            if blocked.contains(link(from, to)) { return drop(m, "partition") }
            guard n.isUp else { return drop(m, "node down") }
            guard n.enqueue(.message(m), limit: options.mailboxLimit) else { return drop(m, "mailbox full") }
            stats.delivered += 1
            trace.record(now, .deliver(m))
            try pump(n)
        case .syncDone(let slot, let inc):
            let n = nodes[slot]
            guard n.incarnation == inc, n.isUp else { return }
            if n.paused {
                n.syncFinishedWhilePaused = true
                return
            }
            try completeReady(n)
            try pump(n)
        case .deferredSyncDone(let slot, let inc, let generation, let ticket, let index, let term):
            let n = nodes[slot]
            guard n.incarnation == inc, n.isUp else { return }
            // The disk did the work even if the process is stopped; the node hears of it between
            // Readies, in order with its other inputs (the driver reads the store's durable point
            // after every batch: nothing drops it).
            n.disk.sync(through: ticket)
            if n.syncRequestGeneration == generation { n.syncRequestOut = false }
            _ = n.enqueue(.synced(index: index, term: term), limit: .max)
            if !n.paused { try pump(n) }
        case .inlineSyncDone(let slot, let inc):
            let n = nodes[slot]
            guard n.incarnation == inc, n.isUp, let d = n.inlineSyncInFlight else { return }
            n.disk.sync()
            n.inlineSyncInFlight = nil
            if n.paused {
                _ = n.enqueue(.synced(index: d.index, term: d.term), limit: .max)
                return
            }
            n.raft?.entriesSynced(through: d.index, term: d.term)
            try pump(n)
        case .client(let c):
            clients[c].scheduled = false
            try clientStep(c)
        case .fault:
            if !inLiveness {
                try injectFault()
                scheduleNextFault()
            }
        case .heal(let generation):
            if generation == partitionGeneration && !blocked.isEmpty {
                blocked.removeAll()
                trace.record(now, .fault("partition healed"))
            }
        case .restart(let slot):
            let n = nodes[slot]
            // A restart the safety phase scheduled does not bring back a node crashed for good.
            if !n.isUp && !(minorityDown?.victims.contains(slot) ?? false) { try restart(n) }
        case .resume(let slot, let inc):
            let n = nodes[slot]
            if n.incarnation == inc && n.paused { try resume(n) }
        case .diskRecovers(let slot):
            nodes[slot].slowDisk = false
        case .crashNewLeader(let slot, let inc):
            let n = nodes[slot]
            if !inLiveness && n.incarnation == inc && n.isUp {
                trace.record(now, .fault("\(n.id) crashes right after winning an election"))
                try crash(n)
                let electionUs = Double(options.electionTimeoutTicks) * Double(options.tickIntervalUs)
                schedule(.restart(slot: slot), after: random.double(in: 0.1...5) * electionUs)
            }
        case .connectionLost(let slot, let inc, let peer):
            let n = nodes[slot]
            guard n.incarnation == inc, n.isUp else { return }
            trace.record(now, .fault("\(n.id) sees its connection to n\(peer) close"))
            _ = n.enqueue(.connectionLost(nodes[peer].id), limit: options.mailboxLimit)
            if !n.paused { try pump(n) }
        case .endOfSafetyPhase:
            try beginLiveness()
        }
    }

    // MARK: The driver loop of one node

    private func start(_ n: SimNode) {
        // RaftNode adopts the log's last term when the hard state lags it (a crash between the
        // entries' sync and the hard state's).
        let hs = n.disk.durableHardState
        var config = RaftConfig(id: n.id, voters: nodes.map(\.id))
        config.electionTimeoutTicks = options.electionTimeoutTicks
        config.heartbeatTicks = options.heartbeatTicks
        config.preVote = options.preVote
        config.campaignOnStart = options.campaignOnStart
        config.checkQuorum = options.checkQuorum
        config.preferredLeader = options.preferredLeader ? NodeID(0) : nil
        config.maxEntriesPerAppend = options.maxEntriesPerAppend
        config.maxInflightAppends = options.maxInflightAppends
        config.maxAppendBytes = options.maxAppendBytes
        config.maxPendingProposals = 4_096
        config.randomSeed = seed &+ UInt64(n.incarnation) &* 0x2545_F491_4F6C_DD1D
        config.brokenRules = options.brokenRules
        let raft = RaftNode(config: config, log: n.reader, hardState: hs, appliedIndex: .zero)
        // What retention deleted (or a reset skipped) was applied before and is not again.
        n.appliedIndex = n.disk.firstIndex.previous
        n.raft = raft
        n.lastTerm = raft.term
        // The first tick comes at a random phase of the node's clock.
        schedule(.tick(slot: n.slot, incarnation: n.incarnation), after: random.double(in: 0...Double(n.tickIntervalUs)))
    }

    /// Steps queued inputs and handles Readies until the node waits for its disk or has nothing to do.
    private func pump(_ n: SimNode) throws(Violation) {
        guard let raft = n.raft else { return }
        while !n.paused && n.inFlight == nil && n.inlineSyncInFlight == nil {
            var taken = 0
            while taken < 64, let input = n.dequeue() {
                taken += 1
                try step(n, raft, input)
            }
            try checker.observe(n)
            if raft.hasReady {
                try handleReady(n, raft)
                continue
            }
            // No Ready left: the deferred writes are made durable, as the driver's `nextReady` does:
            // inline when nothing waits in the mailbox (a replica on a loop of its own), else by the
            // flusher while the node steps on (and always in mqbroker, whose replica shares its loop
            // with clients). Here an input is stepped the moment it arrives, so the mailbox is nearly
            // always empty; so an empty mailbox still sends half of the syncs to the flusher, and both
            // paths are explored.
            if let d = n.deferredLast, !n.syncRequestOut, !options.brokenRules.contains(.neverSyncDeferred) {
                n.deferredLast = nil
                if n.mailboxCount == 0 && random.chance(0.5) {
                    n.inlineSyncInFlight = d
                    schedule(.inlineSyncDone(slot: n.slot, incarnation: n.incarnation), after: syncLatency(n))
                    return
                }
                n.syncRequestOut = true
                n.syncRequestGeneration += 1
                schedule(.deferredSyncDone(slot: n.slot, incarnation: n.incarnation, generation: n.syncRequestGeneration,
                                           ticket: n.disk.syncTicket, index: d.index, term: d.term), after: syncLatency(n))
            }
            if n.mailboxCount == 0 { return }
        }
    }

    private func step(_ n: SimNode, _ raft: RaftNode<SimLogReader>, _ input: SimNode.Input) throws(Violation) {
        switch input {
        case .message(let m):
            raft.step(m)
        case .tick:
            raft.tick()
        case .propose(let c, let data):
            do {
                let (index, term) = try raft.propose(data)
                n.proposals[index] = .init(client: c, term: term, data: data, deadline: now + 2_000_000)
                stats.proposed += 1
                trace.record(now, .proposed(n.id, client: c, index: index, term: term))
            } catch {
                clients[c].inFlight -= 1
                stats.refused += 1
                if case .notLeader(let leader?) = error { clients[c].target = Int(leader.rawValue) }
                else { clients[c].target = random.int(in: 0...(nodes.count - 1)) }
            }
        case .read(let context):
            do {
                try raft.readIndex(context: context)
                n.reads[context] = checker.maxAckedIndex
            } catch {
                stats.refused += 1
            }
        case .transfer(let target):
            try? raft.transferLeadership(to: target)
        case .connectionLost(let peer):
            raft.leaderConnectionLost(peer)
        case .synced(let index, let term):
            raft.entriesSynced(through: index, term: term)
        }
    }

    private func handleReady(_ n: SimNode, _ raft: RaftNode<SimLogReader>) throws(Violation) {
        let r = raft.ready()
        if let ss = r.softState, ss != n.lastSoftState {
            n.lastSoftState = ss
            trace.record(now, .role(n.id, ss, raft.term))
            if ss.role == .leader {
                stats.leadersElected += 1
                if !inLiveness && random.chance(options.crashNewLeaderProbability) {
                    schedule(.crashNewLeader(slot: n.slot, incarnation: n.incarnation), after: random.double(in: 0...5_000))
                }
            }
        }
        for m in r.messages { send(m) }
        if let reset = r.resetLog {
            // The committed prefix up to the leader's base, from the checker's record: the node itself
            // never reads it, and the checkers' prefix hashes stay whole. (The base is committed: the
            // leader deleted only entries it had applied.)
            let committed = checker.committedEntries
            guard Int(reset.baseIndex.rawValue) <= committed.count, committed[Int(reset.baseIndex.rawValue) - 1].term == reset.baseTerm else {
                throw Violation(rule: "a log reset's base is committed", detail: "\(n.id) is reset to \(reset.baseTerm)/\(reset.baseIndex), beyond the committed prefix (\(committed.count) entries)")
            }
            let prefix = Array(committed[0..<Int(reset.baseIndex.rawValue)])
            trace.record(now, .fault("\(n.id) is reset to the leader's base \(reset.baseTerm)/\(reset.baseIndex) (its log ended at \(n.disk.lastIndex))"))
            stats.resets += 1
            n.disk.reset(toPrefix: prefix)
            n.appliedIndex = reset.baseIndex
        }
        let firstWritten: LogIndex?
        if let t = r.truncateAfter {
            precondition(!r.entries.isEmpty, "a Ready truncates only to append")
            n.disk.truncate(after: t)
        }
        if let first = r.entries.first {
            precondition(first.index == n.disk.lastIndex.next, "Ready entries must continue the log after the truncation point")
            n.disk.append(r.entries)
            firstWritten = first.index
        } else {
            firstWritten = nil
        }
        if let first = firstWritten { try checker.written(n, from: first) }
        try checker.afterWrite(n)
        let deferSync = r.mustSync && r.syncMayBeDeferred && options.deferLeaderSync
        if r.mustSync && !deferSync {
            n.inFlight = r
            schedule(.syncDone(slot: n.slot, incarnation: n.incarnation), after: syncLatency(n))
        } else {
            if deferSync {
                let last = r.entries.last!
                n.deferredLast = (last.index, last.term)
            }
            // A commit-only change is written lazily: losing it costs nothing but re-applying. Its
            // commit index stays within what is synced (a deferred sync may still be out), so that a
            // crash that keeps it never has it point past the durable log.
            if let hs = r.hardState {
                n.disk.write(hardState: HardState(term: hs.term, vote: hs.vote, commit: min(hs.commit, raft.status.persistedIndex)))
            }
            n.inFlight = r
            try completeReady(n, syncDeferred: deferSync)
        }
    }

    private func syncLatency(_ n: SimNode) -> Double {
        let latency = random.exponential(mean: options.syncLatencyMeanUs, max: options.syncLatencyMaxUs)
        return n.slowDisk ? latency * 30 : latency
    }

    /// The Ready's write is durable (or needed no sync, or its sync was deferred): speak, apply,
    /// advance.
    private func completeReady(_ n: SimNode, syncDeferred: Bool = false) throws(Violation) {
        guard let raft = n.raft, let r = n.inFlight else { preconditionFailure("completeReady without a Ready in flight") }
        n.inFlight = nil
        n.syncFinishedWhilePaused = false
        if r.mustSync && !syncDeferred {
            // Entries first, then the hard state that may point at them (see RaftNode.init).
            n.disk.sync()
            // Everything written is durable: deferred writes included, and a request still out
            // is forgotten (the driver's `requestedSync`).
            n.deferredLast = nil
            n.syncRequestOut = false
            if let hs = r.hardState {
                n.disk.write(hardState: hs)
                n.disk.sync()
            }
            try checker.durableHardState(n)
        }
        for m in r.messagesAfterPersist { send(m) }
        for e in r.committedEntries {
            try checker.applied(n, e)
            precondition(e.index == n.appliedIndex.next, "committed entries come out in order")
            n.appliedIndex = e.index
            if let p = n.proposals.removeValue(forKey: e.index) {
                clients[p.client].inFlight -= 1
                if p.term == e.term {
                    if p.data != e.data {
                        throw Violation(rule: "a proposal commits as proposed", detail: "\(n.id) applied other data at \(e.index)")
                    }
                    checker.acknowledged(index: e.index)
                    if let m = minorityDown, e.index >= m.firstIndex { minorityDown!.acked += 1 }
                    trace.record(now, .acked(n.id, client: p.client, index: e.index))
                }
            }
        }
        for rs in r.readStates {
            if let ackedBefore = n.reads.removeValue(forKey: rs.context) {
                try checker.readServed(n, index: rs.index, ackedBeforeIssue: ackedBefore)
                stats.reads += 1
                trace.record(now, .read(n.id, index: rs.index))
            }
        }
        raft.advance(r, syncDeferred: syncDeferred)
        if raft.commitIndex != n.lastCommit { trace.record(now, .commit(n.id, raft.commitIndex)) }
        try checker.observe(n)
    }

    // MARK: Network

    private func link(_ from: Int, _ to: Int) -> Int { from * 64 + to }

    private func send(_ m: Message) {
        stats.sent += 1
        if random.chance(lossProbability) { return drop(m, "loss") }
        transmit(m)
        if random.chance(duplicateProbability) { transmit(m) }
    }

    private func transmit(_ m: Message) {
        let l = link(Int(m.from.rawValue), Int(m.to.rawValue))
        var arrival = now + UInt64(random.exponential(mean: options.delayMeanUs, max: options.delayMaxUs))
        if random.chance(reorderProbability) {
            arrival = arrival + UInt64(random.exponential(mean: 4 * options.delayMeanUs, max: 4 * options.delayMaxUs))
        } else {
            arrival = max(arrival, linkArrival[l])
            linkArrival[l] = arrival
        }
        queue.push(.deliver(m), at: arrival)
    }

    private func drop(_ m: Message, _ reason: StaticString) {
        stats.dropped += 1
        trace.record(now, .drop(m, reason: reason))
    }

    // MARK: Clients

    /// The client's next step, after an exponential pause. A client has one step in the queue at a
    /// time (a second chain would double its rate).
    private func scheduleClient(_ c: Int) {
        precondition(!clients[c].scheduled, "client \(c) already has a step in the queue")
        clients[c].scheduled = true
        schedule(.client(c), after: random.exponential(mean: options.proposalIntervalMeanUs, max: 10 * options.proposalIntervalMeanUs))
    }

    private func clientStep(_ c: Int) throws(Violation) {
        if inLiveness {
            // Healed: no proposals, except while a minority is down, until enough are acknowledged.
            guard let m = minorityDown, m.acked < options.minorityDownAcks else { return }
        }
        scheduleClient(c)
        expireProposals()
        guard clients[c].inFlight < options.proposalsInFlightPerClient else { return }
        let n = nodes[clients[c].target]
        guard n.isUp else {
            clients[c].target = random.int(in: 0...(nodes.count - 1))
            return
        }
        if random.chance(options.readProbability) {
            readSequence += 1
            _ = n.enqueue(.read(context: Array("r\(readSequence)".utf8)), limit: options.mailboxLimit)
        } else {
            clients[c].sequence += 1
            clients[c].inFlight += 1
            let data = Array("c\(c)-\(clients[c].sequence)".utf8)
            if !n.enqueue(.propose(client: c, data: data), limit: options.mailboxLimit) { clients[c].inFlight -= 1 }
        }
        try pump(n)
    }

    /// A client gives up on a proposal after its deadline (its outcome is then unknown to it).
    private func expireProposals() {
        for n in nodes where !n.proposals.isEmpty {
            for (index, p) in n.proposals where p.deadline < now {
                n.proposals.removeValue(forKey: index)
                clients[p.client].inFlight -= 1
            }
        }
    }

    // MARK: Faults

    private func scheduleNextFault() {
        schedule(.fault, after: random.exponential(mean: options.faultIntervalMeanUs, max: 10 * options.faultIntervalMeanUs))
    }

    private func injectFault() throws(Violation) {
        var kinds: [String] = []
        if options.crashes { kinds += ["crash", "crash-leader", "crash-leader", "crash-all"] }
        if options.pauses { kinds.append("pause") }
        if options.partitions { kinds += ["partition", "partition", "isolate-leader"] }
        if options.transfers { kinds.append("transfer") }
        if options.slowDisks { kinds.append("slow-disk") }
        if options.connectionLossHints { kinds.append("connection-reset") }
        if options.retention { kinds += ["retention", "retention"] }
        guard !kinds.isEmpty else { return }
        let electionUs = Double(options.electionTimeoutTicks) * Double(options.tickIntervalUs)
        switch random.pick(kinds) {
        case "crash":
            let n = random.pick(nodes.filter(\.isUp).isEmpty ? nodes : nodes.filter(\.isUp))
            if n.isUp {
                try crash(n)
                schedule(.restart(slot: n.slot), after: random.double(in: 0.1...20) * electionUs)
            }
        case "crash-leader":
            // The leader dies, often right after winning: what leaves uncommitted entries of
            // several terms behind (Raft figure 8).
            if let leader = currentLeader() {
                try crash(leader)
                schedule(.restart(slot: leader.slot), after: random.double(in: 0.1...10) * electionUs)
            }
        case "isolate-leader":
            if let leader = currentLeader() {
                partitionGeneration += 1
                stats.partitions += 1
                blocked.removeAll()
                for b in 0..<nodes.count where b != leader.slot {
                    blocked.insert(link(leader.slot, b))
                    blocked.insert(link(b, leader.slot))
                }
                trace.record(now, .fault("partition: the leader \(leader.id) isolated"))
                schedule(.heal(generation: partitionGeneration), after: random.double(in: 1...30) * electionUs)
            }
        case "crash-all":
            if random.chance(0.2) {
                for n in nodes where n.isUp { try crash(n) }
                for n in nodes { schedule(.restart(slot: n.slot), after: random.double(in: 0.1...5) * electionUs) }
            }
        case "pause":
            let n = random.pick(nodes)
            if n.isUp && !n.paused {
                n.paused = true
                stats.pauses += 1
                let us = random.double(in: 1...10) * electionUs
                trace.record(now, .fault("\(n.id) paused for \(Int(us / 1000))ms"))
                schedule(.resume(slot: n.slot, incarnation: n.incarnation), after: us)
            }
        case "partition":
            partition()
            schedule(.heal(generation: partitionGeneration), after: random.double(in: 1...30) * electionUs)
        case "retention":
            // Retention on one node: a prefix it applied (and holds durably) goes.
            let n = random.pick(nodes)
            let limit = min(n.appliedIndex, LogIndex(UInt64(n.disk.durableEntries.count)), n.disk.lastIndex > .zero ? n.disk.lastIndex.previous : .zero)
            if n.isUp, !n.paused, n.inFlight == nil, n.inlineSyncInFlight == nil, limit >= n.disk.firstIndex {
                let cut = LogIndex(UInt64(random.int(in: Int(n.disk.firstIndex.rawValue)...Int(limit.rawValue))))
                n.disk.deletePrefix(through: cut)
                stats.retentions += 1
                trace.record(now, .fault("\(n.id): retention deletes its log through \(cut)"))
            }
        case "connection-reset":
            // A connection closes while both ends live (a middlebox reset, a restarted NIC).
            let n = random.pick(nodes), peer = random.pick(nodes.filter { $0 !== n })
            if n.isUp { schedule(.connectionLost(slot: n.slot, incarnation: n.incarnation, peer: peer.slot), after: 0) }
        case "transfer":
            if let leader = currentLeader() {
                let target = random.pick(nodes.filter { $0 !== leader })
                trace.record(now, .fault("operator: transfer leadership \(leader.id) -> \(target.id)"))
                stats.transfers += 1
                _ = leader.enqueue(.transfer(to: target.id), limit: options.mailboxLimit)
                try pump(leader)
            }
        default:  // slow-disk
            let n = random.pick(nodes)
            n.slowDisk = true
            trace.record(now, .fault("\(n.id) disk slow (30x sync latency)"))
            schedule(.diskRecovers(slot: n.slot), after: random.double(in: 1...20) * electionUs)
        }
    }

    /// The up node that leads the highest term, if any.
    private func currentLeader() -> SimNode? {
        nodes.filter { $0.isUp && $0.raft?.role == .leader }.max { $0.raft!.term < $1.raft!.term }
    }

    private func partition() {
        partitionGeneration += 1
        stats.partitions += 1
        blocked.removeAll()
        let slots = Array(0..<nodes.count)
        guard nodes.count > 1 else { return }
        switch random.int(in: 0...3) {
        case 0:  // one node isolated, both ways
            let a = random.pick(slots)
            for b in slots where b != a {
                blocked.insert(link(a, b))
                blocked.insert(link(b, a))
            }
            trace.record(now, .fault("partition: n\(a) isolated"))
        case 1:  // two sides
            var shuffled = slots
            shuffled.shuffle(using: &random)
            let cut = random.int(in: 1...(nodes.count - 1))
            let left = Set(shuffled[..<cut])
            for a in slots { for b in slots where left.contains(a) != left.contains(b) { blocked.insert(link(a, b)) } }
            trace.record(now, .fault("partition: \(left.sorted().map { "n\($0)" }) | \(slots.filter { !left.contains($0) }.map { "n\($0)" })"))
        case 2:  // a bridge: two sides that only the middle node sees
            guard nodes.count >= 3 else { fallthrough }
            var shuffled = slots
            shuffled.shuffle(using: &random)
            let bridge = shuffled[0]
            let rest = Array(shuffled.dropFirst())
            let cut = random.int(in: 1...(rest.count - 1))
            let left = Set(rest[..<cut])
            for a in rest { for b in rest where left.contains(a) != left.contains(b) { blocked.insert(link(a, b)) } }
            trace.record(now, .fault("partition: bridge n\(bridge) between \(left.sorted().map { "n\($0)" }) and \(rest.filter { !left.contains($0) }.sorted().map { "n\($0)" })"))
        default:  // asymmetric: some links drop one way only
            var desc: [String] = []
            for a in slots { for b in slots where a != b && random.chance(0.3) {
                blocked.insert(link(a, b))
                desc.append("n\(a)->n\(b)")
            } }
            trace.record(now, .fault("partition: one-way loss on " + (desc.isEmpty ? "no link" : desc.joined(separator: ", "))))
        }
    }

    private func crash(_ n: SimNode) throws(Violation) {
        let visible = n.disk.prefixHashes
        for p in n.proposals.values { clients[p.client].inFlight -= 1 }
        for c in n.queuedProposalClients { clients[c].inFlight -= 1 }
        n.crash()
        if options.connectionLossHints {
            // The dead process's kernel closes its sockets: the peers it had a working link with
            // hear of it within a millisecond (a partitioned link carries no FIN).
            for other in nodes where other !== n && other.isUp
                && !blocked.contains(link(n.slot, other.slot)) && !blocked.contains(link(other.slot, n.slot)) {
                schedule(.connectionLost(slot: other.slot, incarnation: other.incarnation, peer: n.slot),
                         after: random.double(in: 20...1_000))
            }
        }
        let lost = n.disk.crash(&random, tearProbability: options.tearProbability)
        stats.crashes += 1
        trace.record(now, .fault("\(n.id) crashed: \(lost)"))
        // The longest prefix the node still holds as it was (prefix hashes are equal exactly up to it).
        var lo = 0, hi = min(visible.count, n.disk.prefixHashes.count)
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if visible[mid - 1] == n.disk.prefixHashes[mid - 1] { lo = mid } else { hi = mid - 1 }
        }
        try checker.afterCrash(of: n, lostAfter: LogIndex(UInt64(lo)), nodes: nodes)
    }

    private func restart(_ n: SimNode) throws(Violation) {
        let hs = n.disk.durableHardState
        if hs.commit > n.disk.lastIndex {
            throw Violation(rule: "a persisted commit index points into the durable log",
                            detail: "\(n.id) restarts with commit \(hs.commit) but its durable log ends at \(n.disk.lastIndex)")
        }
        try checker.durableHardState(n)
        trace.record(now, .fault("\(n.id) restarted (term \(hs.term), log \(n.disk.lastIndex), commit \(hs.commit))"))
        start(n)
        try checker.observe(n)
        try checker.afterWrite(n)
    }

    private func resume(_ n: SimNode) throws(Violation) {
        n.paused = false
        trace.record(now, .fault("\(n.id) resumed"))
        if n.syncFinishedWhilePaused { try completeReady(n) }
        try pump(n)
    }

    // MARK: Liveness

    private func beginLiveness() throws(Violation) {
        inLiveness = true
        livenessStart = now
        trace.record(now, .fault("end of the safety phase: every fault heals"))
        blocked.removeAll()
        partitionGeneration += 1
        lossProbability = 0
        duplicateProbability = 0
        reorderProbability = 0
        for n in nodes {
            n.slowDisk = false
            if !n.isUp { try restart(n) } else if n.paused { try resume(n) }
        }
    }

    /// A leader every live node follows, and every acknowledged proposal applied on every live node
    /// (while a minority is down: also the proposals asked for acknowledged).
    private func converged() throws(Violation) -> Bool {
        let leaders = nodes.filter { $0.isUp && $0.raft?.role == .leader }
        guard leaders.count == 1, let leader = leaders.first?.raft else { return false }
        if stats.livenessLeaderUs == nil { stats.livenessLeaderUs = now.rawValue - livenessStart.rawValue }
        if let m = minorityDown, m.acked < options.minorityDownAcks { return false }
        for n in nodes where n.isUp || minorityDown == nil {
            guard let r = n.raft, r.leader == leader.id, r.term == leader.term, n.appliedIndex >= checker.maxAckedIndex else { return false }
        }
        return true
    }

    /// Once the healed group has converged: the largest minority of followers crashes for good, and
    /// the clients propose again until `minorityDownAcks` more are acknowledged. The leader and the
    /// followers left are an exact quorum, so every commit needs the leader's own durable copy: a
    /// driver that never makes its deferred writes durable (or forgets a sync it asked for) stalls
    /// here, where a full group's followers would commit without it.
    private func beginMinorityDown() throws(Violation) {
        guard let leader = nodes.first(where: { $0.raft?.role == .leader }) else { preconditionFailure("converged without a leader") }
        var followers = nodes.filter { $0 !== leader }
        followers.shuffle(using: &random)
        let victims = Array(followers.prefix((nodes.count - 1) / 2))
        for v in victims { try crash(v) }
        let names = victims.map { "\($0.id)" }
        trace.record(now, .fault("liveness with a minority down: \(names.joined(separator: ", ")) crashed for good; the leader \(leader.id) must count its own copy"))
        minorityDown = (now, leader.raft!.lastIndex.next, 0, Set(victims.map(\.slot)))
        for c in clients.indices {
            clients[c].target = leader.slot
            // A client whose step is still in the queue from the healed phase goes on with it.
            if !clients[c].scheduled { scheduleClient(c) }
        }
    }

    private func livenessReport() -> String {
        let states = nodes.map { n -> String in
            guard let r = n.raft else { return "\(n.id) down" }
            return "\(n.id) \(r.role) t\(r.term) leader=\(r.leader.map { "\($0)" } ?? "none") last=\(r.lastIndex) commit=\(r.commitIndex) applied=\(n.appliedIndex)"
        }
        let what: String
        if let m = minorityDown {
            what = "with \(m.victims.sorted().map { "\(nodes[$0].id)" }.joined(separator: ", ")) down: \(m.acked) of \(options.minorityDownAcks) new proposals (from index \(m.firstIndex)) acknowledged, no progress for \(options.livenessTicks) ticks (or 10x that passed)"
        } else if stats.livenessLeaderUs == nil {
            what = "no leader within \(options.livenessTicks) ticks of the healing"
        } else {
            what = "no convergence: no node behind made progress for \(options.livenessTicks) ticks (or 10x that passed)"
        }
        return "\(what) (highest acknowledged index \(checker.maxAckedIndex)): " + states.joined(separator: "; ")
    }

    public var acknowledged: Int { checker.acked }
}

/// What a run did.
public struct SimStats: Sendable {
    public var events = 0
    public var simulatedUs: UInt64 = 0
    public var sent = 0
    public var delivered = 0
    public var dropped = 0
    public var proposed = 0
    public var refused = 0
    public var reads = 0
    public var leadersElected = 0
    public var crashes = 0
    public var pauses = 0
    public var partitions = 0
    public var transfers = 0
    public var retentions = 0
    public var resets = 0
    /// From the end of the faults to a leader, and to full convergence.
    public var livenessLeaderUs: UInt64?
    public var livenessConvergenceUs: UInt64?
    /// From crashing a minority (after convergence) to the new proposals acknowledged.
    public var minorityDownUs: UInt64?
}
