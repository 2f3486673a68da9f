//! `ringsam bench allreduce`: all-reduce timing in the style of nccl-tests.
//!
//! For each size: one untimed operation (a warm-up), then `iters` timed ones, each preceded by a
//! one-value all-reduce as a barrier; `time` is their mean. `algbw = bytes / time`; `busbw = algbw · 2(n − 1)/n`, the
//! traffic each rank's link actually carries in a ring, comparable across world sizes. Every
//! result is checked: rank `r` contributes `(r + 1)·(i mod 13)` at index `i`, so the exact sum is
//! `n(n + 1)/2 · (i mod 13)` — small integers, exact in f32 in any order.
//!
//! CPU: each rank also measures its process's CPU time (user + sys, every thread) over the timed
//! operations alone. On a host where ranks share cores, wall time mostly says how the cores were
//! shared; CPU time per byte says what a transport costs, and is what QUIC is compared with TCP
//! and Gloo on (docs/BENCHMARKS.md, "CPU per byte").

use std::time::Instant;

use serde::{Deserialize, Serialize};

use ringsam_collective::{ReduceOp, RingError};

/// Something that all-reduces a buffer with its peers, blocking until done.
pub trait AllReduce {
    /// Sum `data` over all ranks.
    fn allreduce(&mut self, data: Vec<f32>, reduce: ReduceOp) -> Result<Vec<f32>, RingError>;

    /// All-reduces several buffers, in flight together where the ring allows (gradient buckets
    /// do this); the default runs them one after another.
    fn allreduce_parts(&mut self, parts: Vec<Vec<f32>>, reduce: ReduceOp) -> Result<Vec<Vec<f32>>, RingError> {
        parts.into_iter().map(|p| self.allreduce(p, reduce)).collect()
    }
}

impl AllReduce for ringsam_collective::inproc::InprocRing {
    fn allreduce(&mut self, data: Vec<f32>, reduce: ReduceOp) -> Result<Vec<f32>, RingError> {
        ringsam_collective::inproc::InprocRing::allreduce(self, data, reduce)
    }
}

/// A socket ring (TCP or QUIC) driven from synchronous code through its own tokio runtime.
pub struct BlockingRing {
    /// The runtime the driver tasks run on.
    pub runtime: tokio::runtime::Runtime,
    /// The ring handle.
    pub ring: ringsam_collective::RingHandle,
}

impl AllReduce for BlockingRing {
    fn allreduce(&mut self, data: Vec<f32>, reduce: ReduceOp) -> Result<Vec<f32>, RingError> {
        self.runtime.block_on(self.ring.allreduce(data, reduce))
    }

    fn allreduce_parts(&mut self, parts: Vec<Vec<f32>>, reduce: ReduceOp) -> Result<Vec<Vec<f32>>, RingError> {
        let pending = parts.into_iter().map(|p| self.ring.submit(p, reduce)).collect::<Result<Vec<_>, _>>()?;
        self.runtime.block_on(async {
            let mut out = Vec::with_capacity(pending.len());
            for p in pending {
                out.push(p.result().await?);
            }
            Ok(out)
        })
    }
}

/// One line of the report (the `--json` object).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchRow {
    /// tcp, quic or inproc.
    pub transport: String,
    /// Ranks.
    pub nproc: usize,
    /// Buffer bytes.
    pub bytes: usize,
    /// Buffer values (f32).
    pub count: usize,
    /// Mean time per all-reduce, microseconds.
    pub time_us: f64,
    /// bytes / time, GB/s (10⁹).
    pub algbw_gbs: f64,
    /// algbw · 2(n−1)/n, GB/s.
    pub busbw_gbs: f64,
    /// Every value of every timed result was exact.
    pub ok: bool,
    /// CPU seconds (user + sys, all threads) per timed operation, summed over `cpu_ranks` ranks.
    #[serde(default)]
    pub cpu_s: f64,
    /// How many ranks' CPU `cpu_s` covers: 1 for a rank alone, all of them where the launcher
    /// gathered every rank's figure.
    #[serde(default)]
    pub cpu_ranks: usize,
}

impl BenchRow {
    /// CPU nanoseconds per byte of the buffer, over the ranks measured: the transport's cost.
    pub fn cpu_ns_per_byte(&self) -> f64 {
        if self.bytes == 0 { 0.0 } else { self.cpu_s * 1e9 / self.bytes as f64 }
    }
}

/// This process's CPU time so far (user + sys of all its threads), in seconds.
pub fn process_cpu_seconds() -> f64 {
    cpu_clock_seconds(libc::CLOCK_PROCESS_CPUTIME_ID).unwrap_or(0.0)
}

/// This thread's CPU time so far (user + sys), in seconds.
pub fn thread_cpu_seconds() -> f64 {
    cpu_clock_seconds(libc::CLOCK_THREAD_CPUTIME_ID).expect("CLOCK_THREAD_CPUTIME_ID is always available on Linux")
}

fn cpu_clock_seconds(clock: libc::clockid_t) -> Option<f64> {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec to write to; the clock ids passed are constants Linux and
    // macOS have.
    let rc = unsafe { libc::clock_gettime(clock, &mut t) };
    (rc == 0).then_some(t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9)
}

/// `"64K"` → 65536; K, M, G are powers of 1024; a plain number is bytes.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1usize << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: usize = num.parse().map_err(|_| format!("size {s:?}: expected a number with an optional K, M or G suffix"))?;
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

