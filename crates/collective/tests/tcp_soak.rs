//! The TCP driver under sustained load, alone in its test binary: resident memory is a process-wide
//! figure, so no other test may run beside this one.

use std::net::SocketAddr;
use std::time::Duration;

use ringsam_collective::tcp::{TcpConfig, connect_with_listener};
use ringsam_collective::{ReduceOp, RingConfig, RingHandle};
use tokio::net::TcpListener;

const SECRET: &[u8] = b"0123456789abcdef-test-secret";

async fn form(world: usize, timeout: Duration) -> Vec<RingHandle> {
    let mut ls = Vec::new();
    for _ in 0..world {
        ls.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<SocketAddr> = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    let joins: Vec<_> = ls
        .into_iter()
        .enumerate()
        .map(|(r, l)| {
            let cfg = TcpConfig {
                ring: RingConfig { chunk: 1000, peer_timeout: timeout, ..RingConfig::new(r, world) },
                listen: addrs[r],
                next: addrs[(r + 1) % world],
                secret: SECRET.to_vec(),
                connect_timeout: timeout,
                on_refusal: None,
            };
            tokio::spawn(connect_with_listener(cfg, l))
        })
        .collect();
    let mut rings = Vec::new();
    for j in joins {
        rings.push(j.await.unwrap().unwrap());
    }
    rings
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// 1000 back-to-back all-reduces of mixed sizes on 4 ranks: all correct, no hang, and the
/// process's resident memory does not grow once buffers have reached their working size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_mixed_operations_do_not_leak() {
    let world = 4;
    let rings = form(world, Duration::from_secs(20)).await;
    let sizes = [1usize, 1000, 70_000, 300_000];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tasks: Vec<_> = rings
        .into_iter()
        .enumerate()
        .map(|(r, mut ring)| {
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0..1000 {
                    let len = sizes[i % sizes.len()];
                    let out = ring.allreduce((0..len).map(|j| ((r + 1) * (j % 3)) as f32).collect(), ReduceOp::Sum).await.unwrap();
                    assert!(out.iter().enumerate().all(|(j, &v)| v == (10 * (j % 3)) as f32), "rank {r} op {i}");
                    if r == 0 && (i == 200 || i == 999) {
                        let _ = tx.send(rss_kib());
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (early, late) = (rx.recv().await.unwrap(), rx.recv().await.unwrap());
    assert!(late <= early + 16 * 1024, "resident memory grew from {early} KiB (op 200) to {late} KiB (op 1000)");
    eprintln!("RSS after 200 ops: {early} KiB, after 1000: {late} KiB");
}
