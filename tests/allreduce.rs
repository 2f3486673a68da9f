//! `ringsam bench allreduce` end to end: real processes over TCP on loopback.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{ringsam, stdout_ok};

#[test]
fn tcp_bench_with_local_processes_reports_correct_rows() {
    let _ports = crate::util::ports_lock();
    let out = stdout_ok(&ringsam(&[
        "bench",
        "allreduce",
        "--nproc",
        "3",
        "--transport",
        "tcp",
        "--sizes",
        "4,1K..16K,100000",
        "--iters",
        "2",
        "--json",
    ]));
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 7); // 4, 1K, 2K, 4K, 8K, 16K, 100000
    for r in &rows {
        assert_eq!(r["transport"], "tcp");
        assert_eq!(r["nproc"], 3);
        assert_eq!(r["ok"], true, "{r}");
        assert!(r["busbw_gbs"].as_f64().unwrap() > 0.0);
        // Every rank's CPU time, added up by the launcher.
        assert_eq!(r["cpu_ranks"], 3, "{r}");
        assert!(r["cpu_s"].as_f64().unwrap() >= 0.0, "{r}");
    }
    assert!(rows[6]["cpu_s"].as_f64().unwrap() > 0.0, "no CPU time measured for 400 KB: {}", rows[6]);
}

#[test]
fn inproc_bench_table() {
    let out = stdout_ok(&ringsam(&["bench", "allreduce", "--nproc", "2", "--transport", "inproc", "--sizes", "1K..4K", "--iters", "1"]));
    assert!(out.contains("busbw") && out.lines().filter(|l| l.trim_end().ends_with("yes")).count() == 3, "{out}");
    let out =
        stdout_ok(&ringsam(&["bench", "allreduce", "--nproc", "2", "--transport", "inproc", "--sizes", "64K", "--iters", "1", "--cpu"]));
    assert!(out.contains("ns/B") && out.lines().any(|l| l.contains(" yes ") && l.trim_end().ends_with(" 2")), "{out}");
}

#[test]
fn without_a_secret_there_is_no_ring() {
    let _ports = crate::util::ports_lock();
    let out = Command::new(env!("CARGO_BIN_EXE_ringsam"))
        .args(["bench", "allreduce", "--transport", "tcp", "--rank", "0", "--peers", "127.0.0.1:1,127.0.0.1:2"])
        .env_remove("RINGSAM_CLUSTER_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cluster secret"));
}

/// A rank killed in the middle of an operation: the survivors exit with an error, no hang. Over
/// TCP, and over QUIC (the direct driver, the default: a killed rank sends no close, so its
/// neighbours learn from silence and from the survivors' own closes).
#[test]
fn killing_a_rank_mid_operation_fails_the_others_quickly() {
    let certs = tempfile::tempdir().unwrap();
    stdout_ok(&ringsam(&["certs", "--out", certs.path().to_str().unwrap(), "--nodes", "3"]));
    for transport in ["tcp", "quic"] {
        kill_a_rank_mid_operation(transport, certs.path());
    }
}

fn kill_a_rank_mid_operation(transport: &str, certs: &std::path::Path) {
    let _ports = crate::util::ports_lock();
    let ports: Vec<String> = (0..3)
        .map(|_| match transport {
            "tcp" => std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string(),
            _ => std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string(),
        })
        .collect();
    let peers = ports.join(",");
    let mut kids: Vec<_> = (0..3)
        .map(|r| {
            let quic_files = if transport == "quic" { crate::util::quic_cert_flags(certs, r) } else { Vec::new() };
            Command::new(env!("CARGO_BIN_EXE_ringsam"))
                .args(["bench", "allreduce", "--transport", transport])
                .args(&quic_files)
                .args(["--sizes", "64M", "--iters", "50", "--timeout", "5", "--rank", &r.to_string(), "--peers", &peers])
                .env("RINGSAM_CLUSTER_SECRET", "a-test-secret-of-some-length")
                .env("RINGSAM_THREADS", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    kids[1].kill().unwrap();
    let t0 = Instant::now();
    for (r, k) in kids.into_iter().enumerate() {
        let o = k.wait_with_output().unwrap();
        if r != 1 {
            // A lost peer is a runtime failure (exit code 1: retrying may help), not a usage error.
            assert_eq!(o.status.code(), Some(1), "{transport} rank {r}: {}", String::from_utf8_lossy(&o.stderr));
            let err = String::from_utf8_lossy(&o.stderr);
            // Mid-operation the link drops; on a slow machine the ring may not have formed yet.
            let why = ["down", "sent nothing", "not formed", "lost"];
            assert!(why.iter().any(|w| err.contains(w)), "{transport} rank {r}: {err}");
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{transport}: survivors took {:?}", t0.elapsed());
}

#[test]
fn quic_bench_with_local_processes_and_ephemeral_certificates() {
    let _ports = crate::util::ports_lock();
    let run = ringsam(&[
        "bench",
        "allreduce",
        "--nproc",
        "3",
        "--transport",
        "quic",
        "--sizes",
        "4,64K",
        "--iters",
        "2",
        "--json",
        "--quic-stats",
    ]);
    let out = stdout_ok(&run);
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["transport"] == "quic" && r["ok"] == true), "{out}");
    // --quic-stats reaches the ranks the launcher starts: each reports its path.
    let err = String::from_utf8_lossy(&run.stderr);
    for r in 0..3 {
        assert!(err.contains(&format!("rank {r}: QUIC to the next rank: rtt")), "{err}");
    }
}

#[test]
fn certs_writes_a_ca_and_node_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    stdout_ok(&ringsam(&["certs", "--out", tmp.path().to_str().unwrap(), "--nodes", "2"]));
    for f in ["ca.pem", "node-0.pem", "node-0.key", "node-1.pem", "node-1.key"] {
        assert!(tmp.path().join(f).exists(), "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(tmp.path().join("node-0.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[test]
fn plot_writes_a_png() {
    let tmp = tempfile::tempdir().unwrap();
    let png = tmp.path().join("busbw.png");
    stdout_ok(&ringsam(&[
        "bench",
        "allreduce",
        "--nproc",
        "2",
        "--transport",
        "inproc",
        "--sizes",
        "1K..8K",
        "--iters",
        "1",
        "--plot",
        png.to_str().unwrap(),
    ]));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}
