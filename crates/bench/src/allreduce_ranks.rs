//! `ringsam bench allreduce` as processes: one rank of a ring ([`run_rank`], for rings across
//! hosts or the ranks this machine starts), or every rank started on this machine over loopback
//! ([`run_local`], through [`LocalRanks`]), and the nccl-tests style table ([`table`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ringsam_collective::local_link::{InProcess, LocalLinks};
use ringsam_collective::local_ranks::LocalRanks;
use ringsam_collective::quic::QuicTuning;
use ringsam_collective::transport::{Link, Refusals, Transport, form_ring};
use ringsam_collective::{RingConfig, inproc::InprocRing};

use crate::allreduce::{BenchRow, BlockingRing, memcpy_gbs, run};

/// A benchmark's settings, shared by every rank.
#[derive(Clone, Debug)]
pub struct AllreduceBench {
    /// The `--sizes` text (passed on to started ranks).
    pub sizes_spec: String,
    /// Sizes in bytes.
    pub sizes: Vec<usize>,
    /// Timed operations per size.
    pub iters: usize,
    /// Chunk size in values.
    pub chunk: usize,
    /// Seconds to form the ring and to wait on a silent peer.
    pub timeout: Duration,
    /// All-reduces in flight per timed operation.
    pub inflight: usize,
    /// QUIC settings.
    pub quic: QuicTuning,
    /// The congestion controller's flag value (passed on to started ranks).
    pub quic_cc: String,
    /// Print each rank's QUIC path statistics at the end.
    pub quic_stats: bool,
    /// Ring threads per rank (0: the host's cores per local rank, 1 to 4).
    pub ring_threads: u64,
    /// The table shows CPU time per operation and per byte.
    pub show_cpu: bool,
}

impl AllreduceBench {
    fn ring(&self, rank: usize, world: usize) -> RingConfig {
        RingConfig { chunk: self.chunk, peer_timeout: self.timeout, ..RingConfig::new(rank, world) }
    }

    /// The flags a started rank gets for these settings (the inverse of the binary's parsing).
    fn rank_flags(&self, ranks_here: usize) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--sizes".into(),
            self.sizes_spec.clone(),
            "--iters".into(),
            self.iters.to_string(),
            "--chunk".into(),
            self.chunk.to_string(),
            "--timeout".into(),
            self.timeout.as_secs().to_string(),
            "--inflight".into(),
            self.inflight.to_string(),
            "--quic_window".into(),
            self.quic.stream_window.to_string(),
            "--quic_conn_window".into(),
            self.quic.conn_window.to_string(),
            "--quic_udp_buffer".into(),
            self.quic.udp_buffer.to_string(),
            "--quic_cc".into(),
            self.quic_cc.clone(),
            "--quic_stripes".into(),
            self.quic.stripes.to_string(),
            "--quic_crypto".into(),
            self.quic.crypto.name().into(),
            "--quic_cipher".into(),
            self.quic.cipher.name().into(),
            "--quic_driver".into(),
            self.quic.driver.name().into(),
            "--ring_threads".into(),
            ring_threads_for(self.ring_threads, ranks_here).to_string(),
            "--json".into(),
        ];
        a.extend(self.quic.ack_every.map(|n| ["--quic_ack_every".into(), n.to_string()]).into_iter().flatten());
        a.extend(self.quic.max_mtu.map(|m| ["--quic_mtu".into(), m.to_string()]).into_iter().flatten());
        a.extend(self.quic_stats.then(|| "--quic_stats".to_string()));
        a
    }
}

/// Ring threads per rank: `asked` unless 0; for 0, when `ranks` ranks share this host, its cores
/// per rank, 1 to 4 (4 is the most that was measured).
pub fn ring_threads_for(asked: u64, ranks: usize) -> usize {
    if asked > 0 {
        return asked as usize;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / ranks.max(1)).clamp(1, 4)
}

/// Runs this process as rank `rank` of a ring over `peers` (every rank's address, in rank
/// order); returns its rows and, with `quic_stats`, a line of QUIC path statistics.
pub fn run_rank(
    b: &AllreduceBench,
    rank: usize,
    peers: &[SocketAddr],
    transport: &Transport,
    on_refusal: Option<Refusals>,
) -> Result<(Vec<BenchRow>, Option<String>), String> {
    let world = peers.len();
    let link = Link { listen: peers[rank], next: peers[(rank + 1) % world], connect_timeout: b.timeout, on_refusal, in_process: None };
    let name = match transport {
        Transport::Tcp { .. } => "tcp",
        Transport::Quic { .. } => "quic",
    };
    run_ring_rank(b, rank, world, transport, link, name, ring_threads_for(b.ring_threads, 1))
}

