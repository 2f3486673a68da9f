//! What this worker last heard from each other slot's Join: who is forming, with which
//! replicas, state and promises. One entry per slot of the job, so its size is fixed by the
//! configuration, never by what peers send.

use std::time::Duration;

use crate::membership::{Membership, Slot, StateTag};

/// A Join, as received.
#[derive(Clone, Debug)]
pub(crate) struct Joined {
    /// When it arrived.
    pub(crate) at: Duration,
    pub(crate) replicas: u32,
    pub(crate) incarnation: u64,
    pub(crate) state: Option<StateTag>,
    pub(crate) committed: Option<Membership>,
    pub(crate) accepted: Vec<Membership>,
}

impl Joined {
    /// The memberships a proposal must hold a majority of for the sender to accept it.
    pub(crate) fn constraints(&self) -> impl Iterator<Item = &Membership> {
        self.committed.iter().chain(&self.accepted)
    }

    /// The sender's promise: the newest generation it accepted or saw committed.
    pub(crate) fn promised(&self) -> u64 {
        self.constraints().map(|m| m.generation).max().unwrap_or(0)
    }
}

/// What a Join says about its sender's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JoinNews {
    /// From a process older than one already heard from: it is dead, and ignored.
    Stale,
    /// From the process last heard from (or the first heard).
    Fresh,
    /// From a newer process than last heard from: the slot restarted.
    Restarted,
}

#[derive(Clone, Debug, Default)]
struct Peer {
    join: Option<Joined>,
    /// The highest incarnation heard from this slot.
    incarnation: Option<u64>,
}

/// The last Join from every other slot.
pub(crate) struct Peers {
    peers: Vec<Peer>, // (slots)
}

impl Peers {
    pub(crate) fn new(slots: u32) -> Self {
        Peers { peers: vec![Peer::default(); slots as usize] }
    }

    /// Takes a Join from `slot` unless it comes from an older process than one already heard.
    pub(crate) fn joined(&mut self, slot: Slot, join: Joined) -> JoinNews {
        let Some(peer) = self.peers.get_mut(slot.0 as usize) else { return JoinNews::Stale };
        let news = match peer.incarnation {
            Some(known) if join.incarnation < known => return JoinNews::Stale,
            Some(known) if join.incarnation > known => JoinNews::Restarted,
            _ => JoinNews::Fresh,
        };
        peer.incarnation = Some(join.incarnation);
        peer.join = Some(join);
        news
    }

    /// Drops `slot`'s last Join: it is known to have moved on, and counts again once it Joins
    /// again. Its incarnation is kept.
    pub(crate) fn forget(&mut self, slot: Slot) {
        if let Some(peer) = self.peers.get_mut(slot.0 as usize) {
            peer.join = None;
        }
    }

    /// The last Join from `slot`, however old.
    pub(crate) fn join(&self, slot: Slot) -> Option<&Joined> {
        self.peers.get(slot.0 as usize)?.join.as_ref()
    }

    /// Slots whose last Join arrived less than `within` before `now`, with it.
    pub(crate) fn live_joiners(&self, now: Duration, within: Duration) -> impl Iterator<Item = (Slot, &Joined)> {
        self.peers.iter().enumerate().filter_map(move |(i, peer)| {
            let join = peer.join.as_ref()?;
            (now < join.at.saturating_add(within)).then_some((Slot(i as u32), join))
        })
    }

    /// The next time, after `now`, a live joiner stops being one.
    pub(crate) fn next_expiry(&self, now: Duration, within: Duration) -> Option<Duration> {
        self.peers.iter().filter_map(|peer| peer.join.as_ref()).map(|join| join.at.saturating_add(within)).filter(|&t| t > now).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(at: u64, incarnation: u64) -> Joined {
        Joined { at: Duration::from_secs(at), replicas: 1, incarnation, state: None, committed: None, accepted: Vec::new() }
    }

    #[test]
    fn joins_expire_and_dead_processes_are_ignored() {
        let s = Duration::from_secs;
        let mut peers = Peers::new(4);
        assert_eq!(peers.joined(Slot(1), join(10, 2)), JoinNews::Fresh);
        assert_eq!(peers.joined(Slot(2), join(11, 1)), JoinNews::Fresh);
        assert_eq!(peers.joined(Slot(1), join(12, 1)), JoinNews::Stale, "a late Join from the slot's previous process");
        assert_eq!(peers.join(Slot(1)).map(|j| j.at), Some(s(10)));
        let live: Vec<Slot> = peers.live_joiners(s(13), s(3)).map(|(slot, _)| slot).collect();
        assert_eq!(live, vec![Slot(2)], "slot 1's Join at 10 s is 3 s old at 13 s");
        assert_eq!(peers.next_expiry(s(13), s(3)), Some(s(14)));
        assert_eq!(peers.joined(Slot(1), join(13, 3)), JoinNews::Restarted);
        assert_eq!(peers.joined(Slot(9), join(13, 1)), JoinNews::Stale, "beyond the job");
    }
}
