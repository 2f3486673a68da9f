//! `ringsam launch` and `ringsam worker` end to end: a data-parallel run on loopback writes one
//! set of outputs, and a replica killed mid-run makes the survivor fail within the ring timeout
//! with a clear error, leaving the last checkpoint loadable.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{TINY_TRAINING, ringsam, stdout_ok};

const TRAIN: &[&str] = TINY_TRAINING;

fn run_dir(out: &Path) -> std::path::PathBuf {
    out.join("lr_0.1/wd_0.001/rho_0.05/seed_0")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free port P whose P + 2 — the second local replica's ring address — this test holds: a
/// replica that listened there instead of taking its pipe would fail to bind it.
fn port_with_replica_1_held() -> (u16, std::net::TcpListener) {
    loop {
        let p = free_port();
        if let Some(held) = p.checked_add(2).and_then(|q| std::net::TcpListener::bind(("127.0.0.1", q)).ok()) {
            return (p, held);
        }
    }
}

#[test]
fn launch_two_quic_replicas_writes_one_run() {
    let _ports = crate::util::ports_lock();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let mut args = vec!["launch", "--nproc", "2", "--"];
    args.extend_from_slice(TRAIN);
    args.extend_from_slice(&["--num_epochs", "2", "--max_steps", "25", "--check_replicas_every", "5", "--output_dir", out]);
    let o = ringsam(&args);
    let text = stdout_ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("steps: 25"), "{text}\n{err}");
    assert_eq!(text.matches("run directory").count(), 1, "only rank 0 reports: {text}");
    assert!(err.contains("rank 0: per step") && err.contains("ascent exchange") && err.contains("descent exchange"), "{err}");
    let mut ckpts: Vec<String> = std::fs::read_dir(run_dir(tmp.path()).join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    ckpts.sort();
    assert_eq!(ckpts, vec!["checkpoint_22", "checkpoint_25"]);
    let events = std::fs::read_dir(run_dir(tmp.path()))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("events."))
        .count();
    assert_eq!(events, 1, "only rank 0 writes events");
}

