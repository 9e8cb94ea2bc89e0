extension RaftNode {
    /// Feeds one message from another member. Messages from non-members, to other nodes, or from
    /// older terms are dropped (an old leader is told the current term so it steps down).
    public func step(_ m: Message) {
        guard m.to == id, m.from != id, config.voters.contains(m.from) else { return }

        if m.term > term {
            switch m.body {
            case .preVote, .vote(_, _, false):
                // Leader stickiness (thesis §4.2.3): while we hear from a live leader, a vote request
                // is someone cut off who must not depose it. A transfer's vote passes.
                if config.checkQuorum, leader != nil, electionElapsed < config.electionTimeoutTicks { return }
            default:
                break
            }
            switch m.body {
            case .preVote:
                break  // a pre-vote never changes our term
            case .preVoteResponse(granted: true):
                break  // carries the term we would campaign in, not a newer term of the group
            case .append, .heartbeat, .resetLog:
                becomeFollower(term: m.term, leader: m.from, reason: .heardLeader)
            case .vote:
                // Raft Figure 2: the election timer restarts on hearing the leader or on granting a
                // vote, not on stepping down to a candidate's newer term. Otherwise a node whose log
                // is too stale to win, with a clock a little fast, restarts everyone's timer with
                // each of its elections and no one else ever campaigns (found by the simulator with
                // pre-vote off, seed 5276). A granted vote restarts the timer in handleVoteRequest.
                let elapsed = electionElapsed
                becomeFollower(term: m.term, leader: nil, reason: .newerTerm)
                electionElapsed = min(elapsed, randomizedElectionTimeout - 1)
            default:
                becomeFollower(term: m.term, leader: nil, reason: .newerTerm)
            }
        } else if m.term < term {
            switch m.body {
            case .append, .heartbeat, .resetLog:
                // An old leader, perhaps cut off while we moved on: answer with our term so it steps
                // down (without this, check-quorum plus pre-vote could leave it stranded).
                if config.checkQuorum || config.preVote {
                    send(Message(from: id, to: m.from, term: term, body: .heartbeatResponse(context: nil)))
                }
            case .preVote:
                send(Message(from: id, to: m.from, term: term, body: .preVoteResponse(granted: false)))
            default:
                break
            }
            return
        }

        switch m.body {
        case .preVote(let lastIndex, let lastTerm):
            handleVoteRequest(m, lastIndex: lastIndex, lastTerm: lastTerm, pre: true)
            return
        case .vote(let lastIndex, let lastTerm, _):
            handleVoteRequest(m, lastIndex: lastIndex, lastTerm: lastTerm, pre: false)
            return
        default:
            break
        }

        switch roleState {
        case .follower: stepFollower(m)
        case .preCandidate, .candidate: stepCandidate(m)
        case .leader: stepLeader(m)
        }
    }

    private func stepFollower(_ m: Message) {
        switch m.body {
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            heardFromLeader(m.from)
            handleAppend(from: m.from, prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit)
        case .heartbeat(let commit, let context):
            heardFromLeader(m.from)
            handleHeartbeat(from: m.from, commit: commit, context: context)
        case .timeoutNow:
            // The leader chose us: campaign now, through the others' leader leases.
            campaign(.leadershipTransfer, reason: .leadershipTransfer)
        case .readIndexResponse(let index, let context):
            readStates.append(ReadState(index: index, context: context))
        case .resetLog(let base, let baseTerm, let context, let commit):
            heardFromLeader(m.from)
            handleResetLog(from: m.from, LogReset(baseIndex: base, baseTerm: baseTerm, context: context), commit: commit)
        case .readIndex, .appendResponse, .heartbeatResponse, .preVoteResponse, .voteResponse, .preVote, .vote:
            break
        }
    }

    private func heardFromLeader(_ from: NodeID) {
        electionElapsed = 0
        if leader != from { roleReason = .heardLeader }
        leader = from
        if earlyCampaign {
            // The leader is alive after all (leaderConnectionLost was a false alarm): a full timeout again.
            earlyCampaign = false
            randomizedElectionTimeout = config.electionTimeoutTicks + random.below(config.electionTimeoutRangeTicks)
        }
    }

    private func stepCandidate(_ m: Message) {
        switch m.body {
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            // A leader of our term won; follow it.
            becomeFollower(term: term, leader: m.from, reason: .heardLeader)
            handleAppend(from: m.from, prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit)
        case .heartbeat(let commit, let context):
            becomeFollower(term: term, leader: m.from, reason: .heardLeader)
            handleHeartbeat(from: m.from, commit: commit, context: context)
        case .resetLog(let base, let baseTerm, let context, let commit):
            becomeFollower(term: term, leader: m.from, reason: .heardLeader)
            handleResetLog(from: m.from, LogReset(baseIndex: base, baseTerm: baseTerm, context: context), commit: commit)
        case .preVoteResponse(let granted):
            if case .preCandidate = roleState { recordVote(from: m.from, granted: granted) }
        case .voteResponse(let granted):
            if case .candidate = roleState { recordVote(from: m.from, granted: granted) }
        case .timeoutNow, .readIndex, .readIndexResponse, .appendResponse, .heartbeatResponse, .preVote, .vote:
            break
        }
    }

    private func stepLeader(_ m: Message) {
        switch m.body {
        case .appendResponse(let result):
            handleAppendResponse(from: m.from, result)
        case .heartbeatResponse(let context):
            handleHeartbeatResponse(from: m.from, context: context)
        case .readIndex(let context):
            // Refused reads from followers are dropped: the follower's client times out and retries.
            try? leaderRead(context: context, from: m.from)
        case .append, .heartbeat, .resetLog:
            // Another leader in our own term would break election safety; a correct peer never
            // sends this. Drop it rather than trust it.
            break
        case .timeoutNow, .readIndexResponse, .preVoteResponse, .voteResponse, .preVote, .vote:
            break
        }
    }

    // MARK: Follower side of replication

    func handleAppend(from leaderID: NodeID, prevIndex: LogIndex, prevTerm: Term, entries: [Entry], commit: LogIndex) {
        if prevIndex < log.committed {
            // Everything up to our commit index matches any leader's log (leader completeness).
            send(Message(from: id, to: leaderID, term: term, body: .appendResponse(.accepted(matchIndex: log.committed))))
            return
        }
        // At our commit index when its term is unknown (the base of a store whose base was lost):
        // committed, so it matches any leader's log.
        let committedBase = prevIndex == log.committed && log.term(at: prevIndex) == nil
        guard committedBase || log.matchTerm(prevIndex, prevTerm) else {
            let hint = log.findConflictByTerm(index: prevIndex, term: prevTerm)
            send(Message(from: id, to: leaderID, term: term,
                         body: .appendResponse(.rejected(rejectedIndex: prevIndex, hintIndex: hint.index, hintTerm: hint.term))))
            return
        }
        // Entries must be consecutive after prevIndex; anything else is a malformed message.
        for (k, e) in entries.enumerated() {
            if e.index != prevIndex + (k + 1) || e.term > term { return }
        }
        let lastNew = prevIndex + entries.count
        if let conflict = log.findConflict(entries) {
            precondition(conflict > log.committed, "entry \(conflict) conflicts with the committed prefix (commit \(log.committed))")
            let k = conflict - entries[0].index
            log.append(Array(entries[k...]))
        }
        log.commit(to: min(commit, lastNew))
        send(Message(from: id, to: leaderID, term: term, body: .appendResponse(.accepted(matchIndex: lastNew))))
    }

    /// The leader's log starts after `reset.baseIndex`, and ours ends before it (or differs there).
    func handleResetLog(from leaderID: NodeID, _ reset: LogReset, commit: LogIndex) {
        // Between ready() and advance() the log must not change under the driver: drop it; the
        // leader probes again after its next heartbeat round.
        if readyOutstanding { return }
        if reset.baseIndex <= log.committed || reset.baseIndex < log.firstIndex || log.matchTerm(reset.baseIndex, reset.baseTerm) {
            // We hold the base already: ordinary appends continue from it.
            let match = max(log.committed, log.matchTerm(reset.baseIndex, reset.baseTerm) ? reset.baseIndex : .zero)
            send(Message(from: id, to: leaderID, term: term, body: .appendResponse(.accepted(matchIndex: match))))
            return
        }
        // Everything we hold after our commit index is uncommitted (or the leader would hold it
        // too); everything up to it is committed and was deleted on the leader.
        log.reset(reset)
        log.commit(to: min(commit, log.lastIndex))
        send(Message(from: id, to: leaderID, term: term, body: .appendResponse(.accepted(matchIndex: reset.baseIndex))))
    }

    func handleHeartbeat(from leaderID: NodeID, commit: LogIndex, context: [UInt8]?) {
        // The leader sends min(our match, its commit), so this is within our log; stay defensive.
        log.commit(to: min(commit, log.lastIndex))
        send(Message(from: id, to: leaderID, term: term, body: .heartbeatResponse(context: context)))
    }
}
