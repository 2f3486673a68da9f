//! `ringsam worker` (one replica of a data-parallel job) and `ringsam launch` (N local workers on
//! loopback, like `torchrun --standalone`).
//!
//! A worker learns its place from flags or the environment: `RINGSAM_RANK` (or Kubernetes'
//! `JOB_COMPLETION_INDEX`), `RINGSAM_WORLD_SIZE`, and the peers as `RINGSAM_PEERS`
//! (`host:port,...` in rank order) or `RINGSAM_PEER_PATTERN` (`ringsam-{i}.ringsam:29500`, `{i}`
//! replaced by each rank: an Indexed Job behind a headless Service). Names are resolved until the
//! connect timeout, since peers' DNS records appear as their pods start.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use ringsam_train::cluster::{Cluster, ClusterConfig, Transport};
use ringsam_train::run::{RunOptions, train_replica};

use crate::train_args::{TrainArgs, check_train_words, resolve_train_config};
use crate::usage;

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
    #[arg(long, env = "RINGSAM_TRANSPORT", default_value = "quic", value_parser = ["quic", "tcp"])]
    pub transport: String,
    /// Cluster CA certificate (QUIC).
    #[arg(long, env = "RINGSAM_CA")]
    pub ca: Option<PathBuf>,
    /// This node's certificate (QUIC).
    #[arg(long, env = "RINGSAM_CERT")]
    pub cert: Option<PathBuf>,
    /// This node's private key (QUIC).
    #[arg(long, env = "RINGSAM_KEY")]
    pub key: Option<PathBuf>,
    /// Seconds to wait for every peer to come up and the rings to form.
    #[arg(long, env = "RINGSAM_CONNECT_TIMEOUT", default_value_t = 300)]
    pub connect_timeout: u64,
    /// Training flags, as for `ringsam train`.
    #[command(flatten)]
    pub train: TrainArgs,
}

/// `ringsam launch`.
#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct LaunchArgs {
    /// Local worker processes (replicas).
    #[arg(long, default_value_t = 2)]
    pub nproc: usize,
    /// quic or tcp.
    #[arg(long, default_value = "quic", value_parser = ["quic", "tcp"])]
    pub transport: String,
    /// Serve each worker's Prometheus metrics on 127.0.0.1:PORT+rank.
    #[arg(long)]
    pub metrics_port: Option<u16>,
    /// `--` then the training flags every worker gets (as for `ringsam train`).
    #[arg(last = true)]
    pub train_args: Vec<String>,
}

fn resolve(addr: &str, deadline: Instant) -> Result<SocketAddr> {
    loop {
        match addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => return Ok(a),
            Ok(None) => bail!("{addr}: no address"),
            Err(e) if Instant::now() >= deadline => return Err(e).with_context(|| format!("resolving peer {addr}")),
            Err(_) => std::thread::sleep(Duration::from_millis(500)), // its pod (and DNS record) may not exist yet
        }
    }
}

/// Runs one replica.
pub fn cmd_worker(args: &WorkerArgs, matches: &clap::ArgMatches) -> Result<()> {
    let rank = match args.rank {
        Some(r) => r,
        None => std::env::var("JOB_COMPLETION_INDEX")
            .ok()
            .and_then(|v| v.parse().ok())
            .context("no --rank, RINGSAM_RANK or JOB_COMPLETION_INDEX")?,
    };
    let world = args.world_size;
    if world == 0 || rank >= world {
        bail!("rank {rank} must be below --world-size {world}");
    }
    let names: Vec<String> = match &args.peer_pattern {
        Some(p) if p.contains("{i}") => (0..world).map(|i| p.replace("{i}", &i.to_string())).collect(),
        Some(p) => bail!("--peer-pattern {p:?} has no {{i}} for the rank"),
        None => args.peers.clone(),
    };
    if names.len() != world {
        bail!("{} peer addresses for --world-size {world} (give --peers in rank order or --peer-pattern)", names.len());
    }
    let timeout = Duration::from_secs(args.connect_timeout);
    let deadline = Instant::now() + timeout;
    let peers = names.iter().map(|n| resolve(n, deadline)).collect::<Result<Vec<_>>>()?;
    let transport = if args.transport == "tcp" {
        Transport::Tcp { secret: crate::cluster_secret()? }
    } else {
        let need = |p: &Option<PathBuf>, flag: &str| p.clone().with_context(|| format!("--transport quic needs {flag}"));
        Transport::Quic { ca: need(&args.ca, "--ca")?, cert: need(&args.cert, "--cert")?, key: need(&args.key, "--key")? }
    };
    let cfg = resolve_train_config(&args.train, matches)?;
    let cluster_cfg = ClusterConfig {
        rank,
        peers,
        group_size: cfg.inner_group_size,
        transport,
        connect_timeout: timeout,
        peer_timeout: Duration::from_secs(cfg.ring_timeout_seconds),
    };
    let stop = crate::stop_on_signals()?;
    let log = |line: &str| eprintln!("ringsam: rank {rank}: {line}");
    crate::serve_metrics(&args.train, rank, &log)?;
    log(&format!("joining a ring of {world} at {}", cluster_cfg.peers[rank]));
    let cluster = Cluster::connect(&cluster_cfg).with_context(|| format!("rank {rank}: forming the ring"))?;
    let opts = RunOptions { progress: rank == 0 && std::io::IsTerminal::is_terminal(&std::io::stderr()), stop };
    let summary = train_replica(&cfg, &opts, Some(cluster), &mut |l| log(l))
        .with_context(|| format!("rank {rank}: training {} on {}", cfg.model_name, cfg.dataset))?;
    if rank == 0 {
        crate::print_summary(&summary);
    }
    Ok(())
}