/// [`run_rank`] over `link`, on a runtime of `threads` threads, its rows labelled `name`.
fn run_ring_rank(
    b: &AllreduceBench,
    rank: usize,
    world: usize,
    transport: &Transport,
    link: Link,
    name: &str,
    threads: usize,
) -> Result<(Vec<BenchRow>, Option<String>), String> {
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
    .map_err(|e| format!("starting the async runtime: {e}"))?;
    let (ring, links) =
        runtime.block_on(form_ring(transport, b.ring(rank, world), link)).map_err(|e| format!("rank {rank}: forming the ring: {e}"))?;
    let mut ar = BlockingRing { runtime, ring };
    let rows = run(&mut ar, rank, world, name, &b.sizes, b.iters, b.inflight).map_err(|e| format!("rank {rank}: all-reduce: {e}"))?;
    let BlockingRing { runtime, ring } = ar;
    let stats = match (b.quic_stats, links) {
        (true, Some(l)) => Some(format!("rank {rank}: QUIC to the next rank: {}", l.summary())),
        _ => None,
    };
    runtime.block_on(ring.close());
    Ok((rows, stats))
}

/// Runs `nproc` ranks on this machine and returns rank 0's rows: threads joined by in-process
/// channels for `inproc`, threads of the socket transports' driver joined by in-memory pipes for
/// `pipe` (how a worker's local replicas meet), else processes of `exe` (`ringsam`) started through [`LocalRanks`],
/// each running `bench allreduce --rank r`. `stop` ends them early (the caller's signal flag).
pub fn run_local(b: &AllreduceBench, transport: &str, nproc: usize, exe: &Path, stop: &AtomicBool) -> Result<Vec<BenchRow>, String> {
    match transport {
        "inproc" => return run_inproc(b, nproc),
        "pipe" => return run_pipes(b, nproc),
        _ => {}
    }
    let mut ranks = LocalRanks::prepare(nproc, transport == "quic").map_err(|e| format!("preparing local ranks: {e}"))?;
    let (peers, flags) = (ranks.peers(), b.rank_flags(nproc));
    let quic: Vec<Vec<String>> = (0..nproc).map(|r| ranks.quic_flags(r)).collect();
    ranks
        .spawn(exe, true, |r, cmd| {
            cmd.args(["bench", "allreduce", "--transport", transport, "--rank", &r.to_string(), "--peers", &peers])
                .args(&flags)
                .args(&quic[r])
                .env("RINGSAM_THREADS", "1");
        })
        .map_err(|e| format!("starting the ranks: {e}"))?;
    let exits = ranks.wait(stop, Duration::from_secs(5)).map_err(|e| format!("waiting for the ranks: {e}"))?;
    let failed: Vec<usize> = exits.iter().enumerate().filter(|(_, e)| !e.status.success()).map(|(r, _)| r).collect();
    if !failed.is_empty() {
        return Err(format!("{transport}: rank(s) {failed:?} failed (see their messages above)"));
    }
    // Rank 0's rows, with every rank's CPU time added up.
    let mut per_rank = Vec::with_capacity(nproc);
    for (r, exit) in exits.iter().enumerate() {
        let rows: Vec<BenchRow> = String::from_utf8_lossy(&exit.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).map_err(|e| format!("rank {r} printed {line:?}: {e}")))
            .collect::<Result<_, _>>()?;
        per_rank.push(rows);
    }
    let mut rows = per_rank.first().cloned().unwrap_or_default();
    for (i, row) in rows.iter_mut().enumerate() {
        let cpus: Vec<f64> = per_rank.iter().filter_map(|rank_rows| rank_rows.get(i).map(|r| r.cpu_s)).collect();
        if cpus.len() != nproc {
            return Err(format!("{transport}: only {} of {nproc} ranks reported size {}", cpus.len(), row.bytes));
        }
        row.cpu_s = cpus.iter().sum();
        row.cpu_ranks = nproc;
    }
    Ok(rows)
}

