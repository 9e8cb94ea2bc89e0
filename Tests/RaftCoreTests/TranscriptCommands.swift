@testable import RaftCore

// Transcript commands (Tests/RaftCoreTests/Transcripts/*.txt). Nodes are written `n1` or `1`;
// a node list is `n1,n2` or `all`. Options are `key=value`. Every command prints at least one line.
//
//   add-nodes N [preVote=true] [checkQuorum=true] [electionTicks=10] [heartbeatTicks=1]
//               [preferredLeader=nX] [maxPendingProposals=K] [maxEntryBytes=K]
//               [maxUncommittedBytes=K] [maxInflightAppends=K] [maxEntriesPerAppend=K]
//               [maxPendingReads=K] [seed=K] [broken=old-term-commit,stale-vote,ack-before-persist]
//       Creates the group n1...nN (defaults as in RaftConfig; seed 1). Prints each node.
//   tick NODES [COUNT]           COUNT (default 1) ticks on each node; prints each node's state.
//   campaign NODE [kind=preVote|election|transfer]
//       What an election timeout does (kind=preVote: a pre-vote round first when configured),
//       or a real election at once, or the election a TimeoutNow starts.
//   propose NODE DATA...         One proposal, or a batch when several. DATA is a word, "" (empty),
//                                or bytes=K (K bytes of 'x'). Prints the index and term, or the error.
//   process-ready NODES [hold]   Takes and prints each node's Ready and does it all as a driver
//                                would. With hold, only `messages` leave; the write, the
//                                `messagesAfterPersist`, applying and advance wait for `persist`.
//   persist NODES                Finishes a held Ready.
//   deliver-msgs [from=NODES] [to=NODES] [type=App,AppResp,...] [drop=NODES]
//       Delivers the queued messages that match, oldest first (those over a cut link are dropped
//       instead). First, every queued message to a node in drop= is dropped, whatever the other
//       filters say. Prints each message.
//   drop-msgs [from=NODES] [to=NODES] [type=...]   Discards matching queued messages.
//   msgs                         Prints the queued messages (`lost:` when sent over a cut link).
//   stabilize [NODES]            Ready, deliver, repeat, until quiet; prints everything.
//   partition NODES NODES...     Cuts every link between the groups (and heals links within them).
//   isolate NODE                 Cuts NODE from everyone.
//   heal                         Restores every link.
//   transfer-leadership FROM TO  Asks FROM to move leadership to TO.
//   read-index NODE CTX          Asks NODE for a read index; the answer is a ReadState later.
//   restart NODE                 A crash: the node starts again from its durable log and hard state.
//   status NODE                  The node's RaftStatus; a leader's peers one per line.
//   raft-log NODE                The node's durable log, one entry per line, and its commit index.
//
// A Ready prints one field per line, only the fields that are set:
//   Ready mustSync=B / SoftState / HardState / TruncateAfter / Entries / Committed / Messages: /
//   MessagesAfterPersist: / ReadStates, using the one-line `description`s of RaftCore's types.

struct TranscriptError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

extension TranscriptCluster {
    /// Runs one command line and returns its output lines.
    func run(_ line: String) throws(TranscriptError) -> [String] {
        var words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard !words.isEmpty else { throw TranscriptError("empty command") }
        let name = words.removeFirst()
        var positional: [String] = []
        var options: [String: String] = [:]
        for w in words {
            if let eq = w.firstIndex(of: "="), !w.hasPrefix("\"") {
                options[String(w[..<eq])] = String(w[w.index(after: eq)...])
            } else {
                positional.append(w)
            }
        }
        var args = Arguments(command: name, positional: positional, options: options, cluster: self)
        let out = try args.dispatch()
        try args.checkAllUsed()
        return out.isEmpty ? ["ok"] : out
    }
}

private struct Arguments {
    let command: String
    var positional: [String]
    var options: [String: String]
    let cluster: TranscriptCluster

