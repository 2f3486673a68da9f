//! `ringsam train`, `ringsam eval`, `ringsam worker` (one replica of a data-parallel job) and
//! `ringsam launch` (N local workers on loopback, like `torchrun --standalone`).
//!
//! A worker learns its place from flags or the environment: `RINGSAM_RANK` (or Kubernetes'
//! `JOB_COMPLETION_INDEX`), `RINGSAM_WORLD_SIZE`, and the peers as `RINGSAM_PEERS`
//! (`host:port,...` in rank order) or `RINGSAM_PEER_PATTERN` (`ringsam-{i}.ringsam:29500`, `{i}`
//! replaced by each rank: an Indexed Job behind a headless Service). Names are resolved until the
//! connect timeout, since peers' DNS records appear as their pods start.

use std::io::IsTerminal;
use std::path::PathBuf;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{ArgMatches, Args};
use ringsam_collective::local_ranks::LocalRanks;
use ringsam_collective::quic::QuicTuning;
use ringsam_train::cluster::{Cluster, ClusterConfig, Colocated, Transport, resolve_peer};
use ringsam_train::run::{RunOptions, train, train_replica};

use crate::process::{available_memory, cluster_secret, stop_on_signals, stopped, usage};
use crate::train_args::{TrainArgs, check_train_words, resolve_train_config};

/// `--transport` of `worker` and `launch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TransportName {
    /// TLS 1.3 with mutual certificates from the cluster CA.
    Quic,
    /// An HMAC handshake over RINGSAM_CLUSTER_SECRET; frames are not encrypted.
    Tcp,
}

impl TransportName {
    fn as_str(self) -> &'static str {
        match self {
            TransportName::Quic => "quic",
            TransportName::Tcp => "tcp",
        }
    }
}

/// `ringsam worker`.
#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct WorkerArgs {
    /// This replica's rank (default: $RINGSAM_RANK, else $JOB_COMPLETION_INDEX).
    #[arg(long, env = "RINGSAM_RANK")]
    pub rank: Option<usize>,
    /// Replicas in the job.
    #[arg(long, env = "RINGSAM_WORLD_SIZE")]
    pub world_size: usize,
    /// Every rank's ring address, in rank order (host:port, comma-separated).
    #[arg(long, env = "RINGSAM_PEERS", value_delimiter = ',', conflicts_with = "peer_pattern")]
    pub peers: Vec<String>,
    /// Peer addresses from a pattern with `{i}` for the rank, e.g. `ringsam-{i}.ringsam:29500`.
    #[arg(long, env = "RINGSAM_PEER_PATTERN")]
    pub peer_pattern: Option<String>,
    /// quic (TLS 1.3, mutual certificates) or tcp (HMAC handshake over RINGSAM_CLUSTER_SECRET).
    #[arg(long, env = "RINGSAM_TRANSPORT", value_enum, default_value_t = TransportName::Quic)]
    pub transport: TransportName,
    /// Cluster CA certificate (QUIC).
    #[arg(long, env = "RINGSAM_CA")]
    pub ca: Option<PathBuf>,
    /// This node's certificate (QUIC).
    #[arg(long, env = "RINGSAM_CERT")]
    pub cert: Option<PathBuf>,
    /// This node's private key (QUIC).
    #[arg(long, env = "RINGSAM_KEY")]
    pub key: Option<PathBuf>,
    /// What drives QUIC's connections: direct (two threads per ring over quinn-proto; Linux,
    /// the default there) or quinn (quinn's async driver). Workers `launch` starts read
    /// RINGSAM_QUIC_DRIVER from its environment.
    #[arg(long, env = "RINGSAM_QUIC_DRIVER", default_value_t = ringsam_collective::quic::QuicDriver::default(),
          value_parser = ringsam_collective::quic::QuicDriver::parse)]
    pub quic_driver: ringsam_collective::quic::QuicDriver,
    /// Seconds to wait for every peer to come up and the rings to form (1 to a week).
    #[arg(long, env = "RINGSAM_CONNECT_TIMEOUT", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=ringsam_train::config::MAX_TIMEOUT_SECONDS))]
    pub connect_timeout: u64,
    /// Elastic training: the fewest replicas a generation may train with. A lost peer then makes
    /// the others re-form without it (and take it back when it returns) instead of failing;
    /// --rank is the worker's slot and --world_size the number of slots (with --local_replicas N:
    /// world_size·N slots, replica i being slot rank·N + i; --min_replicas and --max_replicas count
    /// slots). UDP port (ring port + 1) carries the membership protocol. Needs
    /// RINGSAM_CLUSTER_SECRET. Default: not elastic.
    #[arg(long, env = "RINGSAM_MIN_REPLICAS")]
    pub min_replicas: Option<u32>,
    /// Elastic: seconds between heartbeats; a peer silent for three is lost (0.05 to 60).
    #[arg(long, env = "RINGSAM_HEARTBEAT_SECONDS", default_value_t = 1.0)]
    pub heartbeat_seconds: f64,
    /// Elastic: with fewer than --max_replicas workers present, how long re-formation waits for
    /// more before it forms with those present (0 to 3600).
    #[arg(long, env = "RINGSAM_RENDEZVOUS_SETTLE_SECONDS", default_value_t = 10.0)]
    pub rendezvous_settle_seconds: f64,
    /// Replicas this worker runs (a pod owning its node's GPUs): with `--device cuda`, replica i
    /// on cuda:i (with `--device cuda:K`, all of them share cuda:K). They are ranks rank·N … rank·N + N − 1 of a job of world_size·N replicas, and
    /// replica i's ring address is its peer address's port + 2i (elastic: each is a slot of its
    /// own). They meet each other over in-process pipes: a replica listens at its address only
    /// when its previous rank is in another process (replica 0, or the first of this pod's
    /// replicas in an elastic generation).
    #[arg(long, env = "RINGSAM_LOCAL_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=MAX_LOCAL_REPLICAS))]
    pub local_replicas: u32,
    /// Training flags, as for `ringsam train`.
    #[command(flatten)]
    pub train: TrainArgs,
}

