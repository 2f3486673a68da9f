//! The membership protocol with no network: `Sim` moves encoded messages between `Rendezvous`
//! machines in simulated time, with random delays, drops, partitions, kills, restarts from the
//! persisted record, and pauses (a SIGSTOP'd process that resumes with stale state).
//! Deterministic: every random draw comes from `ringsam_rng::Rng` keyed by the seed.
//!
//! Checked on every run: no two memberships form one generation (no split brain); each formed
//! membership holds a majority of the one formed before it; no worker's generation ever goes
//! down; and once the chaos stops, every worker runs one common generation holding all of them
//! within 30 heartbeats plus the settle time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ringsam_membership::{
    AcceptorRecord, Event, Membership, MembershipConfig, Message, Phase, RejectReason, Rendezvous, Slot, StateSource, StateTag, decode,
    encode,
};
use ringsam_rng::Rng;

const HEARTBEAT: Duration = Duration::from_secs(1);
const SETTLE: Duration = Duration::from_secs(2);
/// Chaos runs per worker count: kept so the whole file runs in seconds in a debug build.
const SEEDS: u64 = 100;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A worker's configuration: one replica, a majority of the slots at least, `max` at most.
fn config(slot: Slot, slots: u32, max: u32) -> MembershipConfig {
    let mut cfg = MembershipConfig::new(slot, 1, slots, slots / 2 + 1, max, HEARTBEAT).unwrap();
    cfg.settle = SETTLE;
    cfg
}

fn slots_of(m: &Membership) -> Vec<u32> {
    m.slots().map(|s| s.0).collect()
}

/// One slot of the job: the process running there, if any, and what outlives it.
struct Node {
    machine: Option<Rendezvous>,
    /// The durable record, as last drained: the disk.
    disk: Option<AcceptorRecord>,
    /// Neither driven nor delivered to until then (SIGSTOP).
    paused_until: Option<Duration>,
    /// The highest `generation()` this slot ever reported, across restarts.
    highest: u64,
    /// The generation of the last `Formed` this slot emitted, across restarts.
    last_formed: u64,
}

struct Packet {
    at: Duration,
    seq: u64,
    from: Slot,
    to: Slot,
    bytes: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Formed {
    at: Duration,
    slot: Slot,
    membership: Membership,
    source: StateSource,
}

struct Sim {
    configs: Vec<MembershipConfig>,
    nodes: Vec<Node>,
    net: Vec<Packet>,
    seq: u64,
    time: Duration,
    rng: Rng,
    /// Each message's delay, uniform in this range of milliseconds.
    delay_ms: (u64, u64),
    /// One message in `drop_one_in` is lost (0: none); one in `spike_one_in` takes 0.5–2.5 s more.
    drop_one_in: u64,
    spike_one_in: u64,
    /// Partition: a message passes only between slots of one group (checked at send and arrival).
    group: Vec<u64>,
    formed: Vec<Formed>,
    events: Vec<(Duration, Slot, Event)>,
}

impl Sim {
    fn new(slots: u32, seed: u64, config: impl Fn(Slot) -> MembershipConfig) -> Self {
        Sim {
            configs: (0..slots).map(|s| config(Slot(s))).collect(),
            nodes: (0..slots).map(|_| Node { machine: None, disk: None, paused_until: None, highest: 0, last_formed: 0 }).collect(),
            net: Vec::new(),
            seq: 0,
            time: Duration::ZERO,
            rng: Rng::stream(seed, u64::from(slots), 0),
            delay_ms: (1, 150),
            drop_one_in: 0,
            spike_one_in: 0,
            group: vec![0; slots as usize],
            formed: Vec::new(),
            events: Vec::new(),
        }
    }

    /// `slots` workers, a majority to form, room for all.
    fn standard(slots: u32, seed: u64) -> Self {
        Sim::new(slots, seed, |s| config(s, slots, slots))
    }

    /// Starts a process at slot `i` from the slot's record (a fresh process: no state in memory).
    fn start(&mut self, i: usize) {
        let machine = Rendezvous::restore(self.configs[i].clone(), self.nodes[i].disk.clone()).unwrap();
        self.nodes[i].machine = Some(machine);
        self.nodes[i].paused_until = None;
        self.drain(i);
    }

    fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    /// The process at slot `i` dies; its record stays on disk, its messages in flight fly on.
    fn kill(&mut self, i: usize) {
        self.nodes[i].machine = None;
        self.nodes[i].paused_until = None;
    }

    fn heal(&mut self) {
        self.group = vec![0; self.nodes.len()];
    }

    fn machine(&self, i: usize) -> &Rendezvous {
        self.nodes[i].machine.as_ref().expect("a running process")
    }