    mutating func dispatch() throws(TranscriptError) -> [String] {
        let c = cluster
        switch command {
        case "add-nodes":
            guard let n = Int(try next("N")), n > 0 else { throw TranscriptError("add-nodes: N must be a positive number") }
            var settings: [(inout RaftConfig) -> Void] = []
            if let v = try bool("preVote") { settings.append { $0.preVote = v } }
            if let v = try bool("checkQuorum") { settings.append { $0.checkQuorum = v } }
            if let v = try int("electionTicks") { settings.append { $0.electionTimeoutTicks = v } }
            if let v = try int("heartbeatTicks") { settings.append { $0.heartbeatTicks = v } }
            if let v = option("preferredLeader") { let p = try nodeName(v); settings.append { $0.preferredLeader = p } }
            if let v = try int("maxPendingProposals") { settings.append { $0.maxPendingProposals = v } }
            if let v = try int("maxEntryBytes") { settings.append { $0.maxEntryBytes = v } }
            if let v = try int("maxUncommittedBytes") { settings.append { $0.maxUncommittedBytes = v } }
            if let v = try int("maxInflightAppends") { settings.append { $0.maxInflightAppends = v } }
            if let v = try int("maxEntriesPerAppend") { settings.append { $0.maxEntriesPerAppend = v } }
            if let v = try int("maxPendingReads") { settings.append { $0.maxPendingReads = v } }
            if let v = try int("seed") { settings.append { $0.randomSeed = UInt64(v) } }
            if let v = option("broken") {
                var rules: Set<BrokenRule> = []
                for name in v.split(separator: ",") {
                    guard let r = BrokenRule(rawValue: String(name)) else { throw TranscriptError("unknown broken rule \(name)") }
                    rules.insert(r)
                }
                settings.append { $0.brokenRules = rules }
            }
            c.addNodes(n) { config in for s in settings { s(&config) } }
            return c.ids.map { id in
                let k = c.member(id).config
                var line = "\(id) voters=\(k.voters.map(\.description).joined(separator: ",")) preVote=\(k.preVote)"
                    + " checkQuorum=\(k.checkQuorum) electionTicks=\(k.electionTimeoutTicks) heartbeatTicks=\(k.heartbeatTicks)"
                if let p = k.preferredLeader { line += " preferredLeader=\(p)" }
                if !k.brokenRules.isEmpty { line += " broken=" + k.brokenRules.map(\.rawValue).sorted().joined(separator: ",") }
                return line
            }

        case "tick":
            let nodes = try nodeList(next("NODES"))
            let count = positional.isEmpty ? 1 : (Int(try next("COUNT")) ?? -1)
            guard count > 0 else { throw TranscriptError("tick: COUNT must be a positive number") }
            for _ in 0..<count { for id in nodes { c[id].tick() } }
            return nodes.map { state($0) }

        case "campaign":
            let id = try node(next("NODE"))
            let kind: RaftNode<MemoryLog>.CampaignKind
            switch option("kind") ?? "preVote" {
            case "preVote": kind = .preVote
            case "election": kind = .election
            case "transfer": kind = .leadershipTransfer
            case let k: throw TranscriptError("campaign: unknown kind \(k)")
            }
            c[id].campaign(kind)
            return [state(id)]

        case "propose":
            let id = try node(next("NODE"))
            var batch: [[UInt8]] = []
            while !positional.isEmpty { batch.append(try data(positional.removeFirst())) }
            if let k = try int("bytes") { batch.append(Array(repeating: UInt8(ascii: "x"), count: k)) }
            guard !batch.isEmpty else { throw TranscriptError("propose: no DATA") }
            do {
                if batch.count == 1 {
                    let (index, term) = try c[id].propose(batch[0])
                    return ["\(id) proposed index=\(index) term=\(term)"]
                }
                let range = try c[id].propose(batch: batch)
                return ["\(id) proposed index=\(range.lowerBound)...\(range.upperBound) term=\(c[id].term)"]
            } catch {
                return ["\(id) refused: \(describe(error)) (\(error))"]
            }

        case "process-ready":
            let nodes = try nodeList(next("NODES"))
            let hold = positional.first == "hold"
            if hold { positional.removeFirst() }
            var out: [String] = []
            for id in nodes {
                if c.member(id).held != nil { throw TranscriptError("process-ready: \(id) holds an unwritten Ready") }
                guard c.hasReady(id) else { out.append("> \(id) has no Ready"); continue }
                out.append("> \(id) handling Ready" + (hold ? " (write held)" : ""))
                out += describeReady(c.processReady(id, hold: hold)).map { "  " + $0 }
            }
            return out

        case "persist":
            let nodes = try nodeList(next("NODES"))
            var out: [String] = []
            for id in nodes {
                guard let r = c.persist(id) else { out.append("> \(id) holds no Ready"); continue }
                out.append("> \(id) wrote its Ready: \(r.entries.count) entries"
                           + (r.hardState.map { ", HardState \($0)" } ?? "")
                           + "; sending \(r.messagesAfterPersist.count) messages after persist")
            }
            return out

        case "deliver-msgs", "drop-msgs":
            let filter = try messageFilter()
            let dropTo = try option("drop").map { v throws(TranscriptError) in Set(try nodeList(v)) } ?? []
            var out: [String] = []
            if command == "drop-msgs" {
                for d in c.deliver(drop: true, where: filter) { out += describe(d) }
            } else {
                // Dropping first keeps the others in their original order.
                for d in c.deliver(drop: true, where: { dropTo.contains($0.to) }) { out += describe(d) }
                for d in c.deliver(where: filter) { out += describe(d) }
            }
            return out.isEmpty ? ["no messages"] : out

        case "msgs":
            return c.queue.isEmpty ? ["no messages"] : c.queue.map { ($0.lost ? "lost: " : "") + $0.message.description }

        case "stabilize":
            let nodes = positional.isEmpty ? nil : try nodeList(next("NODES"))
            var out: [String] = []
            for e in c.stabilize(nodes) {
                switch e {
                case .ready(let id, let r):
                    out.append("> \(id) handling Ready")
                    out += describeReady(r).map { "  " + $0 }
                case .received(let id, let ds):
                    out.append("> \(id) receiving messages")
                    for d in ds { out += describe(d).map { "  " + $0 } }
                }
            }
            return out.isEmpty ? ["quiet"] : out

        case "partition":
            var groups: [[NodeID]] = []
            while !positional.isEmpty { groups.append(try nodeList(positional.removeFirst())) }
            guard groups.count >= 2 else { throw TranscriptError("partition: needs at least two groups") }
            c.partition(groups)
            return ["cut " + groups.map { $0.map(\.description).joined(separator: ",") }.joined(separator: " | ")]

        case "isolate":
            let id = try node(next("NODE"))
            c.isolate(id)
            return ["\(id) cut from everyone"]

        case "heal":
            c.heal()
            return ["every link restored"]

        case "transfer-leadership":
            let from = try node(next("FROM"))
            let to = try node(next("TO"))
            do {
                try c[from].transferLeadership(to: to)
                return ["\(from) transferring leadership to \(to)"]
            } catch {
                return ["\(from) refused: \(describe(error)) (\(error))"]
            }

        case "read-index":
            let id = try node(next("NODE"))
            let ctx = try next("CTX")
            do {
                try c[id].readIndex(context: Array(ctx.utf8))
                return ["\(id) read-index ctx=\(ctx) requested"]
            } catch {
                return ["\(id) refused: \(describe(error)) (\(error))"]
            }

        case "restart":
            let id = try node(next("NODE"))
            c.restart(id)
            return ["\(id) restarted from HardState \(c.member(id).persistedHardState) and \(c.member(id).log.lastIndex) durable entries",
                    state(id)]

        case "status":
            let id = try node(next("NODE"))
            let s = c[id].status
            var out = ["\(s.id) role=\(s.role) term=\(s.term) vote=\(s.vote.map(\.description) ?? "none")"
                       + " leader=\(s.leader.map(\.description) ?? "none") commit=\(s.commit) applied=\(s.applied)"
                       + " last=\(s.lastTerm)/\(s.lastIndex) persisted=\(s.persistedIndex)"
                       + (s.leadershipTransferee.map { " transferee=\($0)" } ?? "")]
            for p in s.peers {
                out.append("  \(p.id) match=\(p.match) next=\(p.next) \(p.state) inflight=\(p.inflightAppends)"
                           + (p.recentActive ? " active" : " inactive"))
            }
            return out

        case "raft-log":
            let id = try node(next("NODE"))
            let m = c.member(id)
            var out = m.log.stored.map(\.description)
            if out.isEmpty { out = ["empty log"] }
            out.append("commit=\(m.node.commitIndex) applied=\(m.node.appliedIndex)")
            return out

        default:
            throw TranscriptError("unknown command \(command)")
        }
    }

