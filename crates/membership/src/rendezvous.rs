//! [`Rendezvous`]: one worker's side of the membership protocol, as a state machine.
//!
//! It does no I/O and reads no clock (quinn-proto's pattern, as in `ringsam-ring`). The driver
//! keeps one timer and, in a loop:
//! 1. feeds what happened: [`Rendezvous::handle_message`] for each message that arrived,
//!    [`Rendezvous::handle_timeout`] once the time from [`Rendezvous::poll_timeout`] has come,
//!    [`Rendezvous::handle_ring_failure`] when the ring of the running generation fails;
//! 2. drains [`Rendezvous::poll_persist`] and writes the record durably (write, fsync, rename)
//!    *before* step 3: an Accept queued after a record must not leave before it is on disk;
//! 3. drains [`Rendezvous::poll_transmit`], sending each message to its slot (resolving the
//!    slot's address anew; a slot that cannot be reached simply misses the message);
//! 4. drains [`Rendezvous::poll_event`]: on `Reforming`, tear the ring down; on `Formed`, build
//!    the ring of the new membership and fetch the training state from its source;
//! 5. re-arms the timer from [`Rendezvous::poll_timeout`].
//!
//! The protocol's rules and the failures they handle are in the crate docs; the handlers for
//! each message are in `receive.rs`.

mod receive;

use std::collections::VecDeque;
use std::time::Duration;

use crate::acceptor::Acceptor;
use crate::choose::{Candidate, Choice, choose};
use crate::config::{ConfigError, MembershipConfig};
use crate::membership::{MAX_GENERATION, Membership, Slot, StateTag};
use crate::message::{Message, StateSource};
use crate::peers::Peers;
use crate::record::AcceptorRecord;

/// Where a worker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Rendezvous: sending Joins, and proposing if it leads.
    Forming,
    /// Leader: waiting for every proposed member's Accept.
    Proposing,
    /// Accepted a proposal: waiting for its Commit.
    Promised,
    /// In a formed generation ([`Rendezvous::membership`]).
    Running,
}

/// What the driver must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A generation formed with this worker in it: build its ring, get the state from `source`.
    Formed {
        /// Who is in, at which generation.
        membership: Membership,
        /// Where the training state comes from.
        source: StateSource,
        /// This worker's first rank.
        rank: u32,
    },
    /// A member of the running generation is gone (silent, or it came back as a new process).
    /// Followed by `Reforming`.
    Lost {
        /// The member.
        slot: Slot,
    },
    /// This worker left its running generation: tear its ring down. Emitted on every way out of
    /// `Running`, after the `Lost` or `JoinRequested` that caused it, if any.
    Reforming {
        /// Why, for the log.
        reason: String,
    },
    /// A worker outside the running generation asked to join and there is room: the generation
    /// is left to re-form with it (training state stays in memory, so growth costs one
    /// re-formation). Followed by `Reforming`.
    JoinRequested {
        /// The joiner.
        slot: Slot,
    },
}

struct Forming {
    next_join: Duration,
    /// No proposal before this: a back-off after a failed one.
    retry_at: Duration,
    /// The workers a proposal would hold, as last computed, and since when (the settle timer
    /// restarts whenever they change).
    choice: Vec<(Slot, u32)>,
    since: Duration,
    /// When this worker, leading, may propose, if only time stands in the way.
    wake_at: Option<Duration>,
}

impl Forming {
    fn new(now: Duration, retry_at: Duration) -> Self {
        Forming { next_join: now, retry_at, choice: Vec::new(), since: now, wake_at: None }
    }
}

struct Proposing {
    proposal: Membership,
    /// Members other than this worker that accepted.
    accepted: Vec<Slot>,
    deadline: Duration,
    /// Each member's training state as its last Join said (this worker's own as it was).
    states: Vec<(Slot, Option<StateTag>)>,
}

struct Promised {
    proposal: Membership,
    deadline: Duration,
}

struct Running {
    membership: Membership,
    next_heartbeat: Duration,
    /// Every other member, with when it was last heard.
    heard: Vec<(Slot, Duration)>,
}

enum State {
    Forming(Forming),
    Proposing(Proposing),
    Promised(Promised),
    Running(Running),
}

/// One worker's side of the rendezvous: who is in the job, at which generation.
pub struct Rendezvous {
    cfg: MembershipConfig,
    acceptor: Acceptor,
    peers: Peers,
    state: State,
    /// The training state this process holds in memory ([`Rendezvous::set_state`]).
    held: Option<StateTag>,
    /// The latest time handed in.
    now: Duration,
    /// The highest generation seen anywhere: a proposal goes one above.
    max_seen: u64,
    /// The highest generation this process ran (at start, the record's committed one): a late
    /// or repeated Commit of it, or of an older one, is not run again.
    ran: u64,
    fenced: u64,
    reforming_since: Option<Duration>,
    transmits: VecDeque<(Slot, Message)>,
    events: VecDeque<Event>,
    persist: Option<AcceptorRecord>,
}

