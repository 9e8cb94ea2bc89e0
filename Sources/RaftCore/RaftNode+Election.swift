extension RaftNode {
    // MARK: Transitions (STYLE 8: becomeX; an impossible one is a precondition)

    func becomeFollower(term newTerm: Term, leader newLeader: NodeID?, reason: RoleChangeReason) {
        if role == .leader { elections.stepDowns += 1 }
        roleReason = reason
        reset(term: newTerm)
        roleState = .follower
        leader = newLeader
    }

    func becomePreCandidate(reason: RoleChangeReason) {
        precondition(role != .leader, "invalid transition leader -> preCandidate")
        roleReason = reason
        elections.preVotesStarted += 1
        // A pre-vote round changes neither term nor vote (thesis §9.6).
        roleState = .preCandidate(votes: [:])
        leader = nil
    }

    func becomeCandidate(reason: RoleChangeReason) {
        precondition(role != .leader, "invalid transition leader -> candidate")
        roleReason = reason
        elections.electionsStarted += 1
        reset(term: term.next)
        vote = id
        roleState = .candidate(votes: [:])
    }

    func becomeLeader() {
        precondition(role == .candidate, "invalid transition \(role) -> leader")
        roleReason = .electionWon
        elections.electionsWon += 1
        reset(term: term)
        leader = id
        let next = log.lastIndex.next
        var progress: [NodeID: Progress] = [:]
        for v in config.voters {
            progress[v] = Progress(next: next, maxCount: config.maxInflightAppends, maxBytes: config.maxInflightBytes)
        }
        progress[id]!.match = log.syncedLastIndex
        progress[id]!.becomeReplicate()
        progress[id]!.recentActive = true
        var state = LeaderState(progress: progress)
        // Entries of earlier terms still in the leader's log are not counted as proposals.
        state.uncommitted = UncommittedProposals()
        roleState = .leader(state)
        // Raft §8 / thesis §6.4: an empty entry of the new term commits everything before it.
        appendAsLeader([[]])
        broadcastAppend()
    }

    private func reset(term newTerm: Term) {
        if newTerm != term {
            precondition(newTerm > term, "the term would go back from \(term) to \(newTerm)")
            term = newTerm
            vote = nil
        }
        leader = nil
        electionElapsed = 0
        heartbeatElapsed = 0
        earlyCampaign = false
        randomizedElectionTimeout = config.electionTimeoutTicks + random.below(config.electionTimeoutRangeTicks)
    }

    // MARK: Elections

    func tickElection() {
        electionElapsed += 1
        if electionElapsed >= randomizedElectionTimeout {
            electionElapsed = 0
            let reason: RoleChangeReason = earlyCampaign ? earlyCampaignReason : .electionTimeout
            if earlyCampaign {
                // The early turn is taken; should this round fail, the next waits a full timeout.
                earlyCampaign = false
                randomizedElectionTimeout = config.electionTimeoutTicks + random.below(config.electionTimeoutRangeTicks)
            }
            campaign(.preVote, reason: reason)
        }
    }

    enum CampaignKind {
        /// A pre-vote round first (thesis §9.6); the real election follows if it wins.
        case preVote
        /// A real election: a new term, our vote for ourselves.
        case election
        /// A real election on a leader's TimeoutNow: votes pass followers' leader leases.
        case leadershipTransfer
    }

    /// Starts a campaign; an election timeout starts with a pre-vote round when configured.
    func campaign(_ kind: CampaignKind, reason: RoleChangeReason = .electionTimeout) {
        if case .leader = roleState { return }
        switch kind {
        case .preVote where config.preVote:
            becomePreCandidate(reason: reason)
            requestVotes(pre: true, leadershipTransfer: false)
        case .preVote, .election:
            becomeCandidate(reason: reason)
            requestVotes(pre: false, leadershipTransfer: false)
        case .leadershipTransfer:
            becomeCandidate(reason: .leadershipTransfer)
            requestVotes(pre: false, leadershipTransfer: true)
        }
    }

    private func requestVotes(pre: Bool, leadershipTransfer: Bool) {
        let campaignTerm = pre ? term.next : term
        if recordVote(from: id, granted: true) { return }
        let lastIndex = log.lastIndex, lastTerm = log.lastTerm
        for v in config.voters where v != id {
            let body: Message.Body = pre
                ? .preVote(lastIndex: lastIndex, lastTerm: lastTerm)
                : .vote(lastIndex: lastIndex, lastTerm: lastTerm, leadershipTransfer: leadershipTransfer)
            send(Message(from: id, to: v, term: campaignTerm, body: body))
        }
    }

    /// Counts a vote; wins or loses the round when the count decides it. Returns true when decided.
    @discardableResult
    func recordVote(from voter: NodeID, granted: Bool) -> Bool {
        var votes: [NodeID: Bool]
        let pre: Bool
        switch roleState {
        case .preCandidate(let v): votes = v; pre = true
        case .candidate(let v): votes = v; pre = false
        default: preconditionFailure("recordVote as \(role)")
        }
        if votes[voter] == nil { votes[voter] = granted }
        roleState = pre ? .preCandidate(votes: votes) : .candidate(votes: votes)
        let yes = votes.values.filter { $0 }.count
        let no = votes.count - yes
        if yes >= quorum {
            if pre { campaign(.election, reason: .preVoteWon) } else { becomeLeader() }
            return true
        }
        if no > config.voters.count - quorum {
            becomeFollower(term: term, leader: nil, reason: .electionLost)
            return true
        }
        return false
    }

    /// A vote or pre-vote request at `m.term` (>= our term here).
    func handleVoteRequest(_ m: Message, lastIndex: LogIndex, lastTerm: Term, pre: Bool) {
        // We may vote for the same candidate again (its request was duplicated), for anyone when we
        // have neither voted nor followed a leader in this term, and in a pre-vote for any later term.
        let canVote = vote == m.from || (vote == nil && leader == nil) || (pre && m.term > term)
        let upToDate = log.isUpToDate(lastIndex: lastIndex, lastTerm: lastTerm)
            || config.brokenRules.contains(.voteForStaleLog)
        if canVote && upToDate {
            send(Message(from: id, to: m.from, term: m.term, body: pre ? .preVoteResponse(granted: true) : .voteResponse(granted: true)))
            if !pre {
                electionElapsed = 0
                vote = m.from
            }
        } else {
            send(Message(from: id, to: m.from, term: term, body: pre ? .preVoteResponse(granted: false) : .voteResponse(granted: false)))
        }
    }
}
