"""Elections: vote and pre-vote requests, leader stickiness, TimeoutNow (Raft §3.4,
§9.6, §3.10). A candidate's own campaign starts in ``RaftNode._become_candidate``."""

from __future__ import annotations

from raftpy.messages import Message, RequestVote, RequestVoteResponse, TimeoutNow
from raftpy.nodestate import NodeState
from raftpy.ready import Role


class ElectionMixin(NodeState):
    """How a node votes, campaigns and answers TimeoutNow."""

    def _refuses_vote_for_leader_stickiness(self, msg: RequestVote) -> bool:
        """Leader stickiness (Raft §9.6): while a node believes a leader is alive it
        refuses votes, so a partitioned server cannot depose a working leader. A real
        vote flagged ``disrupt_leader`` passes: the leader itself asked for it."""
        if msg.disrupt_leader and not msg.pre_vote:
            return False
        if self.config.lease_reads and \
                self._now - self._started_at < self.config.election_timeout_min:
            # A restarted node forgot when it last heard from the leader, and a lease
            # counts on it refusing votes that long after: refuse for that long.
            return True
        if self.role is Role.LEADER:
            # The leader asked this node to take over; grant it the (pre-)vote.
            return not (self._transfer is not None and self._transfer.target == msg.src)
        transfer = self._transfer
        if transfer is not None and self.role is Role.FOLLOWER and msg.src != transfer.target:
            # This node led until a moment ago and handed over: its target campaigns
            # on its word. A third node's higher term would end that election (fuzz
            # seed 5579: a removed member's vote request, late, reached the old
            # leader between its step-down and the target's first AppendEntries;
            # it took the term and then deposed the new leader). As on the target.
            return self._now - transfer.deposed_at < self.config.election_timeout_min
        if self.role is Role.CANDIDATE and self.disrupt_leader:
            # A transfer's target campaigns on the leader's word, which it heard a
            # moment ago: a third node asking for a higher term now is as disruptive
            # as it would be to a follower (a stale spare that missed its demotion,
            # fuzz seed 5345), and bumping the term would kill the transfer's
            # election. Its own election timeout ends this (a plain campaign then).
            return self._now - self._last_leader_contact < self.config.election_timeout_min
        return self._heard_from_leader_recently()

    def _heard_from_leader_recently(self) -> bool:
        return (
            self.leader_id is not None
            and self._now - self._last_leader_contact < self.config.election_timeout_min
        )

    # ------------------------------------------------------------------ votes

    def _handle_request_vote(self, msg: RequestVote) -> None:
        up_to_date = (msg.last_log_term, msg.last_log_index) >= (
            self.log.last_term, self.log.last_index)
        if msg.pre_vote:
            # Nothing is persisted and no timer is reset for a pre-vote.
            can_vote = msg.term > self.current_term or (
                self.voted_for in (None, msg.src) and self.leader_id is None)
            # Whatever this node's own configuration says: it may not know yet that
            # it was made a voter (Raft §4.1).
            granted = up_to_date and can_vote
            if granted and self._concurrent_pre_candidate_yields_not(msg):
                granted = False
                if self._votes.get(msg.src) is False:
                    # It refused us this round, yet asks now: it still heard the
                    # leader then and has lost it since (a crash noticed a moment
                    # later: raftpy.failover). Ask it again, or both would wait out
                    # their election timeouts; it yields to the lower id.
                    del self._votes[msg.src]
                    self._send(RequestVote(
                        term=msg.term, src=self.id, dst=msg.src,
                        last_log_index=self.log.last_index, last_log_term=self.log.last_term,
                        pre_vote=True))
            self._log_trace(f"{'grant' if granted else 'reject'} pre-vote to {msg.src}"
                            f" for term {msg.term}")
            if granted and self._yields_to_concurrent_pre_candidate(msg):
                self._log_trace(f"yield to concurrent pre-candidate {msg.src}")
                self._become_follower(self.current_term, None)
            self._send(RequestVoteResponse(
                term=msg.term if granted else self.current_term, src=self.id, dst=msg.src,
                vote_granted=granted, pre_vote=True))
            return
        can_vote = self.voted_for == msg.src or (
            self.voted_for is None and self.leader_id is None)
        granted = up_to_date and can_vote
        if self._candidacy is not None and not granted:
            # A competing candidate of our own term: it voted for itself (Raft §3.4).
            self._candidacy.contested = True
            self._back_off_split_vote()
        if granted:
            self.voted_for = msg.src
            self._hard_state_dirty = True
            self._reset_election_timer()
        self._log_trace(f"{'grant' if granted else 'reject'} vote to {msg.src} in term "
                        f"{self.current_term}")
        self._send(RequestVoteResponse(
            term=self.current_term, src=self.id, dst=msg.src, vote_granted=granted))

    def _concurrent_pre_candidate_yields_not(self, msg: RequestVote) -> bool:
        """Two pre-candidates whose timers fired within a round trip would grant each
        other's pre-vote and then split the real vote; with three voters and one
        down, nobody can win that term. Among such concurrent pre-candidates with
        equal logs the lower id goes first: the higher one is refused here and
        grants the lower one's request. (Pre-votes never affect safety, only who
        tries first.)

        The rule holds for one round trip after this node's pre-vote round began,
        no longer. A pre-candidate that cannot win (it cannot reach a majority)
        stays one for a whole election timeout after each failed round; refusing a
        higher id all that time let such a node keep a connected majority from
        electing anyone for minutes (5 voters, 2 down, 1 and 3 cut apart)."""
        if not (self.role is Role.CANDIDATE and self.in_pre_vote and self.id < msg.src
                and msg.term == self.current_term + 1):
            return False
        if (msg.last_log_term, msg.last_log_index) != (self.log.last_term, self.log.last_index):
            return False
        if self._votes.get(msg.src) is False:
            return True  # it refused us this round: refused, and asked again (below)
        return self._within_concurrency_window()

    def _within_concurrency_window(self, at_least: float = 0.0) -> bool:
        """Whether this pre-vote round began at most one round trip (and at most
        ``at_least``) ago: only then is another pre-candidate concurrent with it."""
        window = (self._vote_round_trip if self._vote_round_trip is not None
                  else self.config.election_timeout_min / 10)
        return self._now - self._round_started_at <= max(window, at_least)

    def _yields_to_concurrent_pre_candidate(self, msg: RequestVote) -> bool:
        """The other side of the rule above: a pre-candidate that grants a concurrent
        pre-candidate with the same log and a lower id gives up its own round (it
        becomes a follower again and waits out a fresh election timeout). With five
        voters, three or four pre-candidates at once (every follower noticing a
        crashed leader within milliseconds: raftpy.failover) otherwise let two of
        them win their pre-votes and split the real vote. Liveness only.

        Like the refusal, it holds for a short window only (a round trip, and at
        least a tenth of the minimum election timeout, which covers followers
        noticing one crash a few milliseconds apart): a round that began earlier is
        not concurrent, and yielding then to a lower id that cannot win (it reaches
        no majority) would hold up the voters that can."""
        return (self.role is Role.CANDIDATE and self.in_pre_vote and msg.src < self.id
                and msg.term == self.current_term + 1
                and (msg.last_log_term, msg.last_log_index)
                == (self.log.last_term, self.log.last_index)
                and self._within_concurrency_window(self.config.election_timeout_min / 10))

    def _back_off_split_vote(self) -> None:
        """Retry a contested round early, but only once its votes have come back.

        Raft (§3.4) has a candidate wait out its randomized election timeout. A
        competitor of the same term makes a split vote likely, and whoever retries
        first usually wins the next term, so once per round, when a majority has
        answered without electing us, the timer is shortened to a random point in
        [2 round trips, election_timeout_min / 2). The round trip is this round's,
        measured until a majority answered: a competitor that won needed as long
        for its votes and then sends AppendEntries at once, so it is heard from
        before we retry. The upper end keeps the retry clear of the timers that the
        voters of this round reset. A network too slow for the window (Raft wants
        broadcast time well under the election timeout) keeps the full timeout.
        Liveness only: no term or vote changes here."""
        candidacy = self._candidacy
        if (candidacy is None or not candidacy.contested or candidacy.round_trip is None
                or candidacy.retry_armed):
            return
        candidacy.retry_armed = True
        earliest = 2 * candidacy.round_trip
        latest = self.config.election_timeout_min / 2
        if earliest < latest:
            retry = self._now + self._rng.uniform(earliest, latest)
            self._election_deadline = min(self._election_deadline, retry)

    def _step_candidate(self, msg: Message) -> None:
        if not isinstance(msg, RequestVoteResponse) or msg.src not in self.voters:
            return
        if msg.pre_vote != self.in_pre_vote:
            return  # an answer from the other phase
        if msg.pre_vote and msg.vote_granted and msg.term != self.current_term + 1:
            return  # a grant from an earlier pre-vote round
        self._votes[msg.src] = msg.vote_granted
        if not self._round_answered:
            # The first answer of a round times one round trip (both fsyncs included
            # for a real vote): the window of the concurrent pre-candidate rule.
            self._round_answered = True
            self._vote_round_trip = self._now - self._round_started_at
        self._time_vote_round_trip()
        self._tally_votes()

    def _time_vote_round_trip(self) -> None:
        """Record when a majority of voters (this node included) has answered."""
        candidacy = self._candidacy
        answered = sum(1 for voter in self._votes if voter != self.id) + 1
        if candidacy is not None and candidacy.round_trip is None and answered >= self.quorum:
            candidacy.round_trip = self._now - candidacy.started_at

    def _tally_votes(self) -> None:
        granted = sum(self._votes.values())
        if granted >= self.quorum:
            if self.in_pre_vote:
                self._log_trace("pre-vote won")
                self._become_candidate(pre_vote=False, disrupt_leader=self.disrupt_leader)
            elif self._candidacy is not None and self._candidacy.vote_durable:
                self._become_leader()
            else:
                # Won, but its own vote is not durable yet: advance() tallies again.
                self._log_trace("election won, waiting for its own vote's save")
            return
        if len(self._votes) - granted >= self.quorum:
            # Lost: no retry at once. Only a contested round retries early, and not
            # before a winner's AppendEntries can arrive (_back_off_split_vote).
            self._log_trace(f"{'pre-vote' if self.in_pre_vote else 'election'} lost")
        self._back_off_split_vote()

    def _campaign(self, *, disrupt_leader: bool) -> None:
        """Start an election. A candidate created by TimeoutNow never runs pre-vote
        (Dqlite raft ac53ca3): it must bump its term at once so that the old
        leader's heartbeats are stale to it instead of demoting it."""
        if not self._may_campaign():
            self._reset_election_timer()
            return
        self._become_candidate(
            pre_vote=self.config.pre_vote and not disrupt_leader,
            disrupt_leader=disrupt_leader)

    # ------------------------------------------------------------------ timeout now

    def _handle_timeout_now(self, msg: TimeoutNow) -> None:
        if self.role is not Role.FOLLOWER or not self.is_voter or self.leader_id != msg.src:
            self._log_trace(f"ignore TimeoutNow from {msg.src}")
        elif (self.log.last_index, self.log.last_term) == (msg.last_log_index,
                                                            msg.last_log_term):
            self._log_trace(f"recv TimeoutNow from {msg.src}: campaign now, skipping pre-vote")
            self._campaign(disrupt_leader=True)
        elif self.log.last_index < msg.last_log_index:
            # The leader sends TimeoutNow right behind the last entries (transfer.py);
            # it may overtake them (another connection, a reordering network). Keep it
            # for a short while: the entries that complete the log start the election.
            # Half the transfer timeout at most: an election it starts then comes
            # before the leader gives up and fences the transfer off, not after the
            # failure was reported (where it could only depose the leader in vain).
            keep = min(self.config.election_timeout_min, self.config.transfer_deadline / 2)
            self._early_timeout_now = (msg, self._now + keep)
            self._log_trace(f"recv TimeoutNow from {msg.src} ahead of entries up to "
                            f"{msg.last_log_index}: campaign once they are here")
        else:
            self._log_trace(f"ignore TimeoutNow from {msg.src}")

    def _early_timeout_now_due(self) -> None:
        """After accepting entries: start the election a TimeoutNow asked for ahead
        of them, once the log ends where it said (same index and term; by Log Matching
        the rest agrees too), if it is still this term's leader's and fresh."""
        early = self._early_timeout_now
        if early is None:
            return
        msg, until = early
        if (msg.term != self.current_term or self.leader_id != msg.src or self._now > until
                or self.log.last_index > msg.last_log_index):
            self._early_timeout_now = None  # stale, or the log moved past it
            return
        if (self.log.last_index, self.log.last_term) == (msg.last_log_index,
                                                          msg.last_log_term):
            self._early_timeout_now = None
            self._handle_timeout_now(msg)
