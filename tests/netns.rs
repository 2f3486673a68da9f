//! The ring between test hosts with their own addresses and shaped links
//! (scripts/netns_ring.sh: network namespaces, veth through a bridge, tbf egress), driven by
//! scripts/netns_allreduce.sh: a line-rate probe, then `bench allreduce` over TCP and QUIC, one
//! process per host. Also: the script removes its namespaces when the command fails and when it
//! is interrupted. Needs root and iproute2, which this project's machines and CI have.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts").join(name)
}

fn namespaces(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(String::from)
        .collect()
}

fn netns_run(prefix: &str, hosts: &str, rate: &str, command: &[&str]) -> Output {
    let mut c = Command::new(script("netns_ring.sh"));
    c.args(["run", "--hosts", hosts, "--rate", rate, "--prefix", prefix, "--"]).args(command);
    c.output().expect("running scripts/netns_ring.sh")
}

#[test]
fn ring_over_shaped_links_between_namespaced_hosts() {
    let prefix = format!("rst{}a", std::process::id());
    let bin = env!("CARGO_BIN_EXE_ringsam");
    let o = netns_run(
        &prefix,
        "3",
        "200mbit",
        &[
            script("netns_allreduce.sh").to_str().unwrap(),
            "--bin",
            bin,
            "--transports",
            "tcp,quic",
            "--sizes",
            "4M",
            "--iters",
            "2",
            "--link-seconds",
            "1",
        ],
    );
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}\n{err}");
    assert!(namespaces(&prefix).is_empty(), "namespaces left behind");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    // The shaper holds one TCP stream to the rate (200 Mbit/s), give or take the bucket.
    let link = lines[0]["link"]["gbit_s"].as_f64().unwrap();
    assert!((0.12..=0.22).contains(&link), "single-stream rate {link} Gbit/s through a 200 Mbit/s shaper");
    let rows = &lines[1..];
    assert_eq!(rows.len(), 2, "{out}");
    for r in rows {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["nproc"], 3);
        // Each rank's egress is the shaped link: busbw cannot beat the line by more than noise,
        // and the ring should use a fair part of it even in this short run.
        let f = r["fraction_of_line_rate"].as_f64().unwrap();
        assert!((0.3..=1.15).contains(&f), "{}: busbw at {f} of the line rate", r["transport"]);
    }
}

#[test]
fn namespaces_are_removed_when_the_command_fails_or_the_script_is_interrupted() {
    let prefix = format!("rst{}b", std::process::id());
    let o = netns_run(&prefix, "2", "100mbit", &["false"]);
    assert!(!o.status.success());
    assert!(namespaces(&prefix).is_empty(), "left behind after a failing command");

    let prefix = format!("rst{}c", std::process::id());
    let mut child = Command::new(script("netns_ring.sh"))
        .args(["run", "--hosts", "2", "--rate", "100mbit", "--prefix", &prefix, "--", "sleep", "30"])
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while namespaces(&prefix).len() < 3 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(namespaces(&prefix).len(), 3, "two hosts and the switch were built");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(namespaces(&prefix).is_empty(), "left behind after SIGTERM: {:?}", namespaces(&prefix));
}