fn run_inproc(b: &AllreduceBench, nproc: usize) -> Result<Vec<BenchRow>, String> {
    let rings = InprocRing::connect((0..nproc).map(|r| b.ring(r, nproc)).collect());
    let handles: Vec<_> = rings
        .into_iter()
        .enumerate()
        .map(|(r, mut ring)| {
            let (sizes, iters, inflight) = (b.sizes.clone(), b.iters, b.inflight);
            std::thread::spawn(move || run(&mut ring, r, nproc, "inproc", &sizes, iters, inflight))
        })
        .collect();
    let mut first = None;
    for h in handles {
        let rows = h.join().map_err(|_| "a rank thread panicked".to_string())?.map_err(|e| format!("all-reduce: {e}"))?;
        first.get_or_insert(rows);
    }
    // The ranks are threads of this process: each one's process CPU time already covers them all.
    let mut rows = first.unwrap_or_default();
    rows.iter_mut().for_each(|r| r.cpu_ranks = nproc);
    Ok(rows)
}

/// Every rank a thread of this process with a runtime of its own (as a worker's local replicas
/// are), every link a pipe ([`ringsam_collective::local_link`]).
fn run_pipes(b: &AllreduceBench, nproc: usize) -> Result<Vec<BenchRow>, String> {
    let links = LocalLinks::new();
    // Checked though never sent: a TCP ring needs a secret. Nothing listens, so no address is used.
    let secret = ringsam_collective::tcp::fresh_secret().map_err(|e| format!("drawing a secret: {e}"))?;
    let transport = Transport::Tcp { secret: secret.into_bytes() };
    let unused = SocketAddr::from(([127, 0, 0, 1], 0));
    let threads = ring_threads_for(b.ring_threads, nproc);
    let rows = std::thread::scope(|s| {
        let handles: Vec<_> = (0..nproc)
            .map(|r| {
                let in_process = Some(InProcess { links: links.clone(), prev: true, next: true });
                let link = Link { listen: unused, next: unused, connect_timeout: b.timeout, on_refusal: None, in_process };
                let transport = &transport;
                s.spawn(move || run_ring_rank(b, r, nproc, transport, link, "pipe", threads))
            })
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| "a rank thread panicked".to_string())?).collect::<Result<Vec<_>, String>>()
    })?;
    // The ranks are threads of this process: each one's process CPU time already covers them all.
    let mut first = rows.into_iter().next().map(|(rows, _)| rows).unwrap_or_default();
    first.iter_mut().for_each(|r| r.cpu_ranks = nproc);
    Ok(first)
}

/// The nccl-tests style table of `rows`, with busbw against a single-thread memcpy of the largest
/// size measured here.
pub fn table(b: &AllreduceBench, rows: &[BenchRow]) -> String {
    let largest = rows.iter().map(|r| r.bytes).max().unwrap_or(0);
    let memcpy = memcpy_gbs(largest.max(4));
    let mut out = format!(
        "# ringsam all-reduce: chunk {} values, {} iterations per size; single-thread memcpy of {largest} bytes: {memcpy:.2} GB/s\n",
        b.chunk, b.iters
    );
    if rows.iter().any(|r| r.transport == "quic") {
        let (driver, cipher) = (b.quic.driver.name(), b.quic.cipher.name());
        out += &if b.quic.cipher.seals() {
            format!("# QUIC: {driver} driver, {cipher} offered first, sealed by {}\n", b.quic.crypto.name())
        } else {
            format!("# QUIC: {driver} driver, packets NOT SEALED ({cipher}: a measurement build)\n")
        };
    }
    if b.show_cpu {
        out += "# cpu(ms): CPU time (user + sys) per operation, summed over the ranks counted; ns/B: that per byte of the buffer\n";
    }
    out += &format!(
        "{:>8} {:>6} {:>12} {:>12} {:>12} {:>10} {:>10} {:>8} {:>6}",
        "transport", "nproc", "size(B)", "count", "time(us)", "algbw", "busbw", "/memcpy", "ok"
    );
    if b.show_cpu {
        out += &format!(" {:>10} {:>8} {:>6}", "cpu(ms)", "ns/B", "ranks");
    }
    out += "\n";
    for r in rows {
        out += &format!(
            "{:>8} {:>6} {:>12} {:>12} {:>12.1} {:>10.3} {:>10.3} {:>8.3} {:>6}",
            r.transport,
            r.nproc,
            r.bytes,
            r.count,
            r.time_us,
            r.algbw_gbs,
            r.busbw_gbs,
            r.busbw_gbs / memcpy,
            if r.ok { "yes" } else { "WRONG" }
        );
        if b.show_cpu {
            out += &format!(" {:>10.2} {:>8.3} {:>6}", r.cpu_s * 1e3, r.cpu_ns_per_byte(), r.cpu_ranks);
        }
        out += "\n";
    }
    out
}
