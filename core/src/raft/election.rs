//! Elections: pre-vote, vote and candidacy, the election timer, and the role changes
//! (`become_*`): the only way a node changes its role, but for fail-stop.
//!
//! A node whose election timer fires first asks for pre-votes in the next term without
//! changing its own (dissertation §9.6), so a node that cannot win, cut off or behind,
//! never disturbs the flock with a higher term. Only with a majority of pre-votes does it
//! become a candidate. Votes go to the candidate whose log ranks at least as high as the
//! voter's, by log term then last index ([`crate::LogView`]; why the log term and not the
//! last entry's term: [`follower`](super::follower)). A voter loyal to a leader refuses
//! every vote ([`lease`](super::lease)). The winner appends nothing: it takes its term as
//! its log term and commits by confirmation ([`leader`](super::leader)).

use heapless::Vec;

use super::follower::PendingLogTerm;
use super::leader::{LeaderState, Progress};
use super::Cause;
use super::{push_bounded, Node, Role};
use crate::quorum::majority;
use crate::stats::bump;
use crate::storage::Storage;
use crate::time::{Duration, Instant};
use crate::types::{LogIndex, LogView, NodeId, Payload, Term};
use crate::wire::{Body, Message};

/// The answers a (pre-)candidate has collected, one list each way.
#[derive(Clone, Debug)]
pub(super) struct Votes<const M: usize> {
    granted: Vec<NodeId, M>,
    refused: Vec<NodeId, M>,
}

impl<const M: usize> Votes<M> {
    /// A campaign's first tally: this node's own vote.
    fn new(own: NodeId) -> Self {
        let mut granted = Vec::new();
        push_bounded(&mut granted, own);
        Self {
            granted,
            refused: Vec::new(),
        }
    }
}

impl<S: Storage, const M: usize, const L: usize> Node<S, M, L> {
    /// The election timer fired on a node that is not leader: campaign, if it may.
    pub(super) fn tick_election(&mut self, now: Instant) {
        self.reset_election_timer(now);
        // The timer never fires inside the loyalty window (reset_election_timer), but
        // the window is what the lease relies on: check it, not the timer.
        if self.may_campaign() && !self.in_lease(now) {
            self.because(Cause::ElectionTimeout);
            self.become_pre_candidate(now);
        }
    }

    pub(super) fn handle_vote_request(
        &mut self,
        now: Instant,
        from: NodeId,
        term: Term,
        log: LogView,
        pre: bool,
    ) {
        let up_to_date = log.is_up_to_date_with(self.log_view());
        let can_vote = self.voted_for == Some(from)
            || (self.voted_for.is_none() && self.leader.is_none())
            || (pre && term > self.term);
        let granted = up_to_date && can_vote;
        if pre {
            let term = if granted { term } else { self.term };
            self.respond_in(from, term, Body::PreVoteResponse { granted });
            return;
        }
        if granted {
            debug_assert_eq!(term, self.term);
            if self.voted_for != Some(from) {
                self.voted_for = Some(from);
                self.dirty = true;
            }
            self.reset_election_timer(now);
        }
        self.respond(from, Body::VoteResponse { granted });
    }

    pub(super) fn handle_vote_response(
        &mut self,
        now: Instant,
        from: NodeId,
        granted: bool,
        pre: bool,
    ) {
        let votes = match &mut self.role {
            Role::PreCandidate(votes) if pre => votes,
            Role::Candidate(votes) if !pre => votes,
            _ => return,
        };
        if !self.log.is_voter(from)
            || votes.granted.contains(&from)
            || votes.refused.contains(&from)
        {
            return;
        }
        let list = if granted {
            &mut votes.granted
        } else {
            &mut votes.refused
        };
        // One vote per voter, each a member: the membership stays as it is during a
        // campaign (only a leader's frames change the log, and they end the campaign first).
        push_bounded(list, from);
        self.tally(now, pre);
    }

    pub(super) fn tally(&mut self, now: Instant, pre: bool) {
        let (Role::PreCandidate(votes) | Role::Candidate(votes)) = &self.role else {
            return;
        };
        let needed = majority(self.log.voter_count());
        let granted = votes
            .granted
            .iter()
            .filter(|id| self.log.is_voter(**id))
            .count();
        let refused = votes
            .refused
            .iter()
            .filter(|id| self.log.is_voter(**id))
            .count();
        if granted >= needed {
            if pre && !self.may_campaign() {
                // Its health check failed since it asked: it does not stand.
                self.become_follower(now, self.term, None);
            } else if pre {
                self.because(Cause::PreVotesGranted);
                self.become_candidate(now, false);
            } else {
                self.because(Cause::Elected);
                self.become_leader(now);
            }
        } else if refused >= needed {
            self.because(Cause::VotesRefused);
            self.become_follower(now, self.term, None);
        }
    }

    pub(super) fn become_follower(&mut self, now: Instant, term: Term, leader: Option<NodeId>) {
        // A term never goes back: callers pass the current term or a newer one.
        assert!(term >= self.term, "term went back");
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.dirty = true;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.outbox.clear_requests();
        self.reset_election_timer(now);
    }

