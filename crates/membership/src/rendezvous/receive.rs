//! What each message does, by kind. Every handler first notes the generations it carries, so
//! this worker's next proposal goes above them; a message from an older generation than this
//! worker's promise changes nothing and is counted in `fenced`.

use std::time::Duration;

use super::{Event, Promised, Rendezvous, State};
use crate::membership::{Membership, Slot};
use crate::message::{Message, RejectReason, StateSource};
use crate::peers::{JoinNews, Joined};

impl Rendezvous {
    pub(super) fn receive(&mut self, now: Duration, from: Slot, msg: Message) {
        match msg {
            Message::Join { replicas, incarnation, state, committed, accepted } => {
                self.on_join(now, from, Joined { at: now, replicas, incarnation, state, committed, accepted });
            }
            Message::Heartbeat { generation } => self.on_heartbeat(now, from, generation),
            Message::Propose { proposal, basis } => self.on_propose(now, from, proposal, basis),
            Message::Accept { generation } => self.on_accept(now, from, generation),
            Message::Reject { generation, newest, .. } => self.on_reject(now, from, generation, newest),
            Message::Commit { membership, source } => self.on_commit(now, membership, source),
        }
    }

    /// A Join: remember it (the leader chooses from these). While running, a Join from a member
    /// means it left our generation (it restarted, or its ring failed): it is lost. A Join from
    /// a worker outside, with room for it, re-forms the generation to take it in.
    fn on_join(&mut self, now: Duration, from: Slot, join: Joined) {
        let promised = join.promised();
        let replicas = join.replicas;
        let committed = join.committed.clone();
        self.see(promised);
        let news = self.peers.joined(from, join);
        if news == JoinNews::Stale {
            return; // from a dead process of that slot, delivered late
        }
        if let Some(c) = committed {
            self.learn_commit(now, &c);
        }
        let State::Running(r) = &self.state else { return };
        let generation = r.membership.generation;
        let member = r.membership.contains(from);
        let world = r.membership.world();
        if member {
            // Sent after it accepted this generation (or by a new process): it is no longer in
            // it. Otherwise it was sent before, while forming, and arrived late.
            if promised >= generation || news == JoinNews::Restarted {
                self.events.push_back(Event::Lost { slot: from });
                self.leave_running(now, format!("{from} left generation {generation} (restarted or re-forming)"));
            } else {
                self.fenced += 1;
            }
        } else if world.saturating_add(replicas) <= self.cfg.max_replicas && self.admits(now, from) {
            self.events.push_back(Event::JoinRequested { slot: from });
            self.leave_running(now, format!("{from} asks to join generation {generation} ({world} ranks)"));
        }
    }

    /// A Heartbeat: a member of our running generation is alive. One from a newer generation
    /// means it formed without us (we would have accepted it otherwise): we were dropped.
    fn on_heartbeat(&mut self, now: Duration, from: Slot, generation: u64) {
        self.see(generation);
        match self.running_generation() {
            Some(g) if generation == g => {
                if let State::Running(r) = &mut self.state
                    && let Some(h) = r.heard.iter_mut().find(|h| h.0 == from)
                {
                    h.1 = now;
                }
            }
            Some(g) if generation > g => {
                self.leave_running(now, format!("{from} runs generation {generation}, formed without this worker"));
            }
            _ if generation < self.acceptor.promised() => self.fenced += 1,
            _ => {}
        }
    }

    /// A proposal: accept it if the acceptor's rule allows (crate docs, rule 4), else say why not.
    fn on_propose(&mut self, now: Duration, from: Slot, proposal: Membership, basis: Option<Membership>) {
        self.see(proposal.generation);
        if let Some(b) = &basis {
            self.see(b.generation);
            self.learn_commit(now, b);
        }
        let me = self.cfg.slot;
        let wrong_replicas = proposal.get(me).is_some_and(|m| m.replicas != self.cfg.replicas);
        if !proposal.contains(from) || wrong_replicas {
            return self.reject(from, proposal.generation, RejectReason::Invalid);
        }
        match self.acceptor.check(me, &proposal) {
            Ok(()) => self.accept(now, from, proposal),
            Err(reason) => {
                if proposal.generation < self.acceptor.promised() {
                    self.fenced += 1;
                }
                self.reject(from, proposal.generation, reason);
            }
        }
    }

    /// Accepts `proposal` from `from`: the promise goes to disk, and the Accept is queued after
    /// it (the driver writes records before it sends). A running worker leaves its generation.
    fn accept(&mut self, now: Duration, from: Slot, proposal: Membership) {
        let generation = proposal.generation;
        self.acceptor.accept(proposal.clone());
        self.queue_persist();
        if let Some(g) = self.running_generation() {
            self.events.push_back(Event::Reforming { reason: format!("{from} proposes generation {generation} after {g}") });
            self.reforming_since = Some(now);
        }
        let deadline = now.saturating_add(self.cfg.suspect_after);
        self.state = State::Promised(Promised { proposal, deadline });
        self.transmits.push_back((from, Message::Accept { generation }));
    }

    fn reject(&mut self, to: Slot, generation: u64, reason: RejectReason) {
        let newest = self.acceptor.newest().cloned();
        self.transmits.push_back((to, Message::Reject { generation, newest, reason }));
    }

    /// An Accept of our proposal; with every member's in, commit.
    fn on_accept(&mut self, now: Duration, from: Slot, generation: u64) {
        self.see(generation);
        let complete = match &mut self.state {
            State::Proposing(p) if p.proposal.generation == generation => {
                if p.proposal.contains(from) && !p.accepted.contains(&from) {
                    p.accepted.push(from);
                }
                p.accepted.len() + 1 >= p.proposal.members.len()
            }
            _ => false,
        };
        if complete {
            self.commit(now);
        } else if generation < self.acceptor.promised() {
            self.fenced += 1;
        }
    }

    /// A Reject of our proposal: it failed; what the rejecter knows raises our next generation.
    fn on_reject(&mut self, now: Duration, from: Slot, generation: u64, newest: Option<Membership>) {
        self.see(generation);
        if let Some(n) = &newest {
            self.see(n.generation);
        }
        let ours = matches!(&self.state, State::Proposing(p) if p.proposal.generation == generation && p.proposal.contains(from));
        if ours {
            self.abandon(now);
        } else if generation < self.acceptor.promised() {
            self.fenced += 1;
        }
    }

    /// A Commit: if it is the proposal we promised (and still our newest), run it; otherwise it
    /// only teaches us that it formed.
    fn on_commit(&mut self, now: Duration, membership: Membership, source: StateSource) {
        let generation = membership.generation;
        self.see(generation);
        let mine = membership.contains(self.cfg.slot)
            && generation > self.ran
            && generation == self.acceptor.promised()
            && self.acceptor.accepted_at(generation) == Some(&membership);
        if mine {
            return self.enter_running(now, membership, source);
        }
        if generation < self.acceptor.promised() {
            self.fenced += 1;
        }
        self.learn_commit(now, &membership);
    }
}