    fn active(&self, i: usize) -> bool {
        self.nodes[i].machine.is_some() && self.nodes[i].paused_until.is_none()
    }

    fn send(&mut self, from: Slot, to: Slot, bytes: Vec<u8>) {
        if self.group[from.0 as usize] != self.group[to.0 as usize] {
            return;
        }
        if self.drop_one_in > 0 && self.rng.below(self.drop_one_in) == 0 {
            return;
        }
        let (lo, hi) = self.delay_ms;
        let mut delay = ms(lo + self.rng.below(hi - lo + 1));
        if self.spike_one_in > 0 && self.rng.below(self.spike_one_in) == 0 {
            delay += ms(500 + self.rng.below(2000));
        }
        self.seq += 1;
        self.net.push(Packet { at: self.time + delay, seq: self.seq, from, to, bytes });
    }

    /// Drains slot `i`'s machine as a driver does: the record to disk first, then the messages,
    /// then the events.
    fn drain(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(m) = node.machine.as_mut() else { return };
        if let Some(record) = m.poll_persist() {
            node.disk = Some(AcceptorRecord::decode(&record.encode()).expect("a record reads back"));
        }
        let mut sends = Vec::new();
        while let Some(t) = m.poll_transmit() {
            sends.push(t);
        }
        let mut events = Vec::new();
        while let Some(e) = m.poll_event() {
            events.push(e);
        }
        assert!(m.generation() >= node.highest, "slot {i}: generation went down from {} to {}", node.highest, m.generation());
        node.highest = m.generation();
        for (to, msg) in sends {
            self.send(Slot(i as u32), to, encode(&msg));
        }
        for e in events {
            self.on_event(i, e);
        }
    }

    fn on_event(&mut self, i: usize, e: Event) {
        let slot = Slot(i as u32);
        if let Event::Formed { membership, source, rank } = &e {
            assert_eq!(membership.rank_of(slot), Some(*rank), "slot {i}: rank in {membership:?}");
            let node = &mut self.nodes[i];
            assert!(
                membership.generation > node.last_formed,
                "slot {i}: formed generation {} after {}",
                membership.generation,
                node.last_formed
            );
            node.last_formed = membership.generation;
            // The state after re-formation: the source's (or the checkpoint's), one step on.
            let base = match source {
                StateSource::Memory { tag, .. } => tag.step,
                StateSource::Disk => 0,
            };
            let tag = StateTag { generation: membership.generation, step: base + 1 };
            if let Some(m) = node.machine.as_mut() {
                m.set_state(Some(tag));
            }
            self.formed.push(Formed { at: self.time, slot, membership: membership.clone(), source: *source });
        }
        self.events.push((self.time, slot, e));
    }

    /// The index of the first message due for an active slot, in (arrival, send) order.
    fn next_due(&self) -> Option<usize> {
        self.net
            .iter()
            .enumerate()
            .filter(|(_, p)| p.at <= self.time && self.active(p.to.0 as usize))
            .min_by_key(|(_, p)| (p.at, p.seq))
            .map(|(i, _)| i)
    }

    fn deliver(&mut self, p: Packet) {
        if self.group[p.from.0 as usize] != self.group[p.to.0 as usize] {
            return; // cut while in flight
        }
        let msg = decode(&p.bytes).expect("what a machine sent decodes");
        let (now, to) = (self.time, p.to.0 as usize);
        if let Some(m) = self.nodes[to].machine.as_mut() {
            m.handle_message(now, p.from, msg);
        }
        self.drain(to);
    }

    /// Everything due now: resumes, deliveries, timeouts.
    fn step(&mut self) {
        let now = self.time;
        for node in &mut self.nodes {
            if node.paused_until.is_some_and(|until| until <= now) {
                node.paused_until = None;
            }
        }
        let nodes = &self.nodes;
        self.net.retain(|p| p.at > now || nodes[p.to.0 as usize].machine.is_some()); // lost on a dead slot
        while let Some(i) = self.next_due() {
            let p = self.net.swap_remove(i);
            self.deliver(p);
        }
        for i in 0..self.nodes.len() {
            let due = self.active(i) && self.machine(i).poll_timeout().is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            if let Some(m) = self.nodes[i].machine.as_mut() {
                m.handle_timeout(now);
            }
            self.drain(i);
            let next = self.machine(i).poll_timeout();
            assert!(next.is_none_or(|t| t > now), "slot {i}: poll_timeout {next:?} not after handle_timeout at {now:?}");
        }
    }