    pub(super) fn become_pre_candidate(&mut self, now: Instant) {
        // Only a voter of its latest membership campaigns, and never a leader.
        assert!(
            self.can_campaign() && !self.role.is_leader(),
            "bad campaign"
        );
        self.role = Role::PreCandidate(Votes::new(self.config.id));
        self.leader = None;
        self.request_votes(now, true, false);
    }

    pub(super) fn become_candidate(&mut self, now: Instant, transfer: bool) {
        assert!(
            self.can_campaign() && !self.role.is_leader(),
            "bad campaign"
        );
        self.term = Term(self.term.0 + 1);
        self.voted_for = Some(self.config.id);
        self.dirty = true;
        self.role = Role::Candidate(Votes::new(self.config.id));
        self.leader = None;
        self.reset_election_timer(now);
        self.request_votes(now, false, transfer);
    }

    pub(super) fn request_votes(&mut self, now: Instant, pre: bool, transfer: bool) {
        let log = self.log_view();
        let (term, body) = if pre {
            (Term(self.term.0 + 1), Body::PreVote { log })
        } else {
            (self.term, Body::Vote { log, transfer })
        };
        for i in 0..self.log.members().len() {
            let member = self.log.members()[i];
            if member.voter && member.id != self.config.id {
                let queued = self.outbox.push_request(
                    member.id,
                    Message {
                        term,
                        body: body.clone(),
                    },
                );
                if !queued {
                    bump(&mut self.stats.outbox_full);
                }
            }
        }
        self.tally(now, pre);
    }

    /// Where this node's log stands in elections.
    pub(super) fn log_view(&self) -> LogView {
        LogView {
            term: self.log_term,
            last: self.log.last_index(),
        }
    }

    /// Wins the election. The leader appends nothing: its log term becomes its term, and
    /// once a majority confirmed its whole log in this term, every earlier entry in it is
    /// committed and it may propose changes (the log term, in `follower`). It may be goose
    /// before that if its commit index already covers its whole log ([`lease`]).
    ///
    /// Its own log term is saved with its next heartbeat round, or any save before, not
    /// before its first Appends leave: until then it does not count itself as confirming.
    /// A leader that cannot make a majority without itself takes it at once.
    pub(super) fn become_leader(&mut self, now: Instant) {
        // Only a candidate that voted for itself in this term can have won it.
        assert!(
            matches!(self.role, Role::Candidate(_)) && self.voted_for == Some(self.config.id),
            "leader without a vote"
        );
        let last = self.log.last_index();
        let mut progress = Vec::new();
        for member in self.log.members() {
            if member.id != self.config.id {
                push_bounded(&mut progress, Progress::new(member, last.next()));
            }
        }
        // A member removed by an entry in this log, and not added back, may not know it yet:
        // it is replicated to as the leader that proposed the removal would
        // (`sync_progress`), told once the removal commits (marked below for those already
        // committed), and dropped once it acknowledged that. Otherwise a leader change
        // before it was told would leave it waiting forever as a duck of no flock. It is no
        // voter of the latest membership, so it counts in no majority.
        let first = self.log.snapshot().index;
        for (i, entry) in self.log.entries_from(first.next(), L).iter().enumerate() {
            let Payload::Remove { id } = entry.payload else {
                continue;
            };
            if id == self.config.id
                || self.log.member(id).is_some()
                || progress.iter().any(|p: &Progress| p.id == id)
            {
                continue;
            }
            // Its address, from the membership just before its removal.
            let before = LogIndex(first.0 + i as u64);
            if let Some(member) = self.log.committed_member(id, before) {
                push_bounded(&mut progress, Progress::new(&member, last.next()));
            }
        }
        self.role = Role::Leader(LeaderState {
            progress,
            since: now,
            election_last: last,
            log_confirmed: false,
            round_sent_at: now,
            lease_end: None,
            heartbeat_deadline: now,
            quorum_check_deadline: now + self.config.election_timeout_min,
            transfer: None,
        });
        self.leader = Some(self.config.id);
        self.mark_leaving(now, first);
        let others = self.log.voter_count() - usize::from(self.log.is_voter(self.config.id));
        self.log_term_pending = Some(PendingLogTerm::own(self.term, self.log.last_id(), now));
        if others < majority(self.log.voter_count()) {
            self.take_pending_log_term();
        }
        self.outbox.clear_requests();
        // A flock of one confirms at once.
        self.maybe_commit(now);
        self.broadcast_append(now);
    }

    /// The next election timeout: this node's own randomized timeout, but never inside the
    /// loyalty window (a leader with longer timing than ours would otherwise see its voters
    /// campaign while its lease holds), keeping the spread that splits votes apart.
    pub(super) fn reset_election_timer(&mut self, now: Instant) {
        let min = self.config.election_timeout_min;
        let spread = (self.config.election_timeout_max - min).micros();
        let base = (now + min).max(self.sticky_until);
        self.election_deadline = base + Duration::from_micros(self.rand.range_inclusive(0, spread));
    }
}