#[test]
fn a_killed_replica_fails_the_survivor_within_the_ring_timeout() {
    let _ports = crate::util::ports_lock();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let peers = format!("127.0.0.1:{},127.0.0.1:{}", free_port(), free_port());
    let spawn = |rank: &str| {
        Command::new(env!("CARGO_BIN_EXE_ringsam"))
            .args(["--threads", "1", "worker", "--rank", rank, "--world-size", "2", "--peers", &peers, "--transport", "tcp"])
            .args(TRAIN)
            .args(["--num_epochs", "1000", "--ring_timeout_seconds", "3", "--output_dir", out])
            .env("RINGSAM_CLUSTER_SECRET", "a-test-cluster-secret-of-some-length")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let survivor = spawn("0");
    let mut victim = spawn("1");
    // Wait for the end-of-epoch checkpoint (22 steps), then kill rank 1 outright.
    let first = run_dir(tmp.path()).join("checkpoints/checkpoint_22");
    let t0 = Instant::now();
    while !first.join("MANIFEST.json").exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint after 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    victim.kill().unwrap();
    let killed_at = Instant::now();
    victim.wait().unwrap();
    let o = survivor.wait_with_output().unwrap();
    let waited = killed_at.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(waited < Duration::from_secs(3 + 10), "the survivor took {waited:?} to notice");
    assert!(err.contains("rank 0") && err.contains("ring"), "{err}");
    // The last checkpoint is intact: it loads and evaluates.
    let o = ringsam(&["eval", "--checkpoint", first.to_str().unwrap()]);
    assert!(stdout_ok(&o).contains("accuracy"));
}

#[test]
fn one_worker_with_two_local_replicas_trains_as_two_workers() {
    // `worker --local_replicas 2` (a pod owning its node's GPUs; here on the CPU) runs ranks 0 and
    // 1 as threads, their ring addresses P and P + 2, joined by pipes: the same job as
    // `launch --nproc 2`, to the bit.
    let _ports = crate::util::ports_lock();
    let steps = ["--max_steps", "6", "--num_epochs", "1"];
    let (two, one) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut args = vec!["launch", "--nproc", "2", "--transport", "tcp", "--"];
    args.extend_from_slice(TRAIN);
    args.extend_from_slice(&steps);
    args.extend_from_slice(&["--output_dir", two.path().to_str().unwrap()]);
    assert!(stdout_ok(&ringsam(&args)).contains("steps: 6"));
    let local_worker = |out: &Path, elastic: &[&str]| {
        let (port, _held) = port_with_replica_1_held();
        let o = Command::new(env!("CARGO_BIN_EXE_ringsam"))
            .args(["--threads", "1", "worker", "--rank", "0", "--world_size", "1", "--local_replicas", "2"])
            .args(["--peers", &format!("127.0.0.1:{port}"), "--transport", "tcp"])
            .args(elastic)
            .args(TRAIN)
            .args(steps)
            .args(["--output_dir", out.to_str().unwrap()])
            .env("RINGSAM_CLUSTER_SECRET", "a-test-cluster-secret-of-some-length")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(stdout_ok(&o).contains("steps: 6"), "{err}");
        (port, err)
    };
    let (port, err) = local_worker(one.path(), &[]);
    assert!(
        err.contains(&format!("rank 1: joining a ring of 2 at 127.0.0.1:{} (ranks 0, 1 meet over in-process pipes)", port + 2)),
        "{err}"
    );
    assert!(err.contains("2 local replicas: ") && err.contains(" decoder thread(s) each, the engine's 1 thread(s) shared"), "{err}");
    let model = |dir: &Path| std::fs::read(run_dir(dir).join("checkpoints/checkpoint_6/model.safetensors")).unwrap();
    assert!(model(two.path()) == model(one.path()), "two local replicas and two workers wrote different parameters");
    // Elastic: each local replica is a slot of its own (membership on port + 2i + 1).
    let elastic = tempfile::tempdir().unwrap();
    let (_, err) = local_worker(elastic.path(), &["--min_replicas", "2"]);
    assert!(err.contains("elastic worker 1 of 2"), "{err}");
    assert!(model(two.path()) == model(elastic.path()), "an elastic pod of two local replicas trained differently");
}

#[test]
fn two_pods_of_two_local_replicas_train_as_four_workers() {
    // Ranks 0 and 1 in one process, 2 and 3 in another: pipes within each, TCP between them
    // (1 → 2 and 3 → 0). The same job as `launch --nproc 4`, to the bit.
    let _ports = crate::util::ports_lock();
    let steps = ["--max_steps", "4", "--num_epochs", "1"];
    let (four, pods) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut args = vec!["launch", "--nproc", "4", "--transport", "tcp", "--"];
    args.extend_from_slice(TRAIN);
    args.extend_from_slice(&steps);
    args.extend_from_slice(&["--output_dir", four.path().to_str().unwrap()]);
    assert!(stdout_ok(&ringsam(&args)).contains("steps: 4"));
    let ((a, _held_a), (b, _held_b)) = (port_with_replica_1_held(), port_with_replica_1_held());
    let peers = format!("127.0.0.1:{a},127.0.0.1:{b}");
    let pod = |p: &str| {
        Command::new(env!("CARGO_BIN_EXE_ringsam"))
            .args(["--threads", "1", "worker", "--rank", p, "--world_size", "2", "--local_replicas", "2"])
            .args(["--peers", &peers, "--transport", "tcp"])
            .args(TRAIN)
            .args(steps)
            .args(["--output_dir", pods.path().to_str().unwrap()])
            .env("RINGSAM_CLUSTER_SECRET", "a-test-cluster-secret-of-some-length")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (pod("0"), pod("1"));
    let (first, second) = (first.wait_with_output().unwrap(), second.wait_with_output().unwrap());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success() && err.contains("(ranks 2, 3 meet over in-process pipes)"), "{err}");
    assert!(stdout_ok(&first).contains("steps: 4"));
    let model = |dir: &Path| std::fs::read(run_dir(dir).join("checkpoints/checkpoint_4/model.safetensors")).unwrap();
    assert!(model(four.path()) == model(pods.path()), "two pods of two local replicas and four workers wrote different parameters");
}