impl Rendezvous {
    /// A fresh worker with nothing promised: a new job, or one whose record is lost.
    pub fn new(cfg: MembershipConfig) -> Result<Self, ConfigError> {
        Self::restore(cfg, None)
    }

    /// A worker restarted with its previous process's record: it keeps that process's promises
    /// (see the crate docs for the split brain this prevents). Its incarnation is one above the
    /// record's, and the first [`Rendezvous::poll_persist`] carries it.
    pub fn restore(cfg: MembershipConfig, record: Option<AcceptorRecord>) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let mut acceptor = match record {
            None => Acceptor::default(),
            Some(r) => {
                if r.slot != cfg.slot {
                    return Err(ConfigError::Record(format!(
                        "the record of {} was given to {} (a shared state directory?)",
                        r.slot, cfg.slot
                    )));
                }
                r.validate().map_err(ConfigError::Record)?;
                if let Some(m) = r.committed.iter().chain(&r.accepted).find(|m| !m.fits(cfg.slots)) {
                    return Err(ConfigError::Record(format!("generation {} names slots beyond this job's {}", m.generation, cfg.slots)));
                }
                Acceptor::from_record(r)
            }
        };
        acceptor.incarnation = acceptor.incarnation.saturating_add(1);
        let persist = Some(acceptor.record(cfg.slot));
        Ok(Rendezvous {
            peers: Peers::new(cfg.slots),
            max_seen: acceptor.promised(),
            ran: acceptor.generation(),
            acceptor,
            cfg,
            state: State::Forming(Forming::new(Duration::ZERO, Duration::ZERO)),
            held: None,
            now: Duration::ZERO,
            fenced: 0,
            reforming_since: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            persist,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MembershipConfig {
        &self.cfg
    }

    /// The newest generation this worker knows was committed (0: none). Never goes down, across
    /// restarts too (it is in the record).
    pub fn generation(&self) -> u64 {
        self.acceptor.generation()
    }

    /// The generation a proposal must exceed for this worker to accept it.
    pub fn promised(&self) -> u64 {
        self.acceptor.promised()
    }

    /// Where this worker stands.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Forming(_) => Phase::Forming,
            State::Proposing(_) => Phase::Proposing,
            State::Promised(_) => Phase::Promised,
            State::Running(_) => Phase::Running,
        }
    }

    /// The membership this worker runs in, while `Running`.
    pub fn membership(&self) -> Option<&Membership> {
        match &self.state {
            State::Running(r) => Some(&r.membership),
            _ => None,
        }
    }

    /// Messages ignored because they carried an older generation than this worker's (a paused
    /// or partitioned peer catching up, a late delivery): fencing at work.
    pub fn fenced(&self) -> u64 {
        self.fenced
    }

    /// When this worker last left `Running` (or first was driven, if it never ran), while it is
    /// not running: the start of the re-formation, for recovery-time metrics.
    pub fn reforming_since(&self) -> Option<Duration> {
        self.reforming_since
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.acceptor.incarnation
    }

    /// The training state this process holds in memory. Call after each committed step, and
    /// once the state from a `Formed` event's source is in place; `None` for a process holding
    /// none. The next Join carries it, for the leader to choose the state source.
    pub fn set_state(&mut self, state: Option<StateTag>) {
        self.held = state;
    }

    /// A message from `from` (decoded and checked). Anything from outside the job, from
    /// ourselves, or naming slots beyond the job is ignored.
    pub fn handle_message(&mut self, now: Duration, from: Slot, msg: Message) {
        self.touch(now);
        if from == self.cfg.slot || from.0 >= self.cfg.slots || msg.validate().is_err() || !self.fits(&msg) {
            return;
        }
        self.receive(now, from, msg);
        self.try_propose(now);
    }