    // MARK: Argument parsing

    mutating func next(_ what: String) throws(TranscriptError) -> String {
        guard !positional.isEmpty else { throw TranscriptError("\(command): missing \(what)") }
        return positional.removeFirst()
    }

    mutating func option(_ key: String) -> String? { options.removeValue(forKey: key) }

    mutating func int(_ key: String) throws(TranscriptError) -> Int? {
        guard let v = option(key) else { return nil }
        guard let n = Int(v) else { throw TranscriptError("\(command): \(key)=\(v) is not a number") }
        return n
    }

    mutating func bool(_ key: String) throws(TranscriptError) -> Bool? {
        guard let v = option(key) else { return nil }
        guard let b = Bool(v) else { throw TranscriptError("\(command): \(key)=\(v) is not true or false") }
        return b
    }

    func checkAllUsed() throws(TranscriptError) {
        if !positional.isEmpty { throw TranscriptError("\(command): unexpected arguments \(positional)") }
        if !options.isEmpty { throw TranscriptError("\(command): unknown options \(options.keys.sorted())") }
    }

    func node(_ word: String) throws(TranscriptError) -> NodeID {
        let id = try nodeName(word)
        guard cluster.members[id] != nil else { throw TranscriptError("no node \(word)") }
        return id
    }

    func nodeName(_ word: String) throws(TranscriptError) -> NodeID {
        let digits = word.hasPrefix("n") ? String(word.dropFirst()) : word
        guard let n = UInt64(digits) else { throw TranscriptError("\(word) is not a node name") }
        return NodeID(n)
    }