    /// When anything happens next: a delivery, a timer, a resume.
    fn next_time(&self) -> Option<Duration> {
        let packets = self.net.iter().map(|p| match self.nodes[p.to.0 as usize].paused_until {
            Some(until) => p.at.max(until),
            None => p.at,
        });
        let timers = (0..self.nodes.len()).filter(|&i| self.active(i)).filter_map(|i| self.machine(i).poll_timeout());
        let resumes = self.nodes.iter().filter_map(|n| n.paused_until);
        packets.chain(timers).chain(resumes).min()
    }

    fn run_until(&mut self, end: Duration) {
        loop {
            self.step();
            let floor = self.time + Duration::from_micros(1);
            match self.next_time() {
                Some(t) if t.max(floor) <= end => self.time = t.max(floor),
                _ => {
                    self.time = end;
                    return;
                }
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.time + d;
        self.run_until(end);
    }

    fn formed_after(&self, t: Duration) -> Vec<&Formed> {
        self.formed.iter().filter(|f| f.at > t).collect()
    }

    /// No split brain, and each formed membership a majority of the previous one.
    fn check_safety(&self) {
        let mut by_generation: BTreeMap<u64, &Membership> = BTreeMap::new();
        for f in &self.formed {
            let first = *by_generation.entry(f.membership.generation).or_insert(&f.membership);
            assert_eq!(first, &f.membership, "split brain: two memberships formed generation {}", f.membership.generation);
        }
        let chain: Vec<&Membership> = by_generation.values().copied().collect();
        for pair in chain.windows(2) {
            assert!(
                pair[1].has_majority_of(pair[0]),
                "generation {} {:?} holds no majority of generation {} {:?}",
                pair[1].generation,
                slots_of(pair[1]),
                pair[0].generation,
                slots_of(pair[0])
            );
        }
    }

    /// The common generation, if every slot runs it with every slot in it.
    fn converged(&self) -> Result<u64, String> {
        let mut common = None;
        for (i, node) in self.nodes.iter().enumerate() {
            let m = node.machine.as_ref().ok_or(format!("slot {i} is down"))?;
            let Some(membership) = m.membership() else {
                return Err(format!("slot {i} is {:?} (promised {}, generation {})", m.phase(), m.promised(), m.generation()));
            };
            if membership.members.len() != self.nodes.len() {
                return Err(format!("slot {i} runs generation {} of {:?}", membership.generation, slots_of(membership)));
            }
            match common {
                None => common = Some(membership.generation),
                Some(g) if g != membership.generation => {
                    return Err(format!("slot {i} runs generation {} but another runs {g}", membership.generation));
                }
                Some(_) => {}
            }
        }
        common.ok_or_else(|| "no slots".to_string())
    }

    /// The last events, for a failure message.
    fn log_tail(&self) -> String {
        let from = self.events.len().saturating_sub(40);
        self.events[from..].iter().map(|(t, s, e)| format!("{t:?} {s}: {e:?}\n")).collect()
    }
}

/// All workers started together and left to form; returns the formed generation.
fn formed(slots: u32, seed: u64) -> (Sim, u64) {
    let mut sim = Sim::standard(slots, seed);
    sim.start_all();
    sim.run_for(secs(5));
    let generation = sim.converged().unwrap_or_else(|why| panic!("no first formation: {why}\n{}", sim.log_tail()));
    (sim, generation)
}

/// One chaos run: a minute of kills, restarts, partitions, pauses, drops and delay spikes, then
/// a reliable network with every worker up, and the checks of the file docs.
fn chaos_run(slots: u32, seed: u64) -> u64 {
    let mut sim = Sim::standard(slots, seed);
    let mut dice = Rng::stream(seed, u64::from(slots), 1);
    sim.start_all();
    sim.drop_one_in = 20;
    sim.spike_one_in = 50;
    let chaos_end = secs(60);
    while sim.time < chaos_end {
        let at = (sim.time + ms(200 + dice.below(5000))).min(chaos_end);
        sim.run_until(at);
        let i = dice.below(u64::from(slots)) as usize;
        match dice.below(7) {
            0 => sim.kill(i),
            1 | 2 if sim.nodes[i].machine.is_none() => sim.start(i),
            3 => sim.group = (0..slots).map(|_| dice.below(3)).collect(),
            4 => sim.heal(),
            5 if sim.nodes[i].machine.is_some() => sim.nodes[i].paused_until = Some(sim.time + ms(500 + dice.below(8000))),
            _ => {}
        }
    }
    // The chaos stops: every worker up and driven, the network whole and reliable.
    sim.heal();
    sim.drop_one_in = 0;
    sim.spike_one_in = 0;
    for i in 0..slots as usize {
        sim.nodes[i].paused_until = None;
        if sim.nodes[i].machine.is_none() {
            sim.start(i);
        }
    }
    let bound = 30 * HEARTBEAT + SETTLE;
    sim.run_until(chaos_end + bound);
    sim.check_safety();
    if let Err(why) = sim.converged() {
        panic!("seed {seed}, {slots} workers: not one generation of all {bound:?} after the chaos: {why}\n{}", sim.log_tail());
    }
    (0..slots as usize).map(|i| sim.machine(i).fenced()).sum()
}

#[test]
fn chaos_never_splits_the_brain_and_heals_into_one_generation() {
    let mut fenced = 0;
    for seed in 0..SEEDS {
        for slots in [4, 5] {
            fenced += chaos_run(slots, seed);
        }
    }
    assert!(fenced > 0, "no stale message was ever fenced: the chaos is too mild to test anything");
}

#[test]
fn a_full_house_forms_without_settling_and_from_disk() {
    let (sim, generation) = formed(4, 1);
    assert_eq!(generation, 1);
    assert_eq!(sim.formed.len(), 4);
    for f in &sim.formed {
        assert_eq!(f.source, StateSource::Disk, "nobody holds state yet");
        assert!(f.at < SETTLE, "all joined: nothing to settle, yet formed at {:?}", f.at);
    }
}

#[test]
fn a_job_of_one_forms_alone() {
    let mut sim = Sim::new(1, 1, |s| config(s, 1, 1));
    sim.start_all();
    sim.run_for(secs(3));
    assert_eq!(sim.converged(), Ok(1));
}

#[test]
fn the_survivors_of_a_kill_form_the_next_generation_from_memory() {
    let (mut sim, g) = formed(4, 2);
    let t0 = sim.time;
    sim.kill(3);
    sim.run_for(secs(10));
    let after = sim.formed_after(t0);
    assert_eq!(after.len(), 3, "{}", sim.log_tail());
    for f in after {
        assert_eq!(f.membership.generation, g + 1);
        assert_eq!(slots_of(&f.membership), vec![0, 1, 2]);
        assert_eq!(f.source, StateSource::Memory { from: Slot(0), tag: StateTag { generation: g, step: 1 } });
    }
    // The first survivor to notice reports slot 3 lost; the others may see that survivor's Join
    // first (it left the generation), which re-forms them just the same.
    assert!(sim.events.iter().any(|(t, _, e)| *t > t0 && *e == Event::Lost { slot: Slot(3) }));
    sim.check_safety();
}

#[test]
fn an_even_split_forms_nothing_until_healed() {
    let (mut sim, g) = formed(4, 3);
    let t0 = sim.time;
    sim.group = vec![0, 0, 1, 1];
    sim.run_for(secs(30));
    assert!(sim.formed_after(t0).is_empty(), "a half formed: {:?}", sim.formed_after(t0));
    for i in 0..4 {
        assert_eq!(sim.machine(i).phase(), Phase::Forming, "slot {i}");
    }
    sim.heal();
    sim.run_for(secs(10));
    let healed = sim.converged().unwrap_or_else(|why| panic!("{why}\n{}", sim.log_tail()));
    assert!(healed > g);
    sim.check_safety();
}

#[test]
fn one_against_three_only_the_three_form() {
    let (mut sim, g) = formed(4, 4);
    let t0 = sim.time;
    sim.group = vec![1, 0, 0, 0];
    sim.run_for(secs(15));
    let after = sim.formed_after(t0);
    assert_eq!(after.len(), 3, "{}", sim.log_tail());
    for f in after {
        assert_ne!(f.slot, Slot(0));
        assert_eq!(f.membership.generation, g + 1);
        assert_eq!(slots_of(&f.membership), vec![1, 2, 3]);
        assert_eq!(f.source, StateSource::Memory { from: Slot(1), tag: StateTag { generation: g, step: 1 } });
    }
    assert_eq!(sim.machine(0).phase(), Phase::Forming);
    // Healed, the lone worker's Joins bring it back in.
    sim.heal();
    sim.run_for(secs(10));
    assert!(sim.converged().unwrap_or_else(|why| panic!("{why}\n{}", sim.log_tail())) > g + 1);
    sim.check_safety();
}

#[test]
fn a_restarted_acceptor_keeps_its_promise() {
    let cfg = |s| config(Slot(s), 5, 5);
    let now = secs(1);
    let a = Membership::new(5, [(Slot(0), 1), (Slot(1), 1), (Slot(2), 1)]);
    let b = Membership::new(5, [(Slot(2), 1), (Slot(3), 1), (Slot(4), 1)]);
    let drain = |w: &mut Rendezvous| std::iter::from_fn(|| w.poll_transmit()).collect::<Vec<_>>();

    let mut w = Rendezvous::new(cfg(2)).unwrap();
    let mut disk = w.poll_persist();
    w.handle_message(now, Slot(0), Message::Propose { proposal: a, basis: None });
    disk = w.poll_persist().or(disk); // the driver writes it before sending the Accept
    assert_eq!(drain(&mut w), vec![(Slot(0), Message::Accept { generation: 5 })]);

    // The process dies; its successor restores the record and refuses B at the same generation.
    let mut w = Rendezvous::restore(cfg(2), disk).unwrap();
    assert_eq!(w.promised(), 5);
    w.handle_message(now, Slot(4), Message::Propose { proposal: b.clone(), basis: None });
    let out = drain(&mut w);
    assert!(matches!(out.as_slice(), [(Slot(4), Message::Reject { generation: 5, reason: RejectReason::Stale, .. })]), "{out:?}");

    // Without the record it would have accepted: A and B would both form generation 5.
    let mut forgetful = Rendezvous::new(cfg(2)).unwrap();
    forgetful.handle_message(now, Slot(4), Message::Propose { proposal: b, basis: None });
    assert_eq!(drain(&mut forgetful), vec![(Slot(4), Message::Accept { generation: 5 })]);
}

#[test]
fn a_whole_job_restart_resumes_from_disk() {
    let (mut sim, g) = formed(4, 5);
    for i in 0..4 {
        sim.kill(i);
    }
    sim.run_for(secs(2)); // what was in flight lands on dead slots
    let t0 = sim.time;
    sim.start_all();
    sim.run_for(secs(5));
    let restarted = sim.converged().unwrap_or_else(|why| panic!("{why}\n{}", sim.log_tail()));
    assert!(restarted > g, "generation {restarted} after {g}");
    let after = sim.formed_after(t0);
    assert_eq!(after.len(), 4);
    assert!(after.iter().all(|f| f.source == StateSource::Disk), "{after:?}");
    sim.check_safety();
}

#[test]
fn below_max_the_leader_settles_then_forms_and_a_late_worker_grows_it() {
    let mut sim = Sim::standard(4, 6);
    for i in 0..3 {
        sim.start(i);
    }
    sim.run_for(secs(10));
    let first = sim.formed.first().cloned().expect("three of four formed");
    assert!(first.at >= SETTLE, "formed at {:?}, before settling", first.at);
    assert!(first.at < SETTLE + secs(1), "formed at {:?}, long after settling", first.at);
    assert_eq!(slots_of(&first.membership), vec![0, 1, 2]);
    assert_eq!(sim.formed.len(), 3);

    let t0 = sim.time;
    sim.start(3);
    sim.run_for(secs(10));
    sim.converged().unwrap_or_else(|why| panic!("{why}\n{}", sim.log_tail()));
    assert!(sim.events.iter().any(|(t, _, e)| *t > t0 && *e == Event::JoinRequested { slot: Slot(3) }));
    sim.check_safety();
}

#[test]
fn a_worker_beyond_max_is_not_admitted() {
    for seed in 0..5 {
        let mut sim = Sim::new(5, seed, |s| config(s, 5, 4));
        sim.start_all();
        sim.run_for(secs(60));
        let generations: BTreeSet<u64> = sim.formed.iter().map(|f| f.membership.generation).collect();
        assert_eq!(generations.len(), 1, "seed {seed}: re-formed {generations:?}\n{}", sim.log_tail());
        assert_eq!(sim.formed.len(), 4, "seed {seed}");
        let outside: Vec<usize> = (0..5).filter(|&i| sim.machine(i).membership().is_none()).collect();
        assert_eq!(outside.len(), 1, "seed {seed}");
        assert_eq!(sim.machine(outside[0]).phase(), Phase::Forming);
        assert!(!sim.events.iter().any(|(_, _, e)| matches!(e, Event::JoinRequested { .. })), "seed {seed}");
        sim.check_safety();
    }
}

#[test]
fn a_paused_worker_is_left_behind_then_taken_back() {
    let (mut sim, g) = formed(4, 7);
    sim.nodes[2].paused_until = Some(sim.time + secs(8));
    let t0 = sim.time;
    sim.run_for(secs(7));
    // The others re-formed without it meanwhile.
    assert!(sim.formed_after(t0).iter().any(|f| f.membership.generation > g && !f.membership.contains(Slot(2))));
    sim.run_for(secs(15));
    let back = sim.converged().unwrap_or_else(|why| panic!("{why}\n{}", sim.log_tail()));
    assert!(back > g + 1);
    sim.check_safety();
}