/// Two free ports, `p` and `p + 1` (the world ring and the group ring of one worker).
fn free_port_pair() -> Result<u16> {
    for _ in 0..100 {
        let a = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        let p = a.local_addr()?.port();
        let free =
            |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if p < u16::MAX && free(p + 1) && std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    bail!("no two consecutive free ports on 127.0.0.1")
}

/// Starts `--nproc` workers on loopback and waits for them; forwards SIGTERM/SIGINT so each
/// worker checkpoints and stops. The workers' flags are checked first, so a mistake is reported
/// before anything starts. Waits for every worker; fails listing the workers that failed, or
/// exits with the stop code when every worker stopped on the forwarded signal.
pub fn cmd_launch(args: &LaunchArgs) -> Result<()> {
    if args.nproc == 0 {
        return Err(usage("--nproc must be at least 1"));
    }
    if let Some(p) = args.metrics_port
        && (p as usize).checked_add(args.nproc - 1).is_none_or(|last| last > u16::MAX as usize)
    {
        return Err(usage(format!("--metrics_port {p}: ports {p}..{p}+{} pass 65535", args.nproc - 1)));
    }
    let train_words = match args.train_args.first() {
        Some(w) if w == "train" => &args.train_args[1..],
        _ => &args.train_args[..],
    };
    check_train_words(train_words).context("the training flags after --")?;
    let mut ports = Vec::new();
    while ports.len() < args.nproc {
        let p = free_port_pair()?;
        if !ports.iter().any(|&q: &u16| q.abs_diff(p) <= 1) {
            ports.push(p);
        }
    }
    let peers = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    let dir = tempfile::Builder::new().prefix("ringsam-launch-").tempdir().context("making a directory for ephemeral certificates")?;
    let secret = crate::fresh_cluster_secret()?;
    if args.transport == "quic" {
        ringsam_collective::certs::write_dev_certs(dir.path(), args.nproc).context("making ephemeral certificates")?;
    }
    // The machine's cores, split among the workers.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / args.nproc).max(1);
    let exe = std::env::current_exe().context("locating the ringsam binary")?;
    let mut children = Vec::new();
    for r in 0..args.nproc {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["worker", "--rank", &r.to_string(), "--world_size", &args.nproc.to_string(), "--peers", &peers])
            .args(["--transport", &args.transport, "--connect_timeout", "60"])
            .env("RINGSAM_THREADS", threads.to_string())
            .env("RINGSAM_CLUSTER_SECRET", &secret)
            .stdout(if r == 0 { std::process::Stdio::inherit() } else { std::process::Stdio::null() });
        if args.transport == "quic" {
            let f = |name: String| dir.path().join(name).display().to_string();
            cmd.args(["--ca", &f("ca.pem".into()), "--cert", &f(format!("node-{r}.pem")), "--key", &f(format!("node-{r}.key"))]);
        }
        if let Some(p) = args.metrics_port {
            cmd.args(["--metrics_addr", &format!("127.0.0.1:{}", p as usize + r)]);
        }
        cmd.args(train_words);
        children.push(cmd.spawn().with_context(|| format!("starting worker {r}"))?);
    }
    let stop = crate::stop_on_signals()?;
    let mut forwarded = false;
    let mut status: Vec<Option<std::process::ExitStatus>> = vec![None; children.len()];
    while status.iter().any(Option::is_none) {
        if stop.load(Ordering::SeqCst) && !forwarded {
            forwarded = true;
            for (c, s) in children.iter().zip(&status) {
                if s.is_none() {
                    // SAFETY: kill(2) on our own child's pid, which is not reaped yet (its status
                    // is unknown), so the pid cannot have been reused; no memory is involved.
                    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                }
            }
        }
        for (c, s) in children.iter_mut().zip(status.iter_mut()) {
            if s.is_none() {
                *s = c.try_wait().context("waiting for a worker")?;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = |s: &std::process::ExitStatus| s.code() == Some(143);
    if forwarded && status.iter().flatten().all(|s| s.success() || stopped(s)) && status.iter().flatten().any(stopped) {
        return Err(crate::stopped("every worker wrote its checkpoint and stopped on the forwarded signal"));
    }
    let failed: Vec<String> = status
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_some_and(|s| s.success()))
        .map(|(r, s)| format!("rank {r} ({})", s.expect("all done")))
        .collect();
    if !failed.is_empty() {
        bail!("worker(s) failed: {} (see their messages above)", failed.join(", "));
    }
    Ok(())
}