/// The most replicas one worker runs (GPUs of one node, with room to spare).
const MAX_LOCAL_REPLICAS: i64 = 64;

/// `ringsam launch`.
#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct LaunchArgs {
    /// Local worker processes (replicas).
    #[arg(long, default_value_t = 2)]
    pub nproc: usize,
    /// One worker per GPU of this host instead, worker r on cuda:r: `all` (every GPU the driver
    /// sees) or a count (needs a `--features cuda` build).
    #[arg(long, conflicts_with = "nproc")]
    pub gpus: Option<String>,
    /// quic or tcp.
    #[arg(long, value_enum, default_value_t = TransportName::Quic)]
    pub transport: TransportName,
    /// Serve each worker's Prometheus metrics on 127.0.0.1:PORT+rank.
    #[arg(long)]
    pub metrics_port: Option<u16>,
    /// Elastic workers (see `ringsam worker --min_replicas`): a lost worker makes the others
    /// re-form with at least this many, and takes it back when it returns.
    #[arg(long)]
    pub min_replicas: Option<u32>,
    /// Elastic: start a worker that died (exit code 1 or a signal; never one refused for its
    /// flags, code 2) again, at most this many times over the whole job. The others go on.
    #[arg(long, default_value_t = 0, requires = "min_replicas")]
    pub max_restarts: u32,
    /// `--` then the training flags every worker gets (as for `ringsam train`).
    #[arg(last = true)]
    pub train_args: Vec<String>,
}