    /// Call when `now` has reached [`Rendezvous::poll_timeout`] (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Duration) {
        self.touch(now);
        match &self.state {
            State::Forming(f) => {
                if now >= f.next_join {
                    self.send_joins(now);
                }
            }
            State::Proposing(p) => {
                if now >= p.deadline {
                    self.abandon(now);
                }
            }
            State::Promised(p) => {
                if now >= p.deadline {
                    self.enter_forming(now, now);
                }
            }
            State::Running(_) => self.running_timeout(now),
        }
        self.try_propose(now);
    }

    /// The ring of the running generation failed (a peer is gone or stalled): leave it.
    pub fn handle_ring_failure(&mut self, now: Duration) {
        self.touch(now);
        self.leave_running(now, "the ring failed: a peer is gone or stalled".to_string());
        self.try_propose(now);
    }

    /// Leave the running generation and form again (an operator's request); nothing otherwise.
    pub fn request_reform(&mut self, now: Duration) {
        self.touch(now);
        self.leave_running(now, "re-formation requested".to_string());
        self.try_propose(now);
    }

    /// The newest record to write durably, if it changed: drain it before
    /// [`Rendezvous::poll_transmit`] (see the module docs). Each record supersedes the last.
    pub fn poll_persist(&mut self) -> Option<AcceptorRecord> {
        self.persist.take()
    }

    /// The next message to send, and to which slot.
    pub fn poll_transmit(&mut self) -> Option<(Slot, Message)> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`Rendezvous::handle_timeout`] next (a time already past means at once).
    /// Right after `handle_timeout(now)` it is later than `now`; any `handle_*` call may change
    /// it, so re-arm the timer after each.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match &self.state {
            State::Forming(f) => {
                let expiry = self.peers.next_expiry(self.now, self.cfg.suspect_after);
                [Some(f.next_join), f.wake_at, expiry].into_iter().flatten().min()
            }
            State::Proposing(p) => Some(p.deadline),
            State::Promised(p) => Some(p.deadline),
            State::Running(r) => {
                let silence = r.heard.iter().map(|h| h.1.saturating_add(self.cfg.suspect_after)).min();
                [Some(r.next_heartbeat), silence].into_iter().flatten().min()
            }
        }
    }

    fn touch(&mut self, now: Duration) {
        self.now = self.now.max(now);
        if self.reforming_since.is_none() && !matches!(self.state, State::Running(_)) {
            self.reforming_since = Some(now);
        }
    }

    fn see(&mut self, generation: u64) {
        self.max_seen = self.max_seen.max(generation.min(MAX_GENERATION));
    }

    fn running_generation(&self) -> Option<u64> {
        match &self.state {
            State::Running(r) => Some(r.membership.generation),
            _ => None,
        }
    }

    fn queue_persist(&mut self) {
        self.persist = Some(self.acceptor.record(self.cfg.slot));
    }

    /// Whether every membership in `msg` names only slots of this job.
    fn fits(&self, msg: &Message) -> bool {
        let slots = self.cfg.slots;
        let ok = |m: &Membership| m.fits(slots);
        match msg {
            Message::Join { committed, accepted, .. } => committed.iter().chain(accepted).all(ok),
            Message::Propose { proposal, basis } => ok(proposal) && basis.iter().all(ok),
            Message::Reject { newest, .. } => newest.iter().all(ok),
            Message::Commit { membership, .. } => ok(membership),
            Message::Heartbeat { .. } | Message::Accept { .. } => true,
        }
    }

    fn enter_forming(&mut self, now: Duration, retry_at: Duration) {
        self.state = State::Forming(Forming::new(now, retry_at));
        self.send_joins(now);
    }

    /// A proposal of ours failed (refused, timed out, overtaken): form again, and propose again
    /// no sooner than a heartbeat from now. The members that did not accept are doing something
    /// else (running, promised elsewhere, gone): their Joins are forgotten, so the next proposal
    /// counts them only once they Join again.
    fn abandon(&mut self, now: Duration) {
        if let State::Proposing(p) = &self.state {
            let me = self.cfg.slot;
            let busy: Vec<Slot> = p.proposal.slots().filter(|&s| s != me && !p.accepted.contains(&s)).collect();
            for slot in busy {
                self.peers.forget(slot);
            }
        }
        self.enter_forming(now, now.saturating_add(self.cfg.heartbeat));
    }

    /// Leaves `Running`, if there, announcing it; nothing otherwise.
    fn leave_running(&mut self, now: Duration, reason: String) {
        if !matches!(self.state, State::Running(_)) {
            return;
        }
        self.events.push_back(Event::Reforming { reason });
        self.reforming_since = Some(now);
        self.enter_forming(now, now);
    }

    fn send_joins(&mut self, now: Duration) {
        let join = Message::Join {
            replicas: self.cfg.replicas,
            incarnation: self.acceptor.incarnation,
            state: self.held,
            committed: self.acceptor.committed().cloned(),
            accepted: self.acceptor.accepted().to_vec(),
        };
        let me = self.cfg.slot;
        for slot in (0..self.cfg.slots).map(Slot).filter(|&s| s != me) {
            self.transmits.push_back((slot, join.clone()));
        }
        if let State::Forming(f) = &mut self.state {
            f.next_join = now.saturating_add(self.cfg.heartbeat);
        }
    }

    fn send_heartbeats(&mut self, now: Duration) {
        let me = self.cfg.slot;
        let State::Running(r) = &mut self.state else { return };
        r.next_heartbeat = now.saturating_add(self.cfg.heartbeat);
        let generation = r.membership.generation;
        for m in r.membership.members.iter().filter(|m| m.slot != me) {
            self.transmits.push_back((m.slot, Message::Heartbeat { generation }));
        }
    }

    /// Running: a member silent for `suspect_after` is lost; otherwise heartbeat when due.
    fn running_timeout(&mut self, now: Duration) {
        let suspect_after = self.cfg.suspect_after;
        let State::Running(r) = &self.state else { return };
        let silent: Vec<Slot> = r.heard.iter().filter(|h| now >= h.1.saturating_add(suspect_after)).map(|h| h.0).collect();
        let generation = r.membership.generation;
        let heartbeat_due = now >= r.next_heartbeat;
        if silent.is_empty() {
            if heartbeat_due {
                self.send_heartbeats(now);
            }
            return;
        }
        for &slot in &silent {
            self.events.push_back(Event::Lost { slot });
        }
        let names: Vec<String> = silent.iter().map(|s| s.to_string()).collect();
        self.leave_running(now, format!("{} silent for {suspect_after:?} in generation {generation}", names.join(", ")));
    }

    /// Forming: if this worker leads and the time has come, propose.
    fn try_propose(&mut self, now: Duration) {
        let State::Forming(f) = &self.state else { return };
        let retry_at = f.retry_at;
        let choice = self.choice(now);
        let (me, min, max) = (self.cfg.slot, self.cfg.min_replicas, self.cfg.max_replicas);
        let (heartbeat, settle) = (self.cfg.heartbeat, self.cfg.settle);
        let State::Forming(f) = &mut self.state else { return };
        if choice.workers != f.choice {
            f.choice = choice.workers.clone();
            f.since = now;
        }
        f.wake_at = None;
        let leads = choice.workers.first().is_some_and(|w| w.0 == me);
        if !leads || choice.replicas() < min {
            return;
        }
        // Full: wait one heartbeat with the choice unchanged, so every forming worker's Join has
        // arrived and a lower slot is not beaten to the lead by a faster one. Otherwise settle.
        let wait = if choice.available >= max { heartbeat } else { settle };
        let ready_at = retry_at.max(f.since.saturating_add(wait));
        if now < ready_at {
            f.wake_at = Some(ready_at);
            return;
        }
        self.propose(now, choice.workers);
    }

    /// What a proposal made now would hold: this worker and the live joiners (see `choose`).
    fn choice(&self, now: Duration) -> Choice {
        let mut candidates =
            vec![Candidate { slot: self.cfg.slot, replicas: self.cfg.replicas, constraints: self.acceptor.constraints().collect() }];
        for (slot, join) in self.peers.live_joiners(now, self.cfg.suspect_after) {
            candidates.push(Candidate { slot, replicas: join.replicas, constraints: join.constraints().collect() });
        }
        choose(candidates, self.cfg.max_replicas)
    }

    /// Whether a re-formation now would take in `joiner` beside the running members (and the
    /// other live joiners): only then is leaving the running generation for it worth it.
    fn admits(&self, now: Duration, joiner: Slot) -> bool {
        let State::Running(r) = &self.state else { return false };
        let running = &r.membership;
        let mut candidates: Vec<Candidate<'_>> =
            running.members.iter().map(|m| Candidate { slot: m.slot, replicas: m.replicas, constraints: vec![running] }).collect();
        for (slot, join) in self.peers.live_joiners(now, self.cfg.suspect_after) {
            if !running.contains(slot) {
                candidates.push(Candidate { slot, replicas: join.replicas, constraints: join.constraints().collect() });
            }
        }
        choose(candidates, self.cfg.max_replicas).workers.iter().any(|w| w.0 == joiner)
    }

    /// Proposes `workers` at one above every generation seen, accepting it ourselves first.
    fn propose(&mut self, now: Duration, workers: Vec<(Slot, u32)>) {
        let me = self.cfg.slot;
        let generation = self.max_seen.max(self.acceptor.promised()).saturating_add(1);
        let proposal = Membership::new(generation, workers);
        if self.acceptor.check(me, &proposal).is_err() {
            // Only `Full` can refuse what `choose` picked: wait for a commit to be learned.
            if let State::Forming(f) = &mut self.state {
                f.retry_at = now.saturating_add(self.cfg.heartbeat);
                f.wake_at = Some(f.retry_at);
            }
            return;
        }
        self.acceptor.accept(proposal.clone());
        self.queue_persist();
        self.see(generation);
        let states: Vec<(Slot, Option<StateTag>)> = proposal
            .members
            .iter()
            .map(|m| (m.slot, if m.slot == me { self.held } else { self.peers.join(m.slot).and_then(|j| j.state) }))
            .collect();
        let basis = self.acceptor.committed().cloned();
        for m in proposal.members.iter().filter(|m| m.slot != me) {
            self.transmits.push_back((m.slot, Message::Propose { proposal: proposal.clone(), basis: basis.clone() }));
        }
        if proposal.members.len() == 1 {
            let source = state_source(&states);
            return self.enter_running(now, proposal, source);
        }
        let deadline = now.saturating_add(self.cfg.suspect_after);
        self.state = State::Proposing(Proposing { proposal, accepted: Vec::new(), deadline, states });
    }

    /// Every proposed member accepted: tell them, and run.
    fn commit(&mut self, now: Duration) {
        if !matches!(self.state, State::Proposing(_)) {
            return;
        }
        let State::Proposing(p) = std::mem::replace(&mut self.state, State::Forming(Forming::new(now, now))) else {
            unreachable!("checked to be proposing above")
        };
        let source = state_source(&p.states);
        let me = self.cfg.slot;
        for m in p.proposal.members.iter().filter(|m| m.slot != me) {
            self.transmits.push_back((m.slot, Message::Commit { membership: p.proposal.clone(), source }));
        }
        self.enter_running(now, p.proposal, source);
    }

    /// `membership` formed with this worker in it.
    fn enter_running(&mut self, now: Duration, membership: Membership, source: StateSource) {
        let me = self.cfg.slot;
        let Some(rank) = membership.rank_of(me) else {
            // Callers only pass memberships holding this worker.
            return self.enter_forming(now, now);
        };
        if self.acceptor.learn_commit(&membership) {
            self.queue_persist();
        }
        self.see(membership.generation);
        let heard = membership.members.iter().filter(|m| m.slot != me).map(|m| (m.slot, now)).collect();
        self.events.push_back(Event::Formed { membership: membership.clone(), source, rank });
        self.ran = self.ran.max(membership.generation);
        self.reforming_since = None;
        self.state = State::Running(Running { membership, next_heartbeat: now, heard });
        self.send_heartbeats(now);
    }

    /// `membership` was committed (we heard it in a Commit, a Join or a proposal's basis): our
    /// promises below it are settled, and whatever we were doing at or below its generation is
    /// over.
    fn learn_commit(&mut self, now: Duration, membership: &Membership) {
        if !self.acceptor.learn_commit(membership) {
            return;
        }
        self.queue_persist();
        self.see(membership.generation);
        let g = membership.generation;
        match &self.state {
            State::Running(r) if r.membership.generation < g => {
                self.leave_running(now, format!("generation {g} formed without this worker"));
            }
            State::Proposing(p) if p.proposal.generation <= g => self.abandon(now),
            State::Promised(p) if p.proposal.generation <= g && p.proposal != *membership => self.enter_forming(now, now),
            _ => {}
        }
    }
}

