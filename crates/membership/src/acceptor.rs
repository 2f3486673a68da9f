//! The acceptor's promises, and the rule that decides which proposals it may accept.
//!
//! State: the newest membership known committed, and every proposal accepted since (oldest
//! first). The rule ([`Acceptor::check`]): a proposal is accepted only if it holds this worker,
//! its generation is above everything accepted or committed, and it holds a strict majority of
//! *each* of those memberships. Keeping all of them, not only the newest, is what makes
//! consecutive committed memberships overlap in a majority; the crate docs give the run of events
//! that breaks with the newest alone. A learned commit drops the entries at or below its
//! generation: the commit itself now stands for them.

use crate::membership::{Membership, Slot};
use crate::message::RejectReason;
use crate::record::{AcceptorRecord, MAX_ACCEPTED};

#[derive(Clone, Debug, Default)]
pub(crate) struct Acceptor {
    committed: Option<Membership>,
    /// Generations strictly rising, all above `committed`'s; slot sets distinct.
    accepted: Vec<Membership>,
    /// This process's incarnation (see [`AcceptorRecord::incarnation`]).
    pub(crate) incarnation: u64,
}

impl Acceptor {
    /// The acceptor a record describes (the caller has validated it).
    pub(crate) fn from_record(record: AcceptorRecord) -> Self {
        Acceptor { committed: record.committed, accepted: record.accepted, incarnation: record.incarnation }
    }

    /// The record to write now.
    pub(crate) fn record(&self, slot: Slot) -> AcceptorRecord {
        AcceptorRecord { slot, incarnation: self.incarnation, committed: self.committed.clone(), accepted: self.accepted.clone() }
    }

    pub(crate) fn committed(&self) -> Option<&Membership> {
        self.committed.as_ref()
    }

    pub(crate) fn accepted(&self) -> &[Membership] {
        &self.accepted
    }

    /// The newest committed generation known (0: none).
    pub(crate) fn generation(&self) -> u64 {
        self.committed.as_ref().map_or(0, |c| c.generation)
    }

    /// The generation a proposal must exceed: the newest accepted or committed.
    pub(crate) fn promised(&self) -> u64 {
        self.accepted.last().map_or(self.generation(), |a| a.generation)
    }

    /// The newest membership accepted or committed (what a Reject teaches the proposer).
    pub(crate) fn newest(&self) -> Option<&Membership> {
        self.accepted.last().or(self.committed.as_ref())
    }

    /// Every membership a proposal must hold a majority of.
    pub(crate) fn constraints(&self) -> impl Iterator<Item = &Membership> {
        self.committed.iter().chain(&self.accepted)
    }

    /// The accepted or committed membership of `generation`, if any.
    pub(crate) fn accepted_at(&self, generation: u64) -> Option<&Membership> {
        self.accepted.iter().chain(&self.committed).find(|m| m.generation == generation)
    }

    /// Whether worker `slot` may accept `proposal` (the rule in the module docs).
    pub(crate) fn check(&self, slot: Slot, proposal: &Membership) -> Result<(), RejectReason> {
        if proposal.generation <= self.promised() {
            return Err(RejectReason::Stale);
        }
        if !proposal.contains(slot) {
            return Err(RejectReason::NotMember);
        }
        if self.accepted.len() >= MAX_ACCEPTED && !self.accepted.iter().any(|a| a.same_slots(proposal)) {
            return Err(RejectReason::Full);
        }
        if self.constraints().any(|c| !proposal.has_majority_of(c)) {
            return Err(RejectReason::NoQuorum);
        }
        Ok(())
    }

    /// Records the acceptance of a proposal [`Acceptor::check`] passed. An older entry with the
    /// same slots goes: it asks for the very same majority.
    pub(crate) fn accept(&mut self, proposal: Membership) {
        debug_assert!(proposal.generation > self.promised(), "accepting generation {} at or below the promise", proposal.generation);
        self.accepted.retain(|a| !a.same_slots(&proposal));
        self.accepted.push(proposal);
    }

