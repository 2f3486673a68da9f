//! The process's edges: exit codes and the errors that carry them, signals, the cluster secret
//! from the environment, and the allocator setting. Everything here is about this process, not
//! about training.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use ringsam_train::TrainError;

/// Exit codes, as docs/ARCHITECTURE.md ("Exit codes") defines them: Kubernetes and supervisors
/// act on them.
pub(crate) mod exit {
    /// Training finished (or the command did its work).
    pub const OK: u8 = 0;
    /// A runtime failure: retrying may help.
    pub const RUNTIME: u8 = 1;
    /// A usage or configuration error (clap's own code too): retrying cannot help.
    pub const USAGE: u8 = 2;
    /// Stopped by SIGTERM/SIGINT after writing a checkpoint: resumable (128 + SIGTERM).
    pub const STOPPED: u8 = 143;
}

/// An error that carries its exit code: a usage error (2) or a stop after a checkpoint (143)
/// that a command learned of by other means than a `TrainError` (from its workers, from clap).
#[derive(Debug)]
struct CodedError {
    code: u8,
    message: String,
}

impl std::fmt::Display for CodedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CodedError {}

/// A usage error (exit code 2): the message says what to change.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(CodedError { code: exit::USAGE, message: message.into() })
}

/// A stop after a checkpoint (exit code 143).
pub(crate) fn stopped(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(CodedError { code: exit::STOPPED, message: message.into() })
}

/// The exit code for `err`: what its outermost recognised cause says. Usage errors are those a
/// flag or a file the user names must change: a value out of range, an unknown model, a data
/// directory missing the dataset's files, a device this build or machine lacks.
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    use ringsam_data::DataError;
    use ringsam_tensor::TensorError;
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<CodedError>() {
            return e.code;
        }
        if cause.is::<ringsam_models::ModelError>() {
            return exit::USAGE;
        }
        if let Some(e) = cause.downcast_ref::<DataError>() {
            return if matches!(e, DataError::Missing { .. } | DataError::Config(_)) { exit::USAGE } else { exit::RUNTIME };
        }
        if let Some(TensorError::Device { .. } | TensorError::CudaNotImplemented { .. } | TensorError::Threads(_)) =
            cause.downcast_ref::<TensorError>()
        {
            return exit::USAGE;
        }
        match cause.downcast_ref::<TrainError>() {
            Some(TrainError::Interrupted { .. } | TrainError::Stopped(_)) => return exit::STOPPED,
            Some(TrainError::Config(_) | TrainError::Model(_) | TrainError::InitFrom(_)) => return exit::USAGE,
            Some(TrainError::Data(DataError::Missing { .. } | DataError::Config(_))) => return exit::USAGE,
            Some(TrainError::Tensor(TensorError::Device { .. } | TensorError::CudaNotImplemented { .. })) => return exit::USAGE,
            Some(_) => return exit::RUNTIME,
            None => {}
        }
    }
    exit::RUNTIME
}

/// Training and the ring free and reallocate the same large buffers (gradient chunks, quinn's
/// stream buffers, decoded images) thousands of times. glibc's defaults hand freed memory at the
/// top of a heap back to the OS and map larger blocks afresh, so each reuse pays page faults and
/// zeroed pages: ~15 % of a loopback QUIC all-reduce's CPU, measured with perf. Keeping up to
/// 1 GiB of freed memory per heap, and serving blocks up to glibc's 32 MiB ceiling from the heap,
/// trades a higher resident size for a steady state without faults (QUIC busbw 1.4-1.5x,
/// alternating runs; docs/BENCHMARKS.md, "Allocator").
pub(crate) fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it runs before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// A flag SIGTERM and SIGINT set: the run checkpoints and stops.
pub(crate) fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handler")?;
    }
    Ok(stop)
}

/// The cluster secret for TCP rings: `RINGSAM_CLUSTER_SECRET`, at least 128 bits
/// (`ringsam_collective::tcp::check_secret`; `ringsam certs --secret` prints one).
pub(crate) fn cluster_secret() -> Result<Vec<u8>> {
    let Ok(secret) = std::env::var("RINGSAM_CLUSTER_SECRET") else {
        return Err(usage(
            "no cluster secret: set RINGSAM_CLUSTER_SECRET on every rank (`ringsam certs --secret` prints one); without a secret there is no ring",
        ));
    };
    ringsam_collective::tcp::check_secret(secret.as_bytes()).map_err(|e| usage(format!("RINGSAM_CLUSTER_SECRET: {e}")))?;
    Ok(secret.into_bytes())
}

/// The memory a run may use: the smaller of the host's `MemAvailable` and this process's cgroup
/// limit (a pod's `resources.limits.memory`), when either can be read; `RINGSAM_MEMORY_LIMIT`
/// (bytes) overrides both, for tests and for hosts whose accounting misleads.
pub(crate) fn available_memory() -> Option<u64> {
    if let Some(v) = std::env::var("RINGSAM_MEMORY_LIMIT").ok().and_then(|v| v.trim().parse().ok()) {
        return Some(v);
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|v| v.trim().parse::<u64>().ok());
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Logs connections a listening rank refused (who, and why) and counts them in
/// `ringsam_ring_refusals_total`. Rate-limited: the first 20, then every 100th, so a flood of
/// strangers cannot flood the log too.
pub(crate) fn refusal_log(who: String) -> ringsam_collective::transport::Refusals {
    let seen = std::sync::atomic::AtomicU64::new(0);
    ringsam_collective::transport::Refusals(Arc::new(move |peer, why| {
        let n = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        ringsam_train::telemetry::count_refusal();
        if n <= 20 || n.is_multiple_of(100) {
            // One write per line: ranks may share a terminal.
            use std::io::Write as _;
            let _ =
                std::io::stderr().write_all(format!("ringsam: {who}: refused a connection from {peer}: {why} ({n} so far)\n").as_bytes());
        }
    }))
}