/// Runs one replica, or `--local_replicas` of them (one per GPU of the node).
pub fn cmd_worker(args: &WorkerArgs, matches: &clap::ArgMatches) -> Result<()> {
    // Signals count from the start: a worker waiting minutes for its peers must still stop.
    let stop = stop_on_signals()?;
    let mut cfg = resolve_train_config(&args.train, matches)?;
    let pod = match args.rank {
        Some(r) => r,
        None => std::env::var("JOB_COMPLETION_INDEX")
            .ok()
            .and_then(|v| v.parse().ok())
            .context("no --rank, RINGSAM_RANK or JOB_COMPLETION_INDEX")?,
    };
    let pods = args.world_size;
    if pods == 0 || pod >= pods {
        return Err(usage(format!("rank {pod} must be below --world_size {pods}")));
    }
    let local = args.local_replicas as usize;
    if local > 1 && cfg.loader_workers == 0 {
        // The node's decoders are split among its replicas (each would take a quarter of the
        // cores); the engine's pool is the process's, shared by all of them.
        cfg.loader_workers = (ringsam_train::data_source::auto_loader_workers() / local).max(1);
        eprintln!(
            "ringsam: {local} local replicas: {} decoder thread(s) each, the engine's {} thread(s) shared",
            cfg.loader_workers,
            ringsam_tensor::threads::current()
        );
    }
    // The devices before the ring: a wrong --device shows at once, and the peers wait for
    // nobody's kernels to compile.
    let gpus = crate::worker_local::open_devices(&args.train, pod, local)?;
    let names: Vec<String> = match &args.peer_pattern {
        Some(p) if p.contains("{i}") => (0..pods).map(|i| p.replace("{i}", &i.to_string())).collect(),
        Some(p) => return Err(usage(format!("--peer_pattern {p:?} has no {{i}} for the rank"))),
        None => args.peers.clone(),
    };
    if names.len() != pods {
        return Err(usage(format!(
            "{} peer addresses for --world_size {pods} (give --peers in rank order or --peer_pattern)",
            names.len()
        )));
    }
    let transport = transport_of(args)?;
    // One metrics endpoint per process, labelled with its first replica's rank.
    serve_metrics(&args.train, pod * local, &|l| eprintln!("ringsam: rank {}: {l}", pod * local))?;
    let (names, cfg) = (crate::worker_local::replica_addresses(&names, local)?, &cfg);
    let links = RingLinks { transport, colocated: crate::worker_local::colocated(names.len(), pod, local) };
    crate::worker_local::run_each(gpus, pod * local, &stop, |i, gpu| {
        let rank = pod * local + i;
        let progress = rank == 0 && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let opts = RunOptions { progress, stop: stop.clone(), memory_limit: available_memory(), gpu };
        match args.min_replicas {
            // Each local replica is a slot of its own.
            Some(min) => crate::worker_elastic::worker_elastic(args, cfg, rank, min, names.clone(), links.clone(), opts),
            None => run_replica(args, cfg, &names, rank, links.clone(), opts),
        }
    })
}

/// How a replica reaches the others: the transport, and which ranks share its process.
#[derive(Clone)]
pub(crate) struct RingLinks {
    pub(crate) transport: Transport,
    pub(crate) colocated: Option<Colocated>,
}

/// One replica of the job at `rank`, its ring at `names[rank]`.
fn run_replica(
    args: &WorkerArgs,
    cfg: &ringsam_train::config::TrainConfig,
    names: &[String],
    rank: usize,
    RingLinks { transport, colocated }: RingLinks,
    opts: RunOptions,
) -> Result<()> {
    let timeout = Duration::from_secs(args.connect_timeout);
    let deadline = Instant::now() + timeout;
    let waiting = &mut |l: &str| eprintln!("ringsam: rank {rank}: {l}");
    let peers = names.iter().map(|n| resolve_peer(n, deadline, &opts.stop, waiting)).collect::<Result<Vec<_>, _>>()?;
    let cluster_cfg = ClusterConfig {
        rank,
        peers,
        group_size: cfg.inner_group_size,
        transport,
        connect_timeout: timeout,
        peer_timeout: Duration::from_secs(cfg.ring_timeout_seconds),
        on_refusal: Some(crate::process::refusal_log(format!("rank {rank}"))),
        generation: 0,
        colocated,
    };
    let log = |line: &str| eprintln!("ringsam: rank {rank}: {line}");
    let pipes = crate::worker_local::pipes_note(cluster_cfg.colocated.as_ref());
    log(&format!("joining a ring of {} at {}{pipes}", names.len(), cluster_cfg.peers[rank]));
    let cluster = Cluster::connect(&cluster_cfg, &opts.stop).with_context(|| format!("rank {rank}: forming the ring"))?;
    let summary = train_replica(cfg, &opts, Some(cluster), &mut |l| log(l))
        .with_context(|| format!("rank {rank}: training {} on {}", cfg.model_name, cfg.dataset))?;
    if rank == 0 {
        print_summary(&summary);
    }
    Ok(())
}

