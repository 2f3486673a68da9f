//! A replica's link to the other replicas: the rings it all-reduces over.
//!
//! Every replica (one per process, or per thread in tests) forms the world ring, and — with
//! `--inner_group_size G` — a second ring over its group of `G` consecutive ranks, which the SAM
//! ascent gradient is averaged over (the reference's replica groups). The rings' drivers run on
//! a tokio runtime with one worker thread owned here, so an all-reduce progresses while the
//! training thread computes: [`Cluster::submit_mean`] returns at once, [`PendingAllreduce::wait`]
//! blocks the training thread until the result is in.
//!
//! Addresses: `peers[r]` is where rank `r` listens for the world ring; the group ring listens on
//! the same host at the next port. Neighbours in this process ([`Colocated`]) are met over
//! in-memory pipes instead: nothing listens for them. Transports are the collective crate's:
//! QUIC (mutual TLS with a cluster CA) or TCP (HMAC handshake over a cluster secret).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringsam_collective::local_link::{InProcess, LocalLinks};
use ringsam_collective::transport::{Link, form_ring};
use ringsam_collective::{PendingAllreduce, ReduceOp, RingConfig, RingHandle, Values, group_of};

use crate::TrainError;

pub use ringsam_collective::transport::Transport;

/// Where this replica sits and how to reach the others.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// This replica's rank.
    pub rank: usize,
    /// Every rank's world-ring listen address, in rank order (`peers.len()` is the world size).
    pub peers: Vec<SocketAddr>,
    /// Average the ascent gradient within groups of this many consecutive ranks (None: world).
    pub group_size: Option<usize>,
    /// Transport and credentials.
    pub transport: Transport,
    /// How long to wait for the rings to form.
    pub connect_timeout: Duration,
    /// Silence from a peer that owes data after which every pending operation fails.
    pub peer_timeout: Duration,
    /// Where connections the rings refuse are reported (log them, count them).
    pub on_refusal: Option<ringsam_collective::transport::Refusals>,
    /// The membership generation these rings belong to (0 outside elastic runs): frames and
    /// handshakes of other generations are refused, so a stale peer cannot join or feed them.
    pub generation: u32,
    /// The ranks that live in this process, met over pipes (None: every link is a socket).
    pub colocated: Option<Colocated>,
}

/// A worker's local replicas ([`ringsam_collective::local_link`]): a link between two of them is
/// an in-memory pipe, not a loopback socket. Every replica of the process gets the same one.
#[derive(Clone, Debug)]
pub struct Colocated {
    /// The mailboxes where their pipes meet.
    pub links: std::sync::Arc<LocalLinks>,
    /// By rank: whether that rank lives in this process.
    pub here: Vec<bool>,
}

impl Colocated {
    /// Which neighbours of the rank at `position` of a ring over `members` (ranks) live here.
    fn neighbours(&self, members: std::ops::Range<usize>, position: usize) -> InProcess {
        let n = members.len();
        let here = |p: usize| self.here.get(members.start + p).copied().unwrap_or(false);
        InProcess { links: self.links.clone(), prev: here((position + n - 1) % n), next: here((position + 1) % n) }
    }
}

/// Which ring an exchange runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// All replicas.
    World,
    /// This replica's group (the world when there are no groups).
    Group,
}

/// The formed rings (see the module docs).
pub struct Cluster {
    rank: usize,
    world: usize,
    group: std::ops::Range<usize>, // the ranks of this replica's group (the world without groups)
    world_ring: RingHandle,
    group_ring: Option<RingHandle>,
    // Dropped last: the drivers' tasks live on it.
    runtime: tokio::runtime::Runtime,
}

