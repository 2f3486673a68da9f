//! Which workers a proposal would hold, and so who leads: a pure function of what this worker
//! has heard, so workers that heard the same thing agree on it.
//!
//! Start from the live joiners (and this worker), sorted by slot. Take the lowest slots while
//! their replicas fit in `max_replicas`. Any taken worker whose own constraints (the memberships
//! it advertised: a proposal needs a majority of each) the taken set fails would reject the
//! proposal, so it is left out, and the choice is made again without it, until nobody is left
//! out. The leader is the lowest slot of the result. Leaving out a worker whose promises cannot
//! be met lets the others form without it instead of proposing, being refused, and proposing
//! again forever.

use crate::membership::{Membership, Slot, majority_within};

/// One worker that could be in a proposal.
pub(crate) struct Candidate<'a> {
    pub(crate) slot: Slot,
    pub(crate) replicas: u32,
    /// A proposal must hold a majority of each of these for this worker to accept it.
    pub(crate) constraints: Vec<&'a Membership>,
}

/// The outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Choice {
    /// The workers to propose, sorted by slot (slot, replicas); the first leads.
    pub(crate) workers: Vec<(Slot, u32)>,
    /// Replicas of every candidate not left out, taken or not: at `max_replicas` or more the
    /// job is full and nothing is gained by waiting.
    pub(crate) available: u32,
}

impl Choice {
    /// Replicas of the chosen workers.
    pub(crate) fn replicas(&self) -> u32 {
        self.workers.iter().fold(0u32, |sum, w| sum.saturating_add(w.1))
    }
}

/// The choice among `candidates` (see the module docs). A slot given twice counts once.
pub(crate) fn choose(mut candidates: Vec<Candidate<'_>>, max_replicas: u32) -> Choice {
    candidates.sort_by_key(|c| c.slot);
    candidates.dedup_by_key(|c| c.slot);
    loop {
        let workers = lowest(&candidates, max_replicas);
        let taken = |s: Slot| workers.binary_search_by_key(&s, |w| w.0).is_ok();
        let before = candidates.len();
        candidates.retain(|c| !taken(c.slot) || c.constraints.iter().all(|m| majority_within(m, taken)));
        if candidates.len() == before {
            let available = candidates.iter().fold(0u32, |sum, c| sum.saturating_add(c.replicas));
            return Choice { workers, available };
        }
    }
}

/// The lowest slots, in order, while their replicas fit in `max_replicas`.
fn lowest(candidates: &[Candidate<'_>], max_replicas: u32) -> Vec<(Slot, u32)> {
    let mut total = 0u32;
    let mut workers = Vec::new();
    for c in candidates {
        if total.saturating_add(c.replicas) > max_replicas {
            break;
        }
        total += c.replicas;
        workers.push((c.slot, c.replicas));
    }
    workers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(generation: u64, slots: &[u32]) -> Membership {
        Membership::new(generation, slots.iter().map(|&s| (Slot(s), 1)))
    }

    fn free(slot: u32) -> Candidate<'static> {
        Candidate { slot: Slot(slot), replicas: 1, constraints: Vec::new() }
    }

    fn slots(choice: &Choice) -> Vec<u32> {
        choice.workers.iter().map(|w| w.0.0).collect()
    }

    #[test]
    fn the_lowest_slots_up_to_max() {
        let choice = choose(vec![free(4), free(1), free(0), free(3), free(2), free(1)], 3);
        assert_eq!(slots(&choice), vec![0, 1, 2]);
        assert_eq!((choice.replicas(), choice.available), (3, 5));
    }

    #[test]
    fn a_minority_of_the_last_membership_chooses_nobody() {
        let basis = of(7, &[0, 1, 2, 3]);
        let bound = |slot| Candidate { slot: Slot(slot), replicas: 1, constraints: vec![&basis] };
        assert_eq!(slots(&choose(vec![bound(0), bound(1)], 4)), Vec::<u32>::new());
        assert_eq!(slots(&choose(vec![bound(0), bound(1), bound(3)], 4)), vec![0, 1, 3]);
    }

    #[test]
    fn a_worker_whose_promises_cannot_be_met_is_left_out() {
        // Slot 0 accepted {0, 5, 6} (5 and 6 are gone): no proposal of these workers holds a
        // majority of it, so the others form without it, led by slot 1.
        let stuck = of(9, &[0, 5, 6]);
        let zero = Candidate { slot: Slot(0), replicas: 1, constraints: vec![&stuck] };
        let choice = choose(vec![zero, free(1), free(2), free(3)], 4);
        assert_eq!(slots(&choice), vec![1, 2, 3]);
        assert_eq!(choice.available, 3);
    }
}
