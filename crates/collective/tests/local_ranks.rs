//! The local launcher: a failed rank ends the others (TERM, then KILL after the grace period,
//! even a stopped one), a stop request reaches every rank, and QUIC credentials are removed.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use ringsam_collective::local_ranks::LocalRanks;

/// Starts `scripts[r]` as rank `r` under `sh -c`.
fn start(scripts: &[&str], quic: bool) -> LocalRanks {
    let mut ranks = LocalRanks::prepare(scripts.len(), quic).unwrap();
    ranks
        .spawn(Path::new("/bin/sh"), true, |r, cmd| {
            cmd.args(["-c", scripts[r]]);
        })
        .unwrap();
    ranks
}

#[test]
fn a_failed_rank_ends_the_others_even_a_stopped_one() {
    // Rank 1 fails at once; rank 0 ignores TERM (a hung worker); rank 2 stops itself (SIGSTOP).
    let ranks = start(&["trap '' TERM; sleep 60", "exit 3", "kill -STOP $$; sleep 60"], false);
    let t0 = Instant::now();
    let exits = ranks.wait(&AtomicBool::new(false), Duration::from_millis(500)).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(20), "waited {:?}", t0.elapsed());
    assert_eq!(exits[1].status.code(), Some(3));
    assert!(!exits[1].ended_by_launcher);
    for r in [0, 2] {
        assert!(exits[r].ended_by_launcher && !exits[r].status.success(), "rank {r}: {:?}", exits[r]);
    }
}

#[test]
fn a_stop_request_reaches_every_rank_and_their_output_is_kept() {
    let script = "trap 'echo stopped; exit 143' TERM; echo ready; while :; do sleep 0.05; done";
    let ranks = start(&[script, script], false);
    std::thread::sleep(Duration::from_millis(300));
    let exits = ranks.wait(&AtomicBool::new(true), Duration::from_secs(10)).unwrap();
    for e in &exits {
        assert_eq!(e.status.code(), Some(143), "{e:?}");
        assert!(!e.ended_by_launcher);
    }
    for e in &exits {
        assert_eq!(String::from_utf8_lossy(&e.stdout), "ready\nstopped\n");
    }
}

#[test]
fn quic_credentials_live_in_a_private_directory_removed_with_the_launcher() {
    let ranks = start(&["true", "true"], true);
    let dir = ranks.certs_dir().unwrap();
    assert!(dir.join("ca.pem").exists() && dir.join("node-1.key").exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o077, 0, "readable by others");
    assert_eq!(ranks.quic_flags(1)[3], dir.join("node-1.pem").display().to_string());
    ranks.wait(&AtomicBool::new(false), Duration::from_secs(5)).unwrap();
    assert!(!dir.exists(), "{} left behind", dir.display());
}