/// The ring transport and its credentials from the flags.
fn transport_of(args: &WorkerArgs) -> Result<Transport> {
    Ok(if args.transport == TransportName::Tcp {
        Transport::Tcp { secret: cluster_secret()? }
    } else {
        let need = |p: &Option<PathBuf>, flag: &str| p.clone().with_context(|| format!("--transport quic needs {flag}"));
        Transport::Quic {
            ca: need(&args.ca, "--ca")?,
            cert: need(&args.cert, "--cert")?,
            key: need(&args.key, "--key")?,
            tuning: QuicTuning { driver: args.quic_driver, ..QuicTuning::default() },
        }
    })
}

/// `--gpus`: how many workers, one per GPU (`all`: every GPU the driver sees). The workers'
/// `--device` is launch's to give, so the training flags may not hold one.
fn gpus_of(gpus: Option<&str>, train_words: &[String]) -> Result<Option<usize>> {
    let Some(given) = gpus else { return Ok(None) };
    if train_words.iter().any(|w| w == "--device" || w.starts_with("--device=")) {
        return Err(usage(format!("--gpus {given} gives worker r --device cuda:r: leave --device out of the training flags")));
    }
    let wanted = match given {
        "all" => None,
        n => Some(n.parse::<usize>().map_err(|_| usage(format!("--gpus {n}: expected all or a number of GPUs")))?),
    };
    let have = ringsam_tensor::Device::cuda_count().map_err(|e| usage(format!("--gpus {given}: {e}")))?;
    match wanted.unwrap_or(have) {
        0 => Err(usage(format!("--gpus {given}: no GPU to run a worker on"))),
        n if n > have => Err(usage(format!("--gpus {n}: this host has {have} GPU(s)"))),
        n => Ok(Some(n)),
    }
}

/// Starts `--nproc` workers on loopback through [`LocalRanks`] and waits for them; SIGTERM and
/// SIGINT are forwarded, so each worker checkpoints and stops. The workers' flags are checked
/// first, so a mistake is reported before anything starts. When a worker fails, the others are
/// ended (TERM, then KILL after a grace period) and launch fails naming it; when every worker
/// stopped on the forwarded signal, launch exits with the stop code.
pub fn cmd_launch(args: &LaunchArgs) -> Result<()> {
    let train_words = match args.train_args.first() {
        Some(w) if w == "train" => &args.train_args[1..],
        _ => &args.train_args[..],
    };
    let gpus = gpus_of(args.gpus.as_deref(), train_words)?;
    let nproc = gpus.unwrap_or(args.nproc);
    if nproc == 0 {
        return Err(usage("--nproc must be at least 1"));
    }
    if let Some(p) = args.metrics_port
        && (p as usize).checked_add(nproc - 1).is_none_or(|last| last > u16::MAX as usize)
    {
        return Err(usage(format!("--metrics_port {p}: ports {p}..{p}+{} pass 65535", nproc - 1)));
    }
    check_train_words(train_words).context("the training flags after --")?;
    let mut ranks = LocalRanks::prepare(nproc, args.transport == TransportName::Quic).context("preparing the local workers")?;
    // The machine's cores, split among the workers (each splits its share between its loaders
    // and its step's host work, and logs how).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / nproc).max(1);
    match gpus {
        Some(n) => eprintln!("ringsam: {n} workers, one per GPU (cuda:0..cuda:{}), {threads} CPU threads each", n - 1),
        None => eprintln!("ringsam: {nproc} workers, {threads} CPU threads each"),
    }
    let exe = std::env::current_exe().context("locating the ringsam binary")?;
    let (peers, world) = (ranks.peers(), nproc.to_string());
    let quic: Vec<Vec<String>> = (0..nproc).map(|r| ranks.quic_flags(r)).collect();
    let worker_args = |r: usize, restarts: u32, cmd: &mut std::process::Command| {
        cmd.args(["worker", "--rank", &r.to_string(), "--world_size", &world, "--peers", &peers])
            .args(["--transport", args.transport.as_str(), "--connect_timeout", "60"])
            .args(&quic[r])
            .env("RINGSAM_THREADS", threads.to_string())
            .env("RINGSAM_RESTARTS", restarts.to_string());
        if let Some(min) = args.min_replicas {
            cmd.args(["--min_replicas", &min.to_string()]);
        }
        if let Some(p) = args.metrics_port {
            cmd.args(["--metrics_addr", &format!("127.0.0.1:{}", p as usize + r)]);
        }
        if gpus.is_some() {
            cmd.args(["--device", &format!("cuda:{r}")]);
        }
        cmd.args(train_words);
    };
    ranks.spawn(&exe, false, |r, cmd| worker_args(r, 0, cmd)).context("starting the workers")?;
    let stop = stop_on_signals()?;
    let mut restarts = 0u32;
    let mut restart = |r: usize, status: std::process::ExitStatus, cmd: &mut std::process::Command| {
        let restartable = status.code() == Some(1) || std::os::unix::process::ExitStatusExt::signal(&status).is_some();
        if !restartable || restarts >= args.max_restarts {
            return false;
        }
        restarts += 1;
        eprintln!("ringsam: launch: worker {r} ended ({status}); starting it again (restart {restarts} of {})", args.max_restarts);
        worker_args(r, restarts, cmd);
        true
    };
    let exits = ranks.wait_restarting(&stop, LAUNCH_GRACE, &mut restart).context("waiting for the workers")?;
    let stopped_by_signal = |e: &ringsam_collective::local_ranks::RankExit| e.status.code() == Some(143);
    if exits.iter().all(|e| e.status.success() || stopped_by_signal(e)) && exits.iter().any(stopped_by_signal) {
        return Err(stopped("every worker wrote its checkpoint and stopped on the forwarded signal"));
    }
    let failed: Vec<String> = exits
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.status.success())
        .map(|(r, e)| format!("rank {r} ({}{})", e.status, if e.ended_by_launcher { ", ended by launch" } else { "" }))
        .collect();
    if !failed.is_empty() {
        bail!("worker(s) failed: {} (see their messages above)", failed.join(", "));
    }
    Ok(())
}