    func nodeList(_ word: String) throws(TranscriptError) -> [NodeID] {
        if word == "all" { return cluster.ids }
        var out: [NodeID] = []
        for w in word.split(separator: ",") { out.append(try node(String(w))) }
        return out
    }

    func data(_ word: String) throws(TranscriptError) -> [UInt8] {
        if word.hasPrefix("\"") {
            guard word.count >= 2, word.hasSuffix("\"") else { throw TranscriptError("\(command): unterminated \(word)") }
            return Array(word.dropFirst().dropLast().utf8)
        }
        return Array(word.utf8)
    }

    mutating func messageFilter() throws(TranscriptError) -> (Message) -> Bool {
        let from = try option("from").map { v throws(TranscriptError) in Set(try nodeList(v)) }
        let to = try option("to").map { v throws(TranscriptError) in Set(try nodeList(v)) }
        let types = option("type").map { Set($0.split(separator: ",").map(String.init)) }
        return { m in
            (from?.contains(m.from) ?? true) && (to?.contains(m.to) ?? true)
                && (types?.contains(messageType(m)) ?? true)
        }
    }

    // MARK: Printing

    func state(_ id: NodeID) -> String {
        let n = cluster[id]
        return "\(id) role=\(n.role) term=\(n.term) vote=\(n.vote.map(\.description) ?? "none")"
            + " leader=\(n.leader.map(\.description) ?? "none") last=\(n.lastTerm)/\(n.lastIndex) commit=\(n.commitIndex)"
    }

    func describe(_ d: TranscriptCluster.Delivery) -> [String] {
        switch d {
        case .delivered(let m): return [m.description]
        case .dropped(let m): return ["dropped: \(m)"]
        }
    }

    /// The error's case name, so a transcript names the typed error as well as its message.
    func describe(_ error: RaftError) -> String {
        switch error {
        case .notLeader: return "notLeader"
        case .leadershipTransferInProgress: return "leadershipTransferInProgress"
        case .emptyProposal: return "emptyProposal"
        case .proposalTooLarge: return "proposalTooLarge"
        case .tooManyUncommittedBytes: return "tooManyUncommittedBytes"
        case .tooManyPendingProposals: return "tooManyPendingProposals"
        case .tooManyPendingReads: return "tooManyPendingReads"
        case .unknownNode: return "unknownNode"
        }
    }
}

/// The first word of a message body's description: App, AppResp, Vote, PreVoteResp, ...
func messageType(_ m: Message) -> String {
    String(m.body.description.prefix { $0 != " " })
}

/// A Ready, one field per line, only the fields that are set.
func describeReady(_ r: Ready) -> [String] {
    var out = ["Ready mustSync=\(r.mustSync)"]
    if let s = r.softState { out.append("SoftState \(s)") }
    if let h = r.hardState { out.append("HardState \(h)") }
    if let t = r.truncateAfter { out.append("TruncateAfter \(t)") }
    if !r.entries.isEmpty { out.append("Entries [\(r.entries.map(\.description).joined(separator: ", "))]") }
    if !r.committedEntries.isEmpty { out.append("Committed [\(r.committedEntries.map(\.description).joined(separator: ", "))]") }
    if !r.messages.isEmpty {
        out.append("Messages:")
        out += r.messages.map { "  \($0)" }
    }
    if !r.messagesAfterPersist.isEmpty {
        out.append("MessagesAfterPersist:")
        out += r.messagesAfterPersist.map { "  \($0)" }
    }
    if !r.readStates.isEmpty { out.append("ReadStates [\(r.readStates.map(\.description).joined(separator: ", "))]") }
    return out
}
