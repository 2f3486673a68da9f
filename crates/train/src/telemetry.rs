//! Metrics of a replica, in Prometheus' text format on `--metrics_addr`.
//!
//! The loop fills plain structs ([`crate::StepReport`], [`crate::grad_sync::ExchangeStats`]) and
//! [`export_step`] is the one place they become metrics, so the names are all here:
//!
//! | metric | kind | what |
//! |---|---|---|
//! | `ringsam_steps_total` | counter | steps taken |
//! | `ringsam_step_seconds` | gauge | the last step's wall time (SAM step only) |
//! | `ringsam_images_per_second` | gauge | this replica's images over that time |
//! | `ringsam_allreduce_bytes_total{exchange}` | counter | gradient bytes sent to the ring, `ascent` or `descent` |
//! | `ringsam_allreduce_seconds{exchange}` | gauge | first bucket submitted → last result, last step |
//! | `ringsam_allreduce_exposed_seconds{exchange}` | gauge | of those, waited for after backward |
//! | `ringsam_loader_queue_depth` | gauge | batches ready when the step started (0: starved for data) |
//! | `ringsam_train_loss` | gauge | the last step's loss (mean over replicas) |
//! | `ringsam_loader_skipped_total` | counter | samples the shard loader skipped (bad record, JPEG or label) |
//! | `ringsam_ring_refusals_total` | counter | connections the rings refused |
//! | `ringsam_membership_generation` | gauge | the elastic job's generation this worker trains in |
//! | `ringsam_recovery_seconds` | gauge | the last generation's time from formed to ready (rings, state) |
//! | `ringsam_redone_steps_total` | counter | steps this worker had done and lost to recoveries |
//! | `ringsam_restarts_total` | counter | restarts `ringsam launch` made in this job before it started this worker |
//!
//! Every series carries a `rank` label. The endpoint is a minimal HTTP/1.1 responder on its own
//! thread: it reads at most 8 KiB of any request, for at most 2 s, and answers every path with
//! the current text; scrapers need nothing more, and nothing a client sends can grow our memory.
//! Two paths answer Kubernetes' probes instead:
//! - `/healthz`: 200 while the process answers (a liveness probe: a hung process is restarted);
//! - `/readyz`: 503 until this replica has taken a step, 200 after. A replica waiting for its
//!   peers or loading data is alive but not ready; the ring's headless Service publishes
//!   not-ready addresses, so peers still find it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::{StepReport, TrainError};

/// Installs the global recorder and serves it on `addr`; returns the bound address.
pub fn serve_prometheus(addr: SocketAddr, rank: usize) -> Result<SocketAddr, TrainError> {
    let handle = PrometheusBuilder::new()
        .add_global_label("rank", rank.to_string())
        .install_recorder()
        .map_err(|e| TrainError::Runtime(format!("installing the metrics recorder: {e}")))?;
    let listener = TcpListener::bind(addr).map_err(|source| TrainError::Output { path: format!("metrics endpoint {addr}"), source })?;
    let bound = listener.local_addr().map_err(|source| TrainError::Output { path: format!("metrics endpoint {addr}"), source })?;
    std::thread::Builder::new()
        .name("ringsam-metrics".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = answer(conn, &handle); // one bad client must not stop the endpoint
            }
        })
        .map_err(|e| TrainError::Runtime(format!("starting the metrics thread: {e}")))?;
    Ok(bound)
}

fn answer(mut conn: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut req = [0u8; 8192];
    let mut got = 0;
    // Read until the end of the headers, the buffer is full or the 2 s are spent (one deadline for
    // the whole request: a client trickling bytes cannot hold the endpoint longer).
    while got < req.len() && !req[..got].windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        conn.set_read_timeout(Some(left))?;
        match conn.read(&mut req[got..])? {
            0 => break,
            n => got += n,
        }
    }
    let (status, content_type, body) = match request_path(&req[..got]) {
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
        "/readyz" if READY.load(Ordering::Relaxed) => ("200 OK", "text/plain", "ready\n".to_string()),
        "/readyz" => ("503 Service Unavailable", "text/plain", "not ready: no step taken yet\n".to_string()),
        _ => {
            handle.run_upkeep();
            ("200 OK", "text/plain; version=0.0.4", handle.render())
        }
    };
    write!(conn, "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
    conn.write_all(body.as_bytes())
}

/// Whether this replica has taken a step (`/readyz`).
static READY: AtomicBool = AtomicBool::new(false);

/// The path of an HTTP request line (`GET /readyz HTTP/1.1`), without a query; "" if none.
fn request_path(req: &[u8]) -> &str {
    let line = req.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    std::str::from_utf8(path).unwrap_or_default()
}

/// Counts a connection the rings refused (`ringsam_ring_refusals_total`).
pub fn count_refusal() {
    counter!("ringsam_ring_refusals_total").increment(1);
}

/// A generation formed and recovered (elastic runs; see the table in the module docs).
pub fn membership_changed(generation: u64, redone: u64, recovery_seconds: f64) {
    if QUIET.with(std::cell::Cell::get) {
        return;
    }
    gauge!("ringsam_membership_generation").set(generation as f64);
    gauge!("ringsam_recovery_seconds").set(recovery_seconds);
    counter!("ringsam_redone_steps_total").increment(redone);
}

/// The job's restarts so far, as the launcher that started this worker counted them.
pub fn restarts(count: u64) {
    counter!("ringsam_restarts_total").absolute(count);
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The steps trained on this thread are not exported: a worker running several replicas
/// (`--local_replicas`) has one recorder, labelled with its first replica's rank, and exports
/// that replica's steps only.
pub fn quiet_this_thread() {
    QUIET.with(|q| q.set(true));
}

/// Exports one step (see the table in the module docs; metrics are a no-op when no recorder is
/// installed) and marks the replica ready.
pub fn export_step(r: &StepReport, seconds: f64, images: usize, queue_depth: usize, loader_skipped: usize) {
    if QUIET.with(std::cell::Cell::get) {
        return;
    }
    READY.store(true, Ordering::Relaxed);
    counter!("ringsam_steps_total").increment(1);
    counter!("ringsam_loader_skipped_total").absolute(loader_skipped as u64);
    gauge!("ringsam_step_seconds").set(seconds);
    gauge!("ringsam_images_per_second").set(if seconds > 0.0 { images as f64 / seconds } else { 0.0 });
    gauge!("ringsam_loader_queue_depth").set(queue_depth as f64);
    gauge!("ringsam_train_loss").set(r.loss as f64);
    for (name, x) in [("ascent", &r.ascent_exchange), ("descent", &r.descent_exchange)] {
        counter!("ringsam_allreduce_bytes_total", "exchange" => name).increment(x.bytes);
        gauge!("ringsam_allreduce_seconds", "exchange" => name).set(x.seconds);
        gauge!("ringsam_allreduce_exposed_seconds", "exchange" => name).set(x.exposed_seconds);
    }
}