/// How long a worker has to write its checkpoint and exit after SIGTERM, when another worker
/// failed, before launch kills it.
const LAUNCH_GRACE: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct EvalArgs {
    /// A checkpoint directory (`…/checkpoints/checkpoint_N`).
    #[arg(long)]
    pub(crate) checkpoint: PathBuf,
    /// Directory of the dataset's files (default: the one the run used).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Evaluation batch size.
    #[arg(long, default_value_t = 128)]
    pub(crate) batch_size: usize,
    /// Where the model runs: cpu, cuda or cuda:N (a build with `--features cuda`).
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub(crate) device: String,
    /// A GPU's GEMMs and im2col convolutions: fp32, tf32 (the default on a GPU) or bf16.
    #[arg(long, value_name = "PRECISION")]
    pub(crate) precision: Option<String>,
    /// A GPU's convolutions: gemm (im2col and cuBLAS; the default, checked on a GPU) or cudnn
    /// (not yet run on a GPU).
    #[arg(long, value_name = "IMPL")]
    pub(crate) conv_impl: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct SharpnessArgs {
    /// A checkpoint directory (`…/checkpoints/checkpoint_N`).
    #[arg(long)]
    pub(crate) checkpoint: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
    /// `ringsam train` flags over the run's configuration, after the others: the
    /// `--sharpness_*` settings (batch, eigs, iters, tol, m, rho), `--data_dir`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "TRAIN_FLAGS")]
    pub(crate) train_flags: Vec<String>,
}

#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub(crate) struct PredictArgs {
    /// A checkpoint directory (`…/checkpoints/checkpoint_N`).
    #[arg(long)]
    pub(crate) checkpoint: PathBuf,
    /// JPEG files, or folders of them.
    #[arg(required = true)]
    pub(crate) images: Vec<PathBuf>,
    /// Classes shown per image.
    #[arg(long, default_value_t = 5)]
    pub(crate) top_k: usize,
    /// Directory of the dataset's files, for class names (default: the one the run used).
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Print one JSON object per image.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn print_summary(summary: &ringsam_train::run::RunSummary) {
    println!("run directory: {}", summary.run_dir.display());
    println!("steps: {}  time: {:.1} s", summary.steps, summary.seconds);
    if let (Some(err), Some(loss)) = (summary.test_error_rate, summary.test_loss) {
        println!("test accuracy: {:.2}%  test error: {:.2}%  test loss: {loss:.4}", 100.0 * (1.0 - err), 100.0 * err);
    }
}

/// Starts the Prometheus endpoint when `--metrics_addr` is given.
pub(crate) fn serve_metrics(args: &TrainArgs, rank: usize, log: &dyn Fn(&str)) -> Result<()> {
    if let Some(addr) = args.metrics_addr {
        let bound = ringsam_train::telemetry::serve_prometheus(addr, rank)?;
        log(&format!("metrics on http://{bound}/metrics"));
    }
    Ok(())
}

pub(crate) fn cmd_train(args: &TrainArgs, matches: &ArgMatches) -> Result<()> {
    let cfg = resolve_train_config(args, matches)?;
    serve_metrics(args, 0, &|l| eprintln!("ringsam: {l}"))?;
    let gpu = args.open_device(&|line| eprintln!("ringsam: {line}"))?;
    let opts = RunOptions { progress: std::io::stderr().is_terminal(), stop: stop_on_signals()?, memory_limit: available_memory(), gpu };
    let summary = train(&cfg, &opts, &mut |line| eprintln!("ringsam: {line}"))
        .with_context(|| format!("training {} on {}", cfg.model_name, cfg.dataset))?;
    print_summary(&summary);
    Ok(())
}

pub(crate) fn cmd_eval(args: &EvalArgs) -> Result<()> {
    let gpu = crate::train_args::open_device(&args.device, args.precision.as_deref(), args.conv_impl.as_deref(), &|line| {
        eprintln!("ringsam: {line}")
    })?;
    let (cfg, r) = ringsam_train::eval::evaluate_checkpoint(&args.checkpoint, args.data_dir.clone(), args.batch_size, gpu.as_ref())
        .with_context(|| format!("evaluating {}", args.checkpoint.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"checkpoint": args.checkpoint, "dataset": cfg.dataset, "examples": r.examples, "loss": r.loss, "error_rate": r.error_rate, "top5_error_rate": r.top5_error_rate})
        );
    } else {
        println!(
            "{} on {} test ({} examples): loss {:.4}, error {:.2}%, accuracy {:.2}%",
            cfg.model_name,
            cfg.dataset,
            r.examples,
            r.loss,
            100.0 * r.error_rate,
            100.0 * (1.0 - r.error_rate)
        );
    }
    Ok(())
}