impl Cluster {
    /// Forms the world ring (and the group ring), waiting up to `connect_timeout`, or until
    /// `stop` is set (a signal while waiting for peers ends the wait, not only the training).
    pub fn connect(cfg: &ClusterConfig, stop: &AtomicBool) -> Result<Cluster, TrainError> {
        let world = cfg.peers.len();
        if cfg.rank >= world {
            return Err(TrainError::Config(format!("rank {} is not below the world size {world}", cfg.rank)));
        }
        let runtime = one_thread_runtime("ringsam-ring")?;
        let mut ring = RingConfig::new(cfg.rank, world);
        ring.peer_timeout = cfg.peer_timeout;
        ring.generation = cfg.generation;
        if let Some(c) = cfg.colocated.as_ref().filter(|c| c.here.len() != world) {
            return Err(TrainError::Config(format!("{} ranks marked in this process or not, for a world of {world}", c.here.len())));
        }
        let next = cfg.peers[(cfg.rank + 1) % world];
        let beside = cfg.colocated.as_ref().map(|c| c.neighbours(0..world, cfg.rank));
        let world_ring = runtime
            .block_on(until_stopped(form(cfg, ring, cfg.peers[cfg.rank], next, beside), stop))?
            .map_err(|e| ring_err("the world ring", e))?;
        let mut group_ranks = 0..world;
        let group_ring = match cfg.group_size {
            Some(g) if g != world => {
                let group = group_of(cfg.rank, world, g).map_err(TrainError::Config)?;
                group_ranks = group.members.clone();
                let mut gr = RingConfig::new(group.position, g);
                gr.peer_timeout = cfg.peer_timeout;
                gr.ring_id = group.id;
                gr.generation = cfg.generation;
                let next = group.members.start + (group.position + 1) % g;
                let bump = |a: SocketAddr| -> Result<SocketAddr, TrainError> {
                    let b = a.port().checked_add(1).map(|p| SocketAddr::new(a.ip(), p));
                    match b {
                        Some(b) if !cfg.peers.contains(&b) => Ok(b),
                        _ => Err(TrainError::Config(format!(
                            "the group ring listens on the port after {a}, which is not free for it (past 65535 or another rank's address): space the peers' ports by 2"
                        ))),
                    }
                };
                let (listen, to) = (bump(cfg.peers[cfg.rank])?, bump(cfg.peers[next])?);
                let beside = cfg.colocated.as_ref().map(|c| c.neighbours(group.members.clone(), group.position));
                let h = runtime
                    .block_on(until_stopped(form(cfg, gr, listen, to, beside), stop))?
                    .map_err(|e| ring_err(&format!("group ring {}", group.id), e))?;
                Some(h)
            }
            _ => None,
        };
        Ok(Cluster { rank: cfg.rank, world, group: group_ranks, world_ring, group_ring, runtime })
    }

    /// This replica's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Replicas in the world.
    pub fn world(&self) -> usize {
        self.world
    }

    /// The ranks of this replica's group (`--inner_group_size`; the world without groups).
    pub fn group_ranks(&self) -> std::ops::Range<usize> {
        self.group.clone()
    }

    /// Starts summing `data` over `scope`; returns at once (see the module docs). The sum comes
    /// back in `data`'s own storage (a `Vec`, or pinned memory a device copies from).
    pub fn submit_sum<V: Values>(&mut self, scope: Scope, data: V) -> Result<PendingAllreduce<V>, TrainError> {
        let ring = match (scope, self.group_ring.as_mut()) {
            (Scope::Group, Some(g)) => g,
            _ => &mut self.world_ring,
        };
        ring.submit_values(data, ReduceOp::Sum).map_err(|e| ring_err("all-reduce", e))
    }

    /// Sums `data` over all replicas and waits for the result (bookkeeping: evaluation sums,
    /// stop votes, parameter fingerprints).
    pub fn sum(&mut self, data: Vec<f32>) -> Result<Vec<f32>, TrainError> {
        self.world_ring.submit(data, ReduceOp::Sum).and_then(PendingAllreduce::wait).map_err(|e| ring_err("all-reduce", e))
    }

    /// Fails this cluster's operations from another thread (see [`RingHandle::aborter`]).
    pub fn aborter(&self) -> ClusterAborter {
        ClusterAborter(std::iter::once(&self.world_ring).chain(&self.group_ring).map(RingHandle::aborter).collect())
    }

    /// Every replica's copy of `data` as replica `from` holds it, over the world ring. Every
    /// replica passes a buffer of the same length (the others' contents are ignored). A sum in
    /// which the others add −0.0: `x + (−0.0) = x` for every `x`, −0.0 and NaN included, so the
    /// copy is bit-exact whatever the ring's order of additions.
    pub fn broadcast(&mut self, from: usize, mut data: Vec<f32>) -> Result<Vec<f32>, TrainError> {
        if self.rank != from {
            data.fill(-0.0);
        }
        self.sum(data)
    }

    /// Closes both rings cleanly (frames still queued are written first).
    pub fn close(self) {
        let Cluster { world_ring, group_ring, runtime, .. } = self;
        runtime.block_on(async move {
            if let Some(g) = group_ring {
                g.close().await;
            }
            world_ring.close().await;
        });
    }
}

/// Fails a [`Cluster`]'s operations from another thread: a membership loss seen by heartbeats.
#[derive(Clone, Debug, Default)]
pub struct ClusterAborter(Vec<ringsam_collective::RingAborter>);

impl ClusterAborter {
    /// Every pending and later operation of the cluster fails with `why`.
    pub fn abort(&self, why: &str) {
        for a in &self.0 {
            a.abort(why);
        }
    }
}

/// A tokio runtime with one worker thread named `name`: what a replica's rings (or its
/// membership protocol) run on, beside the training thread.
pub fn one_thread_runtime(name: &str) -> Result<tokio::runtime::Runtime, TrainError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| TrainError::Runtime(format!("starting the {name} runtime: {e}")))
}

