//! The data the protocol agrees on: a [`Membership`] (who is in, at which generation, owning
//! which ranks) and a [`StateTag`] (which training state a worker holds), plus the majority
//! arithmetic every safety rule rests on.
//!
//! Invariants of a valid membership ([`Membership::validate`]): generation in
//! `1..=MAX_GENERATION`; one to [`MAX_SLOTS`] members, sorted by slot with no repeats, every slot
//! below [`MAX_SLOTS`]; each owns `1..=MAX_REPLICAS` ranks; `first_rank` counts up from 0 with
//! no gaps, so ranks are `0..world()` in slot order. Everything a peer sends is checked against
//! these before it is used, so a wrong count can only be a bug of ours, never a peer's doing.

use serde::{Deserialize, Serialize};

/// Slots are below this: it bounds every list a peer can make us hold.
pub const MAX_SLOTS: u32 = 1024;
/// Most ranks one worker may own (its local replicas).
pub const MAX_REPLICAS: u32 = 64;
/// Largest generation taken from a peer: beyond any real job, and `+ 1` cannot overflow.
pub const MAX_GENERATION: u64 = 1 << 62;

/// A worker's stable identity: its index in the job (Kubernetes pod `job-{i}`, or the process
/// index under `ringsam launch`). A restarted worker keeps its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Slot(pub u32);

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "slot {}", self.0)
    }
}

/// One worker of a membership: ranks `first_rank .. first_rank + replicas`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The worker.
    pub slot: Slot,
    /// Ranks it owns (its local replicas; at least 1).
    pub replicas: u32,
    /// Its first rank: the replicas of every lower slot in the membership, summed.
    pub first_rank: u32,
}

/// Who trains in one generation. Generation 0 never names a membership: it means "none yet".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Which formation this is; each is at most one membership, and later ones are higher.
    pub generation: u64,
    /// Sorted by slot, no repeats, ranks counted up in that order.
    pub members: Vec<Member>,
}

impl Membership {
    /// The membership of `workers` (slot, replicas) at `generation`: sorted by slot, a repeated
    /// slot kept once (its first entry), ranks assigned in slot order.
    pub fn new(generation: u64, workers: impl IntoIterator<Item = (Slot, u32)>) -> Self {
        let mut workers: Vec<(Slot, u32)> = workers.into_iter().collect();
        workers.sort_by_key(|w| w.0);
        workers.dedup_by_key(|w| w.0);
        let mut next = 0u32;
        let members = workers
            .into_iter()
            .map(|(slot, replicas)| {
                let member = Member { slot, replicas, first_rank: next };
                next = next.saturating_add(replicas);
                member
            })
            .collect();
        Membership { generation, members }
    }

    /// Ranks in all: the sum of every member's replicas.
    pub fn world(&self) -> u32 {
        self.members.iter().fold(0u32, |sum, m| sum.saturating_add(m.replicas))
    }

    /// The member at `slot`, if it is one.
    pub fn get(&self, slot: Slot) -> Option<&Member> {
        let i = self.members.binary_search_by_key(&slot, |m| m.slot).ok()?;
        self.members.get(i)
    }

    /// Whether `slot` is a member.
    pub fn contains(&self, slot: Slot) -> bool {
        self.get(slot).is_some()
    }

    /// The first rank of `slot`'s replicas, if it is a member.
    pub fn rank_of(&self, slot: Slot) -> Option<u32> {
        self.get(slot).map(|m| m.first_rank)
    }

    /// The members' slots, in order.
    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.members.iter().map(|m| m.slot)
    }

    /// Whether this membership holds a strict majority of `basis`'s slots (counted in workers,
    /// not ranks: a worker's replicas live and die together).
    pub fn has_majority_of(&self, basis: &Membership) -> bool {
        majority_within(basis, |s| self.contains(s))
    }

    /// Whether both hold the same slots (generation and replicas aside): the same quorum rule.
    pub fn same_slots(&self, other: &Membership) -> bool {
        self.members.len() == other.members.len() && self.slots().zip(other.slots()).all(|(a, b)| a == b)
    }

    /// Whether every slot is below `slots` (a job's configured size).
    pub fn fits(&self, slots: u32) -> bool {
        self.members.iter().all(|m| m.slot.0 < slots)
    }

    /// Checks the invariants in the module docs; says which one fails.
    pub fn validate(&self) -> Result<(), String> {
        if self.generation == 0 || self.generation > MAX_GENERATION {
            return Err(format!("generation {} outside 1..={MAX_GENERATION}", self.generation));
        }
        if self.members.is_empty() || self.members.len() > MAX_SLOTS as usize {
            return Err(format!("generation {} has {} members, not 1..={MAX_SLOTS}", self.generation, self.members.len()));
        }
        let mut next = 0u32;
        let mut previous: Option<Slot> = None;
        for m in &self.members {
            if m.slot.0 >= MAX_SLOTS {
                return Err(format!("{} is beyond the largest job ({MAX_SLOTS} slots)", m.slot));
            }
            if previous.is_some_and(|p| p >= m.slot) {
                return Err(format!("members are not sorted and unique at {}", m.slot));
            }
            if m.replicas == 0 || m.replicas > MAX_REPLICAS {
                return Err(format!("{} owns {} ranks, not 1..={MAX_REPLICAS}", m.slot, m.replicas));
            }
            if m.first_rank != next {
                return Err(format!("{} starts at rank {}, not {next}", m.slot, m.first_rank));
            }
            next += m.replicas; // at most MAX_SLOTS × MAX_REPLICAS: no overflow
            previous = Some(m.slot);
        }
        Ok(())
    }
}

