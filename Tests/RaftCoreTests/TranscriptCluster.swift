@testable import RaftCore

/// A group of `RaftNode`s driven by hand, each over a `MemoryLog`, exactly as a driver runs one:
/// take a `Ready`, send `messages`, write `truncateAfter` + `entries` and the hard state, only then
/// send `messagesAfterPersist`, apply, `advance`. Messages wait in one FIFO network until delivered
/// or dropped, so every ordering is chosen by the test. The transcript commands
/// (`TranscriptCommands.swift`) and the paper-rule tests both drive this.
final class TranscriptCluster {
    final class Member {
        var node: RaftNode<MemoryLog>
        let log: MemoryLog
        let config: RaftConfig
        /// What the driver has durably written as hard state (what a restart reads back).
        var persistedHardState = HardState()
        /// Everything handed out in `committedEntries`, in order.
        var applied: [Entry] = []
        /// A Ready whose messages left but whose write has not happened (`process-ready NODE hold`).
        var held: Ready?

        init(config: RaftConfig) {
            self.config = config
            self.log = MemoryLog()
            self.node = RaftNode(config: config, log: log)
        }
    }

    private(set) var members: [NodeID: Member] = [:]
    /// Members in id order: every loop over the group uses this order, so transcripts are stable.
    private(set) var ids: [NodeID] = []
    /// Messages sent and not yet delivered or dropped, oldest first. A message sent over a cut
    /// link is lost even if the link heals before it is delivered (`lost`).
    private(set) var queue: [(message: Message, lost: Bool)] = []
    var network: [Message] { queue.map(\.message) }
    /// Links that drop messages in both directions, as (smaller id, larger id).
    private var cutLinks: Set<[NodeID]> = []

    subscript(_ id: NodeID) -> RaftNode<MemoryLog> { members[id]!.node }
    func member(_ id: NodeID) -> Member { members[id]! }

    // MARK: Setup

    /// Adds nodes n1...n`count` as one group; `configure` adjusts each node's configuration.
    func addNodes(_ count: Int, configure: (inout RaftConfig) -> Void = { _ in }) {
        precondition(members.isEmpty, "addNodes: the group already exists")
        let voters = (1...count).map { NodeID(UInt64($0)) }
        for id in voters {
            var config = RaftConfig(id: id, voters: voters)
            config.randomSeed = 1
            configure(&config)
            members[id] = Member(config: config)
        }
        ids = voters
    }

    /// The node crashes and starts again from what it wrote: its durable log and hard state. A
    /// held Ready is lost (never written); messages it already sent stay in the network.
    func restart(_ id: NodeID) {
        let m = members[id]!
        m.held = nil
        let applied = m.applied.last?.index ?? .zero
        m.node = RaftNode(config: m.config, log: m.log, hardState: m.persistedHardState,
                          appliedIndex: min(applied, m.persistedHardState.commit))
        m.applied.removeAll { $0.index > m.persistedHardState.commit }
    }

    // MARK: The network

    func isCut(_ a: NodeID, _ b: NodeID) -> Bool { cutLinks.contains([min(a, b), max(a, b)]) }

    /// Cuts every link between nodes of different groups; links inside a group are restored.
    func partition(_ groups: [[NodeID]]) {
        cutLinks.removeAll()
        for (gi, g) in groups.enumerated() {
            for (hi, h) in groups.enumerated() where hi > gi {
                for a in g { for b in h { cutLinks.insert([min(a, b), max(a, b)]) } }
            }
        }
    }

    /// Cuts `id` from every other node.
    func isolate(_ id: NodeID) {
        for other in ids where other != id { cutLinks.insert([min(id, other), max(id, other)]) }
    }

    func heal() { cutLinks.removeAll() }

    enum Delivery {
        case delivered(Message)
        /// Dropped on request or by a cut link.
        case dropped(Message)
    }