/// Resolves a peer's `host:port`, waiting for its DNS record until `deadline` (or `stop`): a pod's
/// record appears only once the pod exists, and a replaced pod's record changes. Retries back off
/// from 100 ms to 5 s, so a thousand pods waiting for a late one do not flood the cluster's DNS.
/// `waiting` hears once that the name does not resolve yet.
pub fn resolve_peer(name: &str, deadline: Instant, stop: &AtomicBool, waiting: &mut dyn FnMut(&str)) -> Result<SocketAddr, TrainError> {
    let mut pause = Duration::from_millis(100);
    let mut told = false;
    loop {
        let why = match name.to_socket_addrs() {
            Ok(mut addrs) => match addrs.next() {
                Some(a) => return Ok(a),
                None => "no address".to_string(),
            },
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return Err(TrainError::Config(format!("peer address {name:?}: {e} (expected host:port)")));
            }
            Err(e) => e.to_string(),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(ring_err("resolving a peer", format!("{name} does not resolve ({why})")));
        }
        if !told {
            waiting(&format!("waiting for {name} to resolve ({why})"));
            told = true;
        }
        let until = (now + pause).min(deadline);
        while Instant::now() < until {
            if stop.load(Ordering::SeqCst) {
                return Err(TrainError::Stopped(format!("while resolving peer {name}")));
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(100)));
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// A ring failure as a training error.
pub fn ring_err(what: &str, e: impl std::fmt::Display) -> TrainError {
    TrainError::Ring(format!("{what}: {e}"))
}

/// `work`, unless `stop` is set first (checked every 100 ms).
async fn until_stopped<T>(work: impl std::future::Future<Output = T>, stop: &AtomicBool) -> Result<T, TrainError> {
    let stopped = async {
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        out = work => Ok(out),
        () = stopped => Err(TrainError::Stopped("while forming the ring".into())),
    }
}

async fn form(
    cfg: &ClusterConfig,
    ring: RingConfig,
    listen: SocketAddr,
    next: SocketAddr,
    in_process: Option<InProcess>,
) -> Result<RingHandle, String> {
    let link = Link { listen, next, connect_timeout: cfg.connect_timeout, on_refusal: cfg.on_refusal.clone(), in_process };
    form_ring(&cfg.transport, ring, link).await.map(|(handle, _)| handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_in_this_process_follow_the_ring_or_the_group() {
        let c = Colocated { links: LocalLinks::new(), here: vec![false, true, true, false] };
        let sides = |members: std::ops::Range<usize>, position: usize| {
            let n = c.neighbours(members, position);
            (n.prev, n.next)
        };
        // The world ring 0 → 1 → 2 → 3 → 0: ranks 1 and 2 share this process.
        assert_eq!(
            [sides(0..4, 0), sides(0..4, 1), sides(0..4, 2), sides(0..4, 3)],
            [(false, true), (false, true), (true, false), (true, false)]
        );
        // Group rings of 2 (ranks 0-1 and 2-3): within a group, prev and next are the other member.
        assert_eq!(
            [sides(0..2, 0), sides(0..2, 1), sides(2..4, 0), sides(2..4, 1)],
            [(true, true), (false, false), (false, false), (true, true)]
        );
    }

    #[test]
    fn a_peer_resolves_at_once_or_is_waited_for_until_the_deadline() {
        let stop = AtomicBool::new(false);
        let mut heard = Vec::new();
        let soon = Instant::now() + Duration::from_secs(5);
        let a = resolve_peer("127.0.0.1:29500", soon, &stop, &mut |l| heard.push(l.to_string())).unwrap();
        assert_eq!(a, "127.0.0.1:29500".parse().unwrap());
        assert!(heard.is_empty());

        // `.invalid` never resolves (RFC 6761): waited for, told once, then a ring error.
        let t0 = Instant::now();
        let e = resolve_peer("ringsam-9.nowhere.invalid:29500", t0 + Duration::from_millis(400), &stop, &mut |l| heard.push(l.to_string()))
            .unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(400), "gave up early: {e}");
        assert!(matches!(e, TrainError::Ring(ref m) if m.contains("ringsam-9.nowhere.invalid:29500")), "{e}");
        assert_eq!(heard.len(), 1, "{heard:?}");
    }

    #[test]
    fn a_malformed_address_is_a_configuration_error_and_a_stop_ends_the_wait() {
        let stop = AtomicBool::new(false);
        let later = Instant::now() + Duration::from_secs(60);
        let e = resolve_peer("ringsam-0.ringsam", later, &stop, &mut |_| {}).unwrap_err();
        assert!(matches!(e, TrainError::Config(_)), "{e}");
        stop.store(true, Ordering::SeqCst);
        let t0 = Instant::now();
        let e = resolve_peer("ringsam-9.nowhere.invalid:1", later, &stop, &mut |_| {}).unwrap_err();
        assert!(matches!(e, TrainError::Stopped(_)) && t0.elapsed() < Duration::from_secs(5), "{e}");
    }
}
