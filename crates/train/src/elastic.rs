//! Elastic training: one worker's loop of membership generations.
//!
//! A worker (one process, owning one replica today) does not exit when a peer is lost. It
//! takes part in the membership protocol ([`ringsam_membership`], driven over authenticated UDP
//! by [`ringsam_collective::control`] on a runtime thread of its own), and for every generation
//! that forms with it:
//! 1. resolves the members' ring addresses anew (a replaced pod keeps its name, not its IP) and
//!    forms the rings at that generation (frames of other generations are refused);
//! 2. the generation's first rank raises the run's generation record
//!    ([`crate::generation_record`]), fencing any older writer;
//! 3. takes the training state from where the protocol says: from a member's memory, streamed
//!    bit-exact over the new ring ([`Trainer::take_state_from`]), or — when no member holds
//!    any (a whole job starting or restarting) — from the newest valid checkpoint;
//! 4. trains until the end, or until the ring fails (a peer died or was cut off; the control
//!    thread aborts the rings as soon as heartbeats say a member is lost, so a stopped process is
//!    noticed in seconds, not after the ring's timeout). Then it reports the failure and waits
//!    for the next generation, its state kept in memory at the last completed step.
//!
//! The math does not depend on how many replicas a generation has (`--max_replicas` fixes the
//! micro-batches; docs/SAM.md), so a generation of fewer replicas trains the same run. One log
//! line per membership change says who is in, where the state came from, and how many steps
//! were redone. docs/ARCHITECTURE.md ("Elastic training") has the protocol and its failures.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringsam_collective::control::{Control, ControlConfig};
use ringsam_collective::transport::Refusals;
use ringsam_membership::{Event, Membership, MembershipConfig, Slot, StateSource, StateTag};

use crate::TrainError;
use crate::cluster::{Cluster, ClusterAborter, ClusterConfig, Colocated, Transport, one_thread_runtime, resolve_peer, ring_err};
use crate::config::TrainConfig;
use crate::run::{RunOptions, RunSummary};
use crate::trainer::Trainer;

/// Where this worker sits in an elastic job and how it reaches the others.
#[derive(Clone)]
pub struct ElasticConfig {
    /// This worker's slot (its pod index, or its process index under `ringsam launch`).
    pub slot: u32,
    /// Slots in the job (the most workers there can be).
    pub slots: u32,
    /// Fewest replicas a generation may have.
    pub min_replicas: u32,
    /// Most replicas a generation may have; also fixes the micro-batches (`--max_replicas`).
    pub max_replicas: u32,
    /// Heartbeat period; a member silent for three is lost.
    pub heartbeat: Duration,
    /// With fewer than max replicas present, how long re-formation waits for more.
    pub settle: Duration,
    /// Local address of the control socket (UDP).
    pub control_listen: SocketAddr,
    /// Every slot's control address, `host:port`, resolved anew before each send.
    pub control_addrs: Vec<String>,
    /// Every slot's ring address, `host:port`, resolved anew for each generation.
    pub ring_addrs: Vec<String>,
    /// The cluster secret (authenticates control datagrams).
    pub secret: Vec<u8>,
    /// Ring transport and credentials.
    pub transport: Transport,
    /// How long forming a generation's rings may take.
    pub connect_timeout: Duration,
    /// Silence from a ring peer that owes data after which the ring fails.
    pub peer_timeout: Duration,
    /// Where refused ring connections are reported.
    pub on_refusal: Option<Refusals>,
    /// The slots that live in this process (a worker's local replicas), indexed by slot, not by
    /// rank: each generation's rings meet those of them that are members over pipes.
    pub colocated: Option<Colocated>,
}