pub(crate) fn cmd_sharpness(args: &SharpnessArgs) -> Result<()> {
    let mut log = |line: &str| eprintln!("ringsam: {line}");
    let (cfg, r) = ringsam_train::sharpness::of_checkpoint(&args.checkpoint, &args.train_flags, &mut log)
        .with_context(|| format!("measuring the sharpness of {}", args.checkpoint.display()))?;
    if args.json {
        let mut v = serde_json::to_value(&r)?;
        v["checkpoint"] = serde_json::json!(args.checkpoint);
        v["lambda_ratio"] = serde_json::json!(r.ratio());
        println!("{v}");
    } else {
        println!("{} on {}: {}", cfg.model_name, cfg.dataset, r.describe());
    }
    Ok(())
}

pub(crate) fn cmd_predict(args: &PredictArgs) -> Result<()> {
    if args.top_k == 0 {
        return Err(crate::usage("--top_k must be at least 1"));
    }
    let (_, predictions) = ringsam_train::predict::predict(&args.checkpoint, &args.images, args.top_k, args.data_dir.clone())
        .with_context(|| format!("predicting with {}", args.checkpoint.display()))?;
    for p in predictions {
        if args.json {
            let top: Vec<_> = p.top.iter().map(|(c, n, prob)| serde_json::json!({"class": c, "name": n, "probability": prob})).collect();
            println!("{}", serde_json::json!({"image": p.path, "top": top}));
        } else {
            let top: Vec<String> = p
                .top
                .iter()
                .map(|(c, n, prob)| format!("{} {:.1}%", n.clone().unwrap_or_else(|| format!("class {c}")), 100.0 * prob))
                .collect();
            println!("{}: {}", p.path.display(), top.join(", "));
        }
    }
    Ok(())
}
