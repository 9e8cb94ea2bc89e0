extension RaftNode {
    func tickLeader() {
        heartbeatElapsed += 1
        electionElapsed += 1
        if electionElapsed >= config.electionTimeoutTicks {
            electionElapsed = 0
            if config.checkQuorum && !quorumRecentlyActive() {
                // Thesis §6.2: a leader that cannot reach a quorum steps down, so clients go elsewhere.
                becomeFollower(term: term, leader: nil, reason: .quorumLost)
                return
            }
            withLeader { l in
                for v in config.voters where v != id { l.progress[v]!.recentActive = false }
                if l.transferee != nil {
                    // The transfer did not finish within an election timeout: give up, take
                    // proposals again, and let the preferred-leader check wait before retrying.
                    l.transferee = nil
                    l.preferredLeaderBackoffTicks = 4 * config.electionTimeoutTicks
                }
            }
        }
        if heartbeatElapsed >= config.heartbeatTicks {
            heartbeatElapsed = 0
            broadcastHeartbeat()
            maybeMoveToPreferredLeader()
        }
        sendOwedCommitUpdates()
    }

    /// A commit index went up (acknowledgements, or this node's own sync). Each follower with
    /// entries to receive gets them now, carrying the new commit, and an append to it still unsent
    /// (this Ready's) takes the new commit at no cost (`coalesceAppend`). A follower with neither is
    /// owed the update (`commitUpdateDue`): the next proposal's append carries it, or the next tick
    /// sends it. Under load, a third of all appends had been bare commit updates, each costing a
    /// follower a wake-up, a read and an answer, and the leader a write and a read; sending them at
    /// once only when everything was committed (the pipeline drained) still left half of them
    /// (docs/raft.md, "Commit updates"). A follower learns a commit at most one tick late (one whose
    /// window is full or whose probe is out gets it with the append its next answer allows, as
    /// before; DLedger's followers, a second); the leader's own commit, and so every answer to a
    /// client, is not delayed at all.
    func announceCommit() {
        for v in config.voters where v != id {
            if maybeSendAppend(to: v, sendIfEmpty: false) { continue }
            if hasUnsentAppendEndingAtNext(v) { maybeSendAppend(to: v, sendIfEmpty: true) }
        }
        withLeader { l in l.commitUpdateOwed = followerOwedCommit(l) != nil }
    }

    /// A follower a message could go to now that has not been sent the commit index yet.
    func followerOwedCommit(_ l: LeaderState) -> NodeID? {
        let committed = log.committed
        return config.voters.first { v in
            guard v != id, let pr = l.progress[v] else { return false }
            return pr.commitSent < committed && !pr.isPaused
        }
    }

    /// Sends `peer` the commit index if no message has carried it there yet: before an answer that
    /// needs the follower to know it (a read point, a leadership transfer).
    func sendCommitIfOwed(to peer: NodeID) {
        if withLeader({ l in l.progress[peer].map { $0.commitSent < log.committed } ?? false }) {
            maybeSendAppend(to: peer, sendIfEmpty: true)
        }
    }

    /// The bare commit updates `announceCommit` left for the tick: to each follower a message has not
    /// carried the commit to yet (none to one whose window is full: its next append carries it).
    private func sendOwedCommitUpdates() {
        let owed = withLeader { l in
            defer { l.commitUpdateOwed = false }
            return l.commitUpdateOwed
        }
        guard owed else { return }
        for v in config.voters where v != id { sendCommitIfOwed(to: v) }
    }

    private func quorumRecentlyActive() -> Bool {
        withLeader { l in
            config.voters.filter { $0 == id || l.progress[$0]!.recentActive }.count >= quorum
        }
    }

    /// Appends proposals (an empty one is the leader's no-op) to the leader's own log.
    func appendAsLeader(_ batch: [[UInt8]]) {
        var index = log.lastIndex
        var entries: [Entry] = []
        entries.reserveCapacity(batch.count)
        for data in batch {
            index = index.next
            entries.append(Entry(term: term, index: index, data: data))
        }
        log.append(entries)
        withLeader { l in
            for e in entries where !e.isEmpty { l.uncommitted.add(index: e.index, bytes: e.data.count) }
        }
    }

    /// Sends every follower what it is missing, or at least the commit index.
    func broadcastAppend() {
        for v in config.voters where v != id {
            maybeSendAppend(to: v, sendIfEmpty: true)
        }
    }

    func broadcastHeartbeat() {
        let context = withLeader { l in l.pendingReads.last?.context }
        broadcastHeartbeat(context: context)
    }

    func broadcastHeartbeat(context: [UInt8]?) {
        for v in config.voters where v != id {
            // Only what the follower is known to hold: a heartbeat must never make it commit an
            // entry it has not matched with us.
            let commit = withLeader { l in
                let c = min(l.progress[v]!.match, log.committed)
                l.progress[v]!.commitSent = max(l.progress[v]!.commitSent, c)
                return c
            }
            send(Message(from: id, to: v, term: term, body: .heartbeat(commit: commit, context: context)))
        }
    }

    /// Sends `to` the next entries if its window allows. Returns true when a message went out.
    @discardableResult
    func maybeSendAppend(to peer: NodeID, sendIfEmpty: Bool) -> Bool {
        withLeader { l in
            var pr = l.progress[peer]!
            defer { l.progress[peer] = pr }
            if pr.isPaused { return false }
            let prevIndex = pr.next.previous
            guard let prevTerm = log.term(at: prevIndex) else {
                // The entries this follower needs were deleted here by retention. A message log
                // needs no snapshot: the follower drops its log and continues ours from our base.
                let base = log.firstIndex.previous
                guard let baseTerm = log.term(at: base), base > prevIndex else { return false }  // base unknown: nothing to offer
                send(Message(from: id, to: peer, term: term,
                             body: .resetLog(baseIndex: base, baseTerm: baseTerm, context: log.pendingReset?.context ?? log.stable.baseContext, commit: log.committed)))
                if pr.state == .replicate { pr.becomeProbe() }
                pr.next = base.next
                pr.probeSent = true
                return true
            }
            var entries: [Entry] = []
            if pr.next <= log.lastIndex {
                entries = log.entries(from: pr.next, maxCount: config.maxEntriesPerAppend, maxBytes: config.maxAppendBytes)
            }
            if entries.isEmpty && !sendIfEmpty { return false }
            let bytes = entries.reduce(0) { $0 + $1.data.count }
            send(Message(from: id, to: peer, term: term,
                         body: .append(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: log.committed)))
            pr.sentEntries(through: entries.last?.index, bytes: bytes)
            pr.commitSent = max(pr.commitSent, log.committed)
            return true
        }
    }

    func handleAppendResponse(from peer: NodeID, _ result: Message.AppendResult) {
        switch result {
        case .rejected(let rejectedIndex, let hintIndex, let hintTerm):
            // Skip the follower's whole conflicting term at once: our last index at or below its hint
            // whose term is at most the hint's term.
            var next = hintIndex
            if hintTerm > .zero {
                next = log.findConflictByTerm(index: hintIndex, term: hintTerm).index
            }
            let retry = withLeader { l in
                l.progress[peer]!.recentActive = true
                guard l.progress[peer]!.maybeDecrease(rejected: rejectedIndex, hint: next) else { return false }
                if l.progress[peer]!.state == .replicate { l.progress[peer]!.becomeProbe() }
                return true
            }
            if retry { maybeSendAppend(to: peer, sendIfEmpty: true) }

        case .accepted(let matchIndex):
            guard matchIndex <= log.lastIndex else { return }  // a malformed answer
            let (updated, wasPaused) = withLeader { l in
                var pr = l.progress[peer]!
                defer { l.progress[peer] = pr }
                pr.recentActive = true
                let wasPaused = pr.isPaused
                guard pr.maybeUpdate(matchIndex) else { return (false, wasPaused) }
                switch pr.state {
                case .probe: pr.becomeReplicate()
                case .replicate: pr.inflights.free(through: matchIndex)
                }
                return (true, wasPaused)
            }
            guard updated else { return }
            if maybeCommit() {
                announceCommit()
            } else if wasPaused {
                maybeSendAppend(to: peer, sendIfEmpty: true)
            }
            // Fill the window: a follower far behind streams up to its inflight limits, alone.
            var rounds = 0
            while rounds < config.maxInflightAppends, maybeSendAppend(to: peer, sendIfEmpty: false) { rounds += 1 }
            let (transferee, match) = withLeader { l in (l.transferee, l.progress[peer]!.match) }
            if transferee == peer && match == log.lastIndex {
                // The target campaigns at once: it should know what is committed (it applies it
                // sooner, and a follower that knows the commit serves what it has applied).
                sendCommitIfOwed(to: peer)
                send(Message(from: id, to: peer, term: term, body: .timeoutNow))
            }
        }
    }

    func handleHeartbeatResponse(from peer: NodeID, context: [UInt8]?) {
        let needsAppend = withLeader { l in
            var pr = l.progress[peer]!
            defer { l.progress[peer] = pr }
            pr.recentActive = true
            pr.probeSent = false
            if pr.state == .replicate && pr.inflights.isFull { pr.inflights.freeFirst() }
            return pr.match < log.lastIndex
        }
        if needsAppend { maybeSendAppend(to: peer, sendIfEmpty: true) }
        if let context { acknowledgeRead(from: peer, context: context) }
    }

    /// Advances the commit index to the highest index a quorum holds durably, if that entry is of
    /// the current term (Raft §5.4.2: never commit an old term's entry by counting replicas).
    @discardableResult
    func maybeCommit() -> Bool {
        let matches = withLeader { l in config.voters.map { l.progress[$0]!.match }.sorted(by: >) }
        let quorumIndex = matches[quorum - 1]
        guard quorumIndex > log.committed else { return false }
        if log.term(at: quorumIndex) != term && !config.brokenRules.contains(.commitOldTermByCounting) {
            return false
        }
        let firstCommitOfTerm = log.term(at: log.committed) != term
        log.commit(to: quorumIndex)
        withLeader { l in l.uncommitted.release(through: quorumIndex) }
        if firstCommitOfTerm && log.term(at: quorumIndex) == term {
            releaseReadsWaitingForCommit()
        }
        return true
    }

    // MARK: Leadership transfer and preferred leader

    func startTransfer(to target: NodeID) {
        if target == id {
            withLeader { l in l.transferee = nil }
            return
        }
        let match: LogIndex? = withLeader { l in
            if l.transferee == target { return nil }
            l.transferee = target
            return l.progress[target]!.match
        }
        guard let match else { return }
        // The transfer must finish within an election timeout (thesis §3.10).
        electionElapsed = 0
        if match == log.lastIndex {
            sendCommitIfOwed(to: target)
            send(Message(from: id, to: target, term: term, body: .timeoutNow))
        } else {
            maybeSendAppend(to: target, sendIfEmpty: true)
        }
    }

    /// Moves leadership to `preferredLeader` once that node is alive and caught up, and this leader
    /// has committed in its term (so the group is healthy).
    func maybeMoveToPreferredLeader() {
        guard let preferred = config.preferredLeader, preferred != id else { return }
        let ready = withLeader { l -> Bool in
            if l.preferredLeaderBackoffTicks > 0 {
                l.preferredLeaderBackoffTicks = max(0, l.preferredLeaderBackoffTicks - config.heartbeatTicks)
                return false
            }
            let p = l.progress[preferred]!
            return l.transferee == nil && p.recentActive && p.state == .replicate
                && log.lastIndex - p.match <= config.maxEntriesPerAppend
        }
        guard ready, log.term(at: log.committed) == term else { return }
        startTransfer(to: preferred)
    }

    // MARK: ReadIndex (thesis §6.4)

    func leaderRead(context: [UInt8], from requester: NodeID) throws(RaftError) {
        try withLeader { (l) throws(RaftError) in
            if l.pendingReads.count + l.readsWaitingForCommit.count >= config.maxPendingReads {
                throw .tooManyPendingReads(limit: config.maxPendingReads)
            }
        }
        if log.term(at: log.committed) != term {
            withLeader { l in l.readsWaitingForCommit.append((context, requester)) }
            return
        }
        startRead(context: context, from: requester)
    }

    private func startRead(context: [UInt8], from requester: NodeID) {
        if quorum == 1 {
            answerRead(index: log.committed, context: context, to: requester)
            return
        }
        let index = log.committed
        withLeader { l in l.pendingReads.append(PendingRead(index: index, context: context, from: requester, acks: [id])) }
        broadcastHeartbeat(context: context)
    }

    private func releaseReadsWaitingForCommit() {
        let waiting = withLeader { l in
            let w = l.readsWaitingForCommit
            l.readsWaitingForCommit.removeAll()
            return w
        }
        for w in waiting { startRead(context: w.context, from: w.from) }
    }

    func acknowledgeRead(from peer: NodeID, context: [UInt8]) {
        let released: [PendingRead] = withLeader { l in
            guard let k = l.pendingReads.firstIndex(where: { $0.context == context }) else { return [] }
            l.pendingReads[k].acks.insert(peer)
            guard l.pendingReads[k].acks.count >= quorum else { return [] }
            // A quorum confirmed leadership after every earlier request arrived: they are safe too.
            let done = Array(l.pendingReads[...k])
            l.pendingReads.removeFirst(k + 1)
            return done
        }
        for r in released { answerRead(index: r.index, context: r.context, to: r.from) }
    }

    private func answerRead(index: LogIndex, context: [UInt8], to requester: NodeID) {
        if requester == id {
            readStates.append(ReadState(index: index, context: context))
        } else {
            // The requester serves the read once it has applied `index`: it must not wait a tick
            // for the commit update (`announceCommit`).
            sendCommitIfOwed(to: requester)
            send(Message(from: id, to: requester, term: term, body: .readIndexResponse(index: index, context: context)))
        }
    }
}