/// Trains `cfg` as one worker of an elastic job (see the module docs).
pub fn train_elastic(
    cfg: &TrainConfig,
    ecfg: &ElasticConfig,
    opts: &RunOptions,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary, TrainError> {
    let cfg = elastic_train_config(cfg, ecfg)?;
    let run_dir = cfg.output_dir.join(cfg.run_subdir());
    let runtime = one_thread_runtime("ringsam-control")?;
    // The rings of the generation in progress, for the control thread to abort on a loss.
    let current: Arc<Mutex<ClusterAborter>> = Arc::default();
    let control = start_control(&runtime, ecfg, &run_dir, current.clone())?;
    let mut trainer = Trainer::build(&cfg, opts, None, log)?;
    let mut held: Option<StateTag> = None; // the state this worker holds in memory
    let mut lost_at: Option<Instant> = None;
    let mut failing_since: Option<Instant> = None; // rings failing to form since then
    loop {
        control.set_state(held);
        let (membership, source, rank) = match wait_formed(&control, opts, &mut trainer, &run_dir, ecfg.connect_timeout)? {
            Waited::Formed(m, source, rank) => (m, source, rank),
            Waited::RunFinished { step, generation } => {
                trainer.log(&format!(
                    "generation {generation} finished the run at step {step} while this worker was out of it \
                     (at step {}); leaving without a checkpoint",
                    trainer.steps()
                ));
                return Ok(trainer.left_out(step));
            }
        };
        let generation = membership.generation;
        let started = Instant::now();
        let cluster = match connect(ecfg, &membership, rank, opts, &mut |l| trainer.log(l)) {
            Ok(c) => {
                failing_since = None;
                c
            }
            Err(TrainError::Stopped(why)) => return Err(TrainError::Stopped(why)),
            Err(e) => {
                // Rings that keep failing to form for the whole connect timeout (a peer's name
                // never resolves, a firewall): exit, so that the pod is replaced and the operator
                // sees why, instead of re-forming forever.
                let since = *failing_since.get_or_insert(started);
                if since.elapsed() >= ecfg.connect_timeout {
                    return Err(ring_err(
                        "forming the rings",
                        format!("no generation formed in {} s of trying; the last failure: {e}", ecfg.connect_timeout.as_secs()),
                    ));
                }
                trainer.log(&format!("generation {generation}: forming the rings failed ({e}); re-forming"));
                control.ring_failed(generation);
                continue;
            }
        };
        *current.lock().unwrap_or_else(|p| p.into_inner()) = cluster.aborter();
        trainer.attach(Some(cluster), generation)?;
        match recover(&mut trainer, &run_dir, &membership, &source, rank, held) {
            Ok(how) => {
                let since_loss =
                    lost_at.take().map_or_else(String::new, |t| format!(", {:.1} s after the loss", t.elapsed().as_secs_f64()));
                let slots: Vec<String> = membership.slots().map(|s| s.0.to_string()).collect();
                trainer.log(&format!(
                    "generation {generation}: {} replicas (slots {}), rank {rank}; {how}; ready in {:.1} s{since_loss}",
                    membership.world(),
                    slots.join(","),
                    started.elapsed().as_secs_f64()
                ));
                crate::telemetry::membership_changed(generation, how.redone.unwrap_or(0), started.elapsed().as_secs_f64());
            }
            // A transfer whose copies disagree (`Diverged`: the replicas' fingerprints differ after
            // it) is retried by a new generation: a member that lacked the state still lacks it
            // and says so, and the others still hold theirs.
            Err(e) if is_loss(&e) || matches!(e, TrainError::Diverged(_)) => {
                trainer.log(&format!("generation {generation}: recovery failed ({e}); re-forming"));
                control.ring_failed(generation);
                trainer.attach(None, generation)?;
                continue;
            }
            Err(e) => return Err(e),
        }
        match trainer.run_to_end() {
            Ok(()) => {
                let summary = trainer.finish()?;
                if rank == 0 {
                    // After the final checkpoint: a worker cut off now will find it and leave.
                    crate::finished_record::write(&run_dir, summary.steps, generation)?;
                }
                return Ok(summary);
            }
            Err(e) if is_loss(&e) => {
                lost_at = Some(Instant::now());
                held = Some(StateTag { generation, step: trainer.steps() });
                trainer.log(&format!("generation {generation}: lost a peer at step {} ({e}); re-forming", trainer.steps()));
                control.ring_failed(generation);
                trainer.attach(None, generation)?;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The run's configuration as the job fixes it: the micro-batches come from `--max_replicas`.
fn elastic_train_config(cfg: &TrainConfig, ecfg: &ElasticConfig) -> Result<TrainConfig, TrainError> {
    let max = ecfg.max_replicas as usize;
    match cfg.max_replicas {
        Some(m) if m != max => Err(TrainError::Config(format!("--max_replicas {m} differs from the elastic job's {max}"))),
        _ => Ok(TrainConfig { max_replicas: Some(max), ..cfg.clone() }),
    }
}

/// Starts the membership protocol; a loss it sees aborts the rings in [`ClusterAborter`] `current`.
fn start_control(
    runtime: &tokio::runtime::Runtime,
    ecfg: &ElasticConfig,
    run_dir: &std::path::Path,
    current: Arc<Mutex<ClusterAborter>>,
) -> Result<Control, TrainError> {
    let membership = MembershipConfig::new(Slot(ecfg.slot), 1, ecfg.slots, ecfg.min_replicas, ecfg.max_replicas, ecfg.heartbeat)
        .map(|c| MembershipConfig { settle: ecfg.settle, ..c })
        .map_err(|e| TrainError::Config(e.to_string()))?;
    let record_path: PathBuf = run_dir.join("membership").join(format!("slot-{}.record", ecfg.slot));
    if let Some(dir) = record_path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| TrainError::Output { path: dir.display().to_string(), source })?;
    }
    let control_cfg = ControlConfig {
        membership,
        listen: ecfg.control_listen,
        addresses: ecfg.control_addrs.clone(),
        secret: ecfg.secret.clone(),
        record_path,
        on_event: Some(Arc::new(move |e: &Event| {
            if let Event::Reforming { reason } = e {
                current.lock().unwrap_or_else(|p| p.into_inner()).abort(reason);
            }
        })),
    };
    Control::start(runtime.handle(), control_cfg).map_err(TrainError::Config)
}

/// How waiting for a generation ended.
enum Waited {
    /// A generation with this worker in it: its membership, where its state comes from, and
    /// this worker's rank.
    Formed(Membership, StateSource, usize),
    /// Others finished the run meanwhile ([`crate::finished_record`]).
    RunFinished { step: u64, generation: u64 },
}

/// Waits for a generation with this worker in it, or for the run to be finished by others;
/// logs the changes on the way.
/// Gives up after `timeout` without one (too few workers came: the pod exits 1 and is replaced,
/// which also tells the operator, rather than waiting unseen forever).
fn wait_formed(
    control: &Control,
    opts: &RunOptions,
    trainer: &mut Trainer<'_>,
    run_dir: &std::path::Path,
    timeout: Duration,
) -> Result<Waited, TrainError> {
    let target = trainer.target_steps();
    let deadline = Instant::now() + timeout;
    loop {
        if opts.stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(TrainError::Stopped(format!("while re-forming at step {}", trainer.steps())));
        }
        if Instant::now() >= deadline {
            return Err(ring_err(
                "waiting for a generation",
                format!("too few workers answered in {} s (--connect_timeout) to form one", timeout.as_secs()),
            ));
        }
        if let Some((step, generation)) = crate::finished_record::read(run_dir).filter(|&(step, _)| step >= target) {
            return Ok(Waited::RunFinished { step, generation });
        }
        match control.next_event(Duration::from_millis(200)) {
            Some(Event::Formed { membership, source, rank }) => return Ok(Waited::Formed(membership, source, rank as usize)),
            Some(Event::Lost { slot }) => trainer.log(&format!("lost {slot}")),
            Some(Event::JoinRequested { slot }) => trainer.log(&format!("{slot} asks to join: re-forming to take it in")),
            Some(Event::Reforming { reason }) => trainer.log(&format!("re-forming: {reason}")),
            None => {}
        }
    }
}

/// The generation's rings, members' addresses resolved now.
fn connect(
    ecfg: &ElasticConfig,
    membership: &Membership,
    rank: usize,
    opts: &RunOptions,
    log: &mut dyn FnMut(&str),
) -> Result<Cluster, TrainError> {
    let mut peers = Vec::new();
    let deadline = Instant::now() + ecfg.connect_timeout;
    for slot in membership.slots() {
        let name = ecfg.ring_addrs.get(slot.0 as usize).ok_or_else(|| TrainError::Config(format!("no ring address for {slot}")))?;
        peers.push(resolve_peer(name, deadline, &opts.stop, log)?);
    }
    let generation = u32::try_from(membership.generation)
        .map_err(|_| TrainError::Runtime(format!("generation {} is past the ring's 32 bits", membership.generation)))?;
    let cfg = ClusterConfig {
        rank,
        peers,
        group_size: None,
        transport: ecfg.transport.clone(),
        connect_timeout: ecfg.connect_timeout,
        peer_timeout: ecfg.peer_timeout,
        on_refusal: ecfg.on_refusal.clone(),
        generation,
        // By slot → by this generation's rank (the members, in rank order).
        colocated: ecfg.colocated.as_ref().map(|c| Colocated {
            links: c.links.clone(),
            here: membership.slots().map(|s| c.here.get(s.0 as usize).copied().unwrap_or(false)).collect(),
        }),
    };
    Cluster::connect(&cfg, &opts.stop)
}

/// How a generation got its state.
struct Recovered {
    from: String,
    /// Steps this worker had completed and lost (None: it held no state, so it cannot tell).
    redone: Option<u64>,
}

impl std::fmt::Display for Recovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.redone {
            Some(n) => write!(f, "{}, {n} steps redone", self.from),
            None => write!(f, "{}", self.from),
        }
    }
}

/// Step 3 of the module docs.
fn recover(
    trainer: &mut Trainer<'_>,
    run_dir: &std::path::Path,
    membership: &Membership,
    source: &StateSource,
    rank: usize,
    held: Option<StateTag>,
) -> Result<Recovered, TrainError> {
    if rank == 0 {
        crate::generation_record::raise(run_dir, membership.generation)?;
    }
    let from = match source {
        StateSource::Memory { from, tag } => {
            let from_rank = membership.rank_of(*from).ok_or_else(|| TrainError::Runtime(format!("state source {from} is not a member")))?;
            trainer.take_state_from(from_rank as usize)?;
            format!("state from the memory of {from} at step {}", tag.step)
        }
        StateSource::Disk => {
            trainer.resume()?;
            format!("state from disk at step {}", trainer.steps())
        }
    };
    let redone = held.map(|t| t.step.saturating_sub(trainer.steps()));
    Ok(Recovered { from, redone })
}

/// Errors that mean "a peer is gone or this generation is over", not "this run is broken".
fn is_loss(e: &TrainError) -> bool {
    matches!(e, TrainError::Ring(_) | TrainError::Fenced(_))
}