/// Where a new generation gets its state: the newest tag any member holds, from the lowest slot
/// holding it; from disk if no member holds any.
fn state_source(states: &[(Slot, Option<StateTag>)]) -> StateSource {
    let mut best: Option<(StateTag, Slot)> = None;
    for &(slot, tag) in states {
        let Some(tag) = tag else { continue };
        if best.is_none_or(|(t, s)| tag > t || (tag == t && slot < s)) {
            best = Some((tag, slot));
        }
    }
    best.map_or(StateSource::Disk, |(tag, from)| StateSource::Memory { from, tag })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_state_from_the_lowest_slot_or_disk() {
        let t = |generation, step| Some(StateTag { generation, step });
        assert_eq!(state_source(&[(Slot(0), None), (Slot(1), None)]), StateSource::Disk);
        let states = [(Slot(0), t(2, 500)), (Slot(1), t(3, 10)), (Slot(2), None), (Slot(3), t(3, 10))];
        assert_eq!(state_source(&states), StateSource::Memory { from: Slot(1), tag: StateTag { generation: 3, step: 10 } });
        let states = [(Slot(4), t(3, 10)), (Slot(2), t(3, 10))];
        assert_eq!(state_source(&states), StateSource::Memory { from: Slot(2), tag: StateTag { generation: 3, step: 10 } });
    }
}