    /// Learns that `membership` was committed; returns whether anything changed (and so must be
    /// persisted). Entries at or below its generation go: a later proposal must hold a majority
    /// of the commit, which the chain of commits links to everything before it.
    pub(crate) fn learn_commit(&mut self, membership: &Membership) -> bool {
        if membership.generation <= self.generation() {
            return false;
        }
        self.accepted.retain(|a| a.generation > membership.generation);
        self.committed = Some(membership.clone());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(generation: u64, slots: &[u32]) -> Membership {
        Membership::new(generation, slots.iter().map(|&s| (Slot(s), 1)))
    }

    #[test]
    fn generations_must_rise_and_hold_the_acceptor() {
        let mut a = Acceptor::default();
        assert_eq!(a.check(Slot(1), &of(1, &[0, 1])), Ok(()), "no basis: no quorum constraint");
        a.accept(of(1, &[0, 1]));
        assert_eq!(a.check(Slot(1), &of(1, &[0, 1, 2])), Err(RejectReason::Stale));
        assert_eq!(a.check(Slot(1), &of(2, &[0, 2])), Err(RejectReason::NotMember));
        assert_eq!(a.promised(), 1);
        assert!(a.learn_commit(&of(1, &[0, 1])));
        assert!(!a.learn_commit(&of(1, &[0, 1])), "known already");
        assert_eq!((a.generation(), a.promised(), a.accepted().len()), (1, 1, 0));
    }

    /// Why every accepted proposal is kept. C1 = {0..4} committed; C2 = {0,1,2} committed, but
    /// its commit reached only slot 0; slot 1 then accepted P3 = {1,2,3,4}, which failed. Q4 =
    /// {1,3,4} holds a majority of C1 and of P3: with only the committed and newest accepted in
    /// mind, slot 1 (and 3 and 4, who never saw C2) would accept it, and Q4 would commit with no
    /// majority of C2, while slot 0 still runs C2.
    #[test]
    fn an_acceptor_remembers_every_proposal_since_its_last_commit() {
        let mut a = Acceptor::default();
        a.learn_commit(&of(1, &[0, 1, 2, 3, 4]));
        a.accept(of(2, &[0, 1, 2]));
        a.accept(of(3, &[1, 2, 3, 4]));
        assert_eq!(a.check(Slot(1), &of(4, &[1, 3, 4])), Err(RejectReason::NoQuorum));
        assert_eq!(a.check(Slot(1), &of(4, &[0, 1, 2, 3])), Ok(()));
        // Learning that generation 3 formed, the older entries' work is done by it.
        assert!(a.learn_commit(&of(3, &[1, 2, 3, 4])));
        assert_eq!(a.check(Slot(1), &of(4, &[1, 3, 4])), Ok(()));
        assert_eq!(a.constraints().count(), 1);
    }

    #[test]
    fn the_same_slots_are_remembered_once_and_the_list_is_bounded() {
        let mut a = Acceptor::default();
        for g in 1..=5 {
            a.accept(of(g, &[0, 1, 2]));
        }
        assert_eq!(a.accepted().len(), 1);
        assert_eq!(a.accepted_at(5).map(|m| m.generation), Some(5));
        assert_eq!(a.accepted_at(4), None);
        // Fill the list directly (distinct slot sets, rising generations).
        let a =
            Acceptor { accepted: (0..MAX_ACCEPTED as u32).map(|k| of(u64::from(k) + 1, &[0, 100 + k])).collect(), ..Default::default() };
        let next = MAX_ACCEPTED as u64 + 1;
        assert_eq!(a.check(Slot(0), &of(next, &[0, 40, 41])), Err(RejectReason::Full));
        let again = of(next, &[0, 100 + MAX_ACCEPTED as u32 - 1]);
        assert_ne!(a.check(Slot(0), &again), Err(RejectReason::Full), "the same slots as an entry: it would replace it");
    }
}