/// The training state a worker holds in memory: produced in `generation`, committed at `step`.
/// Ordered by generation, then step: a newer generation's state continues the job, whatever an
/// older one's step count says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StateTag {
    /// The generation whose training produced this state.
    pub generation: u64,
    /// The last committed step.
    pub step: u64,
}

/// Whether `count` of `of` is a strict majority (more than half). Two strict majorities of one
/// set always share a member: the fact every quorum rule here rests on. Nothing is a majority
/// of nothing.
pub fn is_majority(count: usize, of: usize) -> bool {
    count.saturating_mul(2) > of
}

/// Whether the slots for which `has` is true hold a strict majority of `basis`'s slots.
pub fn majority_within(basis: &Membership, has: impl Fn(Slot) -> bool) -> bool {
    let count = basis.members.iter().filter(|m| has(m.slot)).count();
    is_majority(count, basis.members.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(generation: u64, slots: &[u32]) -> Membership {
        Membership::new(generation, slots.iter().map(|&s| (Slot(s), 1)))
    }

    #[test]
    fn majority_is_strictly_more_than_half() {
        assert!(!is_majority(0, 0));
        assert!(is_majority(1, 1));
        assert!(!is_majority(1, 2));
        assert!(is_majority(2, 3));
        assert!(!is_majority(2, 4));
        assert!(is_majority(3, 4));
        assert!(!is_majority(2, 5));
        assert!(is_majority(3, 5));
        let basis = of(1, &[0, 1, 2, 3]);
        assert!(of(2, &[1, 2, 3]).has_majority_of(&basis));
        assert!(!of(2, &[0, 1]).has_majority_of(&basis));
        assert!(!of(2, &[2, 3, 7, 8, 9]).has_majority_of(&basis), "counted in the basis's slots, not the proposal's");
    }

    #[test]
    fn ranks_follow_slot_order() {
        let m = Membership::new(3, [(Slot(5), 2), (Slot(1), 1), (Slot(3), 4), (Slot(1), 9)]);
        assert_eq!(m.slots().collect::<Vec<_>>(), vec![Slot(1), Slot(3), Slot(5)]);
        assert_eq!((m.rank_of(Slot(1)), m.rank_of(Slot(3)), m.rank_of(Slot(5)), m.rank_of(Slot(2))), (Some(0), Some(1), Some(5), None));
        assert_eq!(m.world(), 7);
        m.validate().unwrap();
    }

    #[test]
    fn validation_rejects_what_a_peer_could_send_wrong() {
        let good = of(4, &[0, 2, 3]);
        good.validate().unwrap();
        let mut unsorted = good.clone();
        unsorted.members.swap(0, 1);
        let (a, b) = (unsorted.members[1].first_rank, unsorted.members[0].first_rank);
        (unsorted.members[0].first_rank, unsorted.members[1].first_rank) = (a, b); // ranks stay in order
        assert!(unsorted.validate().unwrap_err().contains("sorted"));
        let mut duplicate = good.clone();
        duplicate.members[1].slot = Slot(0);
        assert!(duplicate.validate().is_err());
        let mut gap = good.clone();
        gap.members[2].first_rank = 7;
        assert!(gap.validate().unwrap_err().contains("rank"));
        let mut idle = good.clone();
        idle.members[0].replicas = 0;
        assert!(idle.validate().is_err());
        assert!(of(0, &[0]).validate().is_err(), "generation 0 names no membership");
        assert!(of(1, &[]).validate().is_err());
        assert!(of(1, &[MAX_SLOTS]).validate().is_err());
        assert!(of(MAX_GENERATION + 1, &[0]).validate().is_err());
    }

    #[test]
    fn state_tags_order_by_generation_first() {
        let old_but_long = StateTag { generation: 2, step: 900 };
        let new = StateTag { generation: 3, step: 10 };
        assert!(new > old_but_long);
        assert!(StateTag { generation: 3, step: 11 } > new);
    }
}