/// A comma list of sizes and `LOW..HIGH` ranges (doubling): `"1K..256M"`, `"4,1K..16K,100000"`;
/// each size is rounded down to whole f32s.
pub fn parse_sizes(spec: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        if let Some((a, b)) = part.split_once("..") {
            let (mut s, e) = (parse_size(a)?, parse_size(b)?);
            if s == 0 || s > e {
                return Err(format!("sizes {part:?}: expected LOW..HIGH with 0 < LOW <= HIGH"));
            }
            while s <= e {
                out.push(s);
                s *= 2;
            }
        } else {
            out.push(parse_size(part)?);
        }
    }
    Ok(out.into_iter().map(|b| b / 4 * 4).collect())
}

/// Runs the sizes on `ar` as rank `rank` of `world`, each timed operation cut into `inflight`
/// all-reduces submitted together; every rank gets the rows (rank 0 reports).
pub fn run(
    ar: &mut dyn AllReduce,
    rank: usize,
    world: usize,
    transport: &str,
    sizes: &[usize],
    iters: usize,
    inflight: usize,
) -> Result<Vec<BenchRow>, RingError> {
    let mut rows = Vec::with_capacity(sizes.len());
    let total = (world * (world + 1) / 2) as f32;
    let inflight = inflight.max(1);
    for &bytes in sizes {
        let count = bytes / 4;
        // Built once per size. Each timed operation runs on the buffers the previous one returned,
        // refilled from `pattern` (a memcpy) and checked against `expected` (a memcmp) in place,
        // as a training loop reuses its gradient buffers and as the Gloo baseline reuses its
        // tensor: fresh 64 MiB buffers would be mapped and zeroed page by page between
        // operations, CPU that a 2-core machine then lacks while the ranks line up.
        let pattern: Vec<f32> = (0..count).map(|i| ((rank + 1) * (i % 13)) as f32).collect();
        let expected: Vec<f32> = (0..count).map(|i| total * (i % 13) as f32).collect();
        let per = count.div_ceil(inflight).max(1);
        // Bit for bit (every rank must hold identical results), compared as bytes: a memcmp, where
        // f32's `==` is a loop that stops to look at each value.
        let as_bytes = ringsam_collective::ring::le_bytes;
        let matches = |parts: &[Vec<f32>]| {
            parts.len() == expected.chunks(per).len() && parts.iter().zip(expected.chunks(per)).all(|(p, e)| as_bytes(p) == as_bytes(e))
        };
        let mut parts: Vec<Vec<f32>> = pattern.chunks(per).map(<[f32]>::to_vec).collect();
        parts = ar.allreduce_parts(parts, ReduceOp::Sum)?; // warm-up
        let mut ok = matches(&parts);
        let (mut elapsed, mut cpu) = (0.0f64, 0.0f64);
        for _ in 0..iters {
            for (p, src) in parts.iter_mut().zip(pattern.chunks(per)) {
                p.copy_from_slice(src);
            }
            // A one-value all-reduce lines the ranks up, so no rank's clock starts while another
            // is still refilling its buffer.
            ar.allreduce(vec![0.0], ReduceOp::Sum)?;
            let (t, c) = (Instant::now(), process_cpu_seconds());
            parts = ar.allreduce_parts(parts, ReduceOp::Sum)?;
            cpu += process_cpu_seconds() - c;
            elapsed += t.elapsed().as_secs_f64();
            ok &= matches(&parts);
        }
        let time = elapsed / iters.max(1) as f64;
        let algbw = if time > 0.0 { bytes as f64 / time / 1e9 } else { 0.0 };
        rows.push(BenchRow {
            transport: transport.to_string(),
            nproc: world,
            bytes,
            count,
            time_us: time * 1e6,
            algbw_gbs: algbw,
            busbw_gbs: algbw * 2.0 * (world as f64 - 1.0) / world as f64,
            ok,
            cpu_s: cpu / iters.max(1) as f64,
            cpu_ranks: 1,
        });
    }
    Ok(rows)
}

/// Single-threaded memcpy bandwidth for `bytes`, GB/s (best of 5), the reference the all-reduce
/// figures are compared with.
pub fn memcpy_gbs(bytes: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src); // fault the pages in
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    bytes as f64 / best / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_nccl_tests() {
        assert_eq!(parse_sizes("1K..8K").unwrap(), vec![1024, 2048, 4096, 8192]);
        assert_eq!(parse_sizes("4,64M").unwrap(), vec![4, 64 << 20]);
        assert_eq!(parse_sizes("4,1K..2K,9").unwrap(), vec![4, 1024, 2048, 8]);
        assert!(parse_sizes("8K..1K").is_err());
        assert!(parse_size("12Q").is_err());
    }

    #[test]
    fn inproc_bench_reports_correct_results() {
        let world = 3;
        let rings =
            ringsam_collective::inproc::InprocRing::connect((0..world).map(|r| ringsam_collective::RingConfig::new(r, world)).collect());
        let hs: Vec<_> = rings
            .into_iter()
            .enumerate()
            .map(|(r, mut ring)| std::thread::spawn(move || run(&mut ring, r, world, "inproc", &[4, 4096, 1 << 20], 2, 3).unwrap()))
            .collect();
        for h in hs {
            let rows = h.join().unwrap();
            assert!(rows.iter().all(|r| r.ok && r.time_us > 0.0), "{rows:?}");
        }
    }
}