    /// Delivers (or, with `drop`, discards) every queued message that `filter` accepts, oldest first.
    /// Messages over a cut link are dropped. Messages the deliveries produce wait in the nodes'
    /// outboxes until their next Ready, so one call is one round.
    @discardableResult
    func deliver(drop: Bool = false, where filter: (Message) -> Bool = { _ in true }) -> [Delivery] {
        var out: [Delivery] = []
        var keep: [(message: Message, lost: Bool)] = []
        let round = queue
        queue.removeAll()
        for (m, lost) in round {
            guard filter(m) else { keep.append((m, lost)); continue }
            if drop || lost || isCut(m.from, m.to) {
                out.append(.dropped(m))
            } else {
                members[m.to]!.node.step(m)
                out.append(.delivered(m))
            }
        }
        queue = keep + queue
        return out
    }

    // MARK: The driver loop

    /// Whether `id` has a Ready to process (false while it holds an unwritten one).
    func hasReady(_ id: NodeID) -> Bool {
        let m = members[id]!
        return m.held == nil && m.node.hasReady
    }

    /// Takes `id`'s Ready and does all of it. With `hold`, only its `messages` leave: the write, the
    /// `messagesAfterPersist`, applying and `advance` wait for `persist(id)`.
    @discardableResult
    func processReady(_ id: NodeID, hold: Bool = false) -> Ready {
        let m = members[id]!
        precondition(m.held == nil, "\(id) holds an unwritten Ready: persist it first")
        let r = m.node.ready()
        send(r.messages)
        if hold {
            m.held = r
        } else {
            write(m, r)
        }
        return r
    }

    /// A leader's Ready handled as mqbroker's driver does under SYNC_FLUSH: its entries written, its
    /// sync left running (`advance(_:syncDeferred: true)`); `entriesSynced` reports it later.
    @discardableResult
    func processReadyDeferringSync(_ id: NodeID) -> Ready {
        let m = members[id]!
        precondition(m.held == nil, "\(id) holds an unwritten Ready: persist it first")
        let r = m.node.ready()
        precondition(r.syncMayBeDeferred, "processReadyDeferringSync: \(id)'s Ready must sync")
        send(r.messages)
        m.log.write(truncateAfter: r.truncateAfter, entries: r.entries)
        send(r.messagesAfterPersist)
        m.applied.append(contentsOf: r.committedEntries)
        m.node.advance(r, syncDeferred: true)
        return r
    }

    /// Writes `id`'s held Ready, sends what had to wait for the write, applies, advances.
    @discardableResult
    func persist(_ id: NodeID) -> Ready? {
        let m = members[id]!
        guard let r = m.held else { return nil }
        m.held = nil
        write(m, r)
        return r
    }

    private func send(_ messages: [Message]) {
        for m in messages { queue.append((m, isCut(m.from, m.to))) }
    }

    private func write(_ m: Member, _ r: Ready) {
        // MemoryLog never loses a prefix, so no leader here ever sends a reset (LogResetTests do).
        precondition(r.resetLog == nil, "a log reset in a transcript")
        m.log.write(truncateAfter: r.truncateAfter, entries: r.entries)
        if let hs = r.hardState { m.persistedHardState = hs }
        // Only now that the write is durable may acknowledgements and our own votes leave.
        send(r.messagesAfterPersist)
        m.applied.append(contentsOf: r.committedEntries)
        m.node.advance(r)
    }

    /// One step of `stabilize`: what happened, for the transcript.
    enum Event {
        case ready(NodeID, Ready)
        case received(NodeID, [Delivery])
    }

    /// Processes Readies and delivers messages among `nodes` until nothing is left to do.
    /// Messages to nodes outside `nodes` stay queued.
    @discardableResult
    func stabilize(_ nodes: [NodeID]? = nil) -> [Event] {
        let scope = nodes ?? ids
        var events: [Event] = []
        for _ in 0..<10_000 {
            var progressed = false
            for id in scope where hasReady(id) {
                events.append(.ready(id, processReady(id)))
                progressed = true
            }
            for id in scope {
                let d = deliver { $0.to == id }
                if !d.isEmpty {
                    events.append(.received(id, d))
                    progressed = true
                }
            }
            if !progressed { return events }
        }
        preconditionFailure("stabilize: the group never became quiet")
    }

    // MARK: Observers

    /// The leaders by term, for election safety checks.
    func leaders() -> [(id: NodeID, term: Term)] {
        ids.compactMap { id in self[id].role == .leader ? (id, self[id].term) : nil }
    }
}

extension TranscriptCluster.Member {
    /// The durable log as entries, for log comparisons.
    var entries: [Entry] { log.stored }
}
