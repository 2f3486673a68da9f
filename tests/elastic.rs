//! Elastic training end to end (issue 19): three `ringsam worker` processes on loopback, one of
//! them killed with SIGKILL mid-run. With `--min_replicas 3` the survivors wait for the killed
//! slot to come back, hand it their state from memory, and finish with parameters BITWISE equal
//! to an uninterrupted run's. With `--min_replicas 2` they go on as two (one takes two of the
//! three micro-batches) and finish equal to it within 1e-5 relative — on SmallCnn: WRN-10-1's
//! batch norm over 2×2 maps of 16 examples amplifies float rounding on some trajectories (measured
//! on one process: 1 and 2 replicas agree to 2e-7 after 8 steps at learning rate 0.1 and differ
//! by 1e-2 at 0.09999993), so summation order alone can move it past any fixed tolerance.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: &str = "30";

/// `TINY_TRAINING` with a batch of 48: three micro-batches of 16 (`--max_replicas` 3).
/// Checkpoints every second too, so a whole-job restart has one to resume from.
const TRAIN: &[&str] = &[
    "--dataset",
    "digits",
    "--batch_size",
    "48",
    "--image_level_augmentations",
    "none",
    "--sam_rho",
    "0.05",
    "--save_progress_seconds",
    "1",
    "--log_sample_ids",
];

struct Job {
    out: tempfile::TempDir,
    peers: String,
    min: &'static str,
    model: &'static str,
    steps: &'static str,
    /// Slots (3 unless a test asks for more).
    world: usize,
    /// Over QUIC, the certificates' directory (`ringsam certs`); over TCP (the default), none.
    quic_certs: Option<PathBuf>,
}

impl Job {
    fn new(min: &'static str, model: &'static str) -> Job {
        Self::of(3, min, model)
    }

    /// A job of `world` slots.
    fn of(world: usize, min: &'static str, model: &'static str) -> Job {
        let ports: Vec<u16> = free_port_pairs(world);
        let peers = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
        Job { out: tempfile::tempdir().unwrap(), peers, min, model, steps: STEPS, world, quic_certs: None }
    }

    /// A job of three slots whose rings run over QUIC (its default driver).
    fn over_quic(min: &'static str, model: &'static str) -> Job {
        let job = Self::new(min, model);
        let dir = job.out.path().join("certs");
        crate::util::stdout_ok(&crate::util::ringsam(&["certs", "--out", dir.to_str().unwrap(), "--nodes", "3"]));
        Job { quic_certs: Some(dir), ..job }
    }

    /// `--transport` and, over QUIC, slot `slot`'s certificate flags.
    fn transport_flags(&self, slot: usize) -> Vec<String> {
        let Some(dir) = &self.quic_certs else { return vec!["--transport".into(), "tcp".into()] };
        [vec!["--transport".into(), "quic".into()], crate::util::quic_cert_flags(dir, slot)].concat()
    }

    fn log(&self, slot: usize) -> PathBuf {
        self.out.path().join(format!("slot-{slot}.log"))
    }

    /// Starts slot `slot`; its stderr is appended to its log file.
    fn spawn(&self, slot: usize) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log(slot)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_ringsam"))
            .args([
                "--threads",
                "1",
                "worker",
                "--rank",
                &slot.to_string(),
                "--world_size",
                &self.world.to_string(),
                "--peers",
                &self.peers,
            ])
            .args(self.transport_flags(slot))
            .args(["--min_replicas", self.min, "--heartbeat_seconds", "0.2", "--rendezvous_settle_seconds", "0.5"])
            .args(["--connect_timeout", "30"])
            .args(TRAIN)
            .args(["--model_name", self.model])
            .args(["--max_steps", self.steps, "--log_every_steps", "1", "--ring_timeout_seconds", "20"])
            .args(["--output_dir", self.out.path().to_str().unwrap()])
            .env("RINGSAM_CLUSTER_SECRET", "an-elastic-test-cluster-secret")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn run_dir(&self) -> PathBuf {
        self.out.path().join("lr_0.1/wd_0.001/rho_0.05/seed_0")
    }

    fn text(&self, slot: usize) -> String {
        std::fs::read_to_string(self.log(slot)).unwrap_or_default()
    }
}

/// `n` loopback ports, each with the next one free too (the membership protocol's UDP port).
fn free_port_pairs(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    while held.len() < n {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        let Ok(b) = std::net::UdpSocket::bind(("127.0.0.1", p.wrapping_add(1))) else { continue };
        if held.iter().all(|(q, _, _): &(u16, _, _)| q.abs_diff(p) > 1) {
            held.push((p, a, b));
        }
    }
    held.into_iter().map(|(p, _, _)| p).collect()
}

/// Waits for `child` up to `limit`, killing it if it takes longer.
fn wait(mut child: Child, limit: Duration, what: &str, job: &Job) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let logs: Vec<String> = (0..job.world).map(|s| format!("--- slot {s}\n{}", job.text(s))).collect();
            panic!("{what} did not finish in {limit:?}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until slot `slot` has logged step `step` of the run.
fn wait_for_step(job: &Job, slot: usize, step: usize) {
    let t0 = Instant::now();
    let needle = format!("step {step}/");
    while !job.text(slot).contains(&needle) {
        assert!(t0.elapsed() < Duration::from_secs(120), "slot {slot} never reached step {step}:\n{}", job.text(slot));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The final checkpoint's parameters and statistics, by name (a run of `STEPS` steps).
fn final_model(run_dir: &Path) -> Vec<(String, Vec<f32>)> {
    final_model_at(run_dir, STEPS)
}

fn final_model_at(run_dir: &Path, steps: &str) -> Vec<(String, Vec<f32>)> {
    crate::util::f32_tensors(&std::fs::read(run_dir.join(format!("checkpoints/checkpoint_{steps}/model.safetensors"))).unwrap())
}

/// Three workers of `model` from start to end, none lost: the final model and which examples
/// each batch took.
fn uninterrupted(model: &'static str) -> (Vec<(String, Vec<f32>)>, Samples) {
    let job = Job::new("3", model);
    finish((0..3).map(|s| Some(job.spawn(s))).collect(), &job);
    (final_model(&job.run_dir()), samples(&job))
}

/// Examples by (epoch, batch), as `--log_sample_ids` recorded them.
type Samples = ringsam_train::sample_log::Taken;

fn samples(job: &Job) -> Samples {
    ringsam_train::sample_log::consumed(&job.run_dir()).unwrap()
}

/// No example repeated or skipped: every batch took exactly the reference's examples.
fn assert_same_samples(job: &Job, reference: &Samples, what: &str) {
    if let Some(why) = ringsam_train::sample_log::compare(&samples(job), reference) {
        panic!("{what}: {why}\n{}", generations(job).join("\n"));
    }
}

/// Starts the three slots and kills slot 2 with SIGKILL once slot 0 has done 8 steps.
fn start_and_kill_slot_2(job: &Job) -> Vec<Option<Child>> {
    let mut children: Vec<Option<Child>> = (0..3).map(|s| Some(job.spawn(s))).collect();
    wait_for_step(job, 0, 8);
    let mut victim = children[2].take().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    children
}

/// Waits for every worker still running; each must succeed.
fn finish(children: Vec<Option<Child>>, job: &Job) {
    for (s, c) in children.into_iter().enumerate() {
        let Some(c) = c else { continue };
        let status = wait(c, Duration::from_secs(240), &format!("slot {s}"), job);
        assert!(status.success(), "slot {s}: {status}\n{}", job.text(s));
    }
}

#[test]
fn a_killed_worker_comes_back_and_the_run_ends_bitwise_as_if_nothing_happened() {
    let _ports = crate::util::ports_lock();
    let (reference, taken) = uninterrupted("WideResnet10x1");
    let job = Job::new("3", "WideResnet10x1");
    let mut children = start_and_kill_slot_2(&job);
    std::thread::sleep(Duration::from_millis(500));
    children[2] = Some(job.spawn(2)); // what `ringsam launch --max_restarts` or Kubernetes does
    finish(children, &job);
    let log0 = job.text(0);
    assert!(log0.contains("state from the memory of slot"), "recovered from memory:\n{log0}");
    let got = final_model(&job.run_dir());
    let differ: Vec<String> = got
        .iter()
        .zip(&reference)
        .filter(|(a, b)| a != b)
        .map(|((name, a), (_, b))| format!("{name}: max diff {:e}", a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))))
        .collect();
    assert!(differ.is_empty(), "same world after recovery must be bitwise equal; differ: {differ:?}\n{log0}\n--- slot 2\n{}", job.text(2));
    assert_same_samples(&job, &taken, "kill and restart");
}

/// A drained or deleted pod: SIGTERM to one worker. It checkpoints with the others and exits 143;
/// they go on (waiting for it, with `--min_replicas 3`) instead of stopping too, and when it comes
/// back the run ends bitwise equal to an uninterrupted one.
#[test]
fn a_worker_stopped_by_sigterm_leaves_alone_and_the_run_ends_bitwise() {
    let _ports = crate::util::ports_lock();
    let (reference, taken) = uninterrupted("WideResnet10x1");
    let job = Job::new("3", "WideResnet10x1");
    let mut children: Vec<Option<Child>> = (0..3).map(|s| Some(job.spawn(s))).collect();
    wait_for_step(&job, 0, 8);
    let leaver = children[2].take().unwrap();
    signal(&leaver, libc::SIGTERM);
    let status = wait(leaver, Duration::from_secs(60), "slot 2 after SIGTERM", &job);
    assert_eq!(status.code(), Some(143), "slot 2 exits as stopped\n{}", job.text(2));
    assert!(job.text(2).contains("stop requested: checkpoint at step"), "{}", job.text(2));
    std::thread::sleep(Duration::from_secs(1)); // time to stop, had they been told to
    for (s, child) in children.iter_mut().enumerate().take(2) {
        let still = child.as_mut().unwrap().try_wait().unwrap();
        assert!(still.is_none(), "slot {s} stopped with slot 2: {still:?}\n{}", job.text(s));
    }
    children[2] = Some(job.spawn(2)); // the replacement pod
    finish(children, &job);
    assert!(final_model(&job.run_dir()) == reference, "bitwise equal after a SIGTERM to one worker\n{}", generations(&job).join("\n"));
    assert_same_samples(&job, &taken, "SIGTERM to one worker");
}

/// Over TCP and over QUIC (whose default driver's link threads must see the killed rank's
/// neighbours fail, stop, and form the next generation's rings).
#[test]
fn survivors_go_on_as_two_and_end_equal_within_summation_order() {
    let _ports = crate::util::ports_lock();
    let (reference, taken) = uninterrupted("SmallCnn");
    for job in [Job::new("2", "SmallCnn"), Job::over_quic("2", "SmallCnn")] {
        let over = if job.quic_certs.is_some() { "QUIC" } else { "TCP" };
        finish(start_and_kill_slot_2(&job), &job);
        let log0 = job.text(0);
        assert!(log0.contains("2 replicas (slots 0,1)"), "{over}: went on as two:\n{log0}");
        assert_within_summation_order(&final_model(&job.run_dir()), &reference);
        assert_same_samples(&job, &taken, &format!("3 → 2 over {over}"));
    }
}

/// A worker cut off (here: stopped) while the others finish the run must not wait forever for a
/// generation nobody will form: back, it reads the run's finished record and leaves, exit 0.
#[test]
fn a_worker_left_behind_by_a_finished_run_leaves() {
    let _ports = crate::util::ports_lock();
    let job = Job::new("2", "SmallCnn");
    let mut children: Vec<Option<Child>> = (0..3).map(|s| Some(job.spawn(s))).collect();
    wait_for_step(&job, 0, 8);
    let stopped = children[2].take().unwrap();
    signal(&stopped, libc::SIGSTOP);
    finish(children, &job); // the other two go on without it and finish
    signal(&stopped, libc::SIGCONT);
    let status = wait(stopped, Duration::from_secs(30), "the stopped worker", &job);
    let log2 = job.text(2);
    assert!(status.success(), "{status}\n{log2}");
    assert!(log2.contains(&format!("finished the run at step {STEPS} while this worker was out of it")), "{log2}");
}

/// Every tensor within 1e-5 of `reference`, relative to its largest value.
fn assert_within_summation_order(got: &[(String, Vec<f32>)], reference: &[(String, Vec<f32>)]) {
    assert_eq!(got.len(), reference.len());
    for ((name, a), (_, b)) in got.iter().zip(reference) {
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        let diff = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff / scale <= 1e-5, "{name}: relative difference {} after the resize", diff / scale);
    }
}

/// Issue 19's resize test: 4 → 3 → 4 in one run. Slot 3 is killed at step 8, the other three
/// go on as three (slot 2 takes two of the four micro-batches), and slot 3, started again, is
/// taken back; the run ends within 1e-5 (relative) of an uninterrupted 4-replica run, and every
/// batch took the same examples.
///
/// Over 60 SmallCnn steps. Longer runs cannot hold the bound, whatever the elastic code does:
/// over 300 steps one run in three ended ~1% away, and a trace showed a gradient jumping at step
/// 26 from parameters 1e-9 apart (a ReLU crossing zero); one process at learning rate 0.10000001
/// instead of 0.1 ends 6.6% away after 300 steps. Measured with 40 steps: five runs, growth back
/// to four at steps 10–13, 0.9e-7 to 1.5e-7 from the uninterrupted run.
#[test]
fn four_to_three_to_four_ends_equal_within_summation_order() {
    let _ports = crate::util::ports_lock();
    const STEPS_4: &str = "60";
    let reference = Job { steps: STEPS_4, ..Job::of(4, "4", "SmallCnn") };
    finish((0..4).map(|s| Some(reference.spawn(s))).collect(), &reference);
    let job = Job { steps: STEPS_4, ..Job::of(4, "3", "SmallCnn") };
    let mut children: Vec<Option<Child>> = (0..4).map(|s| Some(job.spawn(s))).collect();
    wait_for_step(&job, 0, 8);
    let mut victim = children[3].take().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    let t0 = Instant::now();
    while !job.text(0).contains("3 replicas (slots 0,1,2)") {
        assert!(t0.elapsed() < Duration::from_secs(60), "never went on as three:\n{}", job.text(0));
        std::thread::sleep(Duration::from_millis(10));
    }
    children[3] = Some(job.spawn(3));
    finish(children, &job);
    let log0 = job.text(0);
    let generations: Vec<&str> = log0.lines().filter(|l| l.contains("replicas (slots")).collect();
    assert!(generations.len() >= 3 && generations.last().unwrap().contains("4 replicas (slots 0,1,2,3)"), "4 → 3 → 4:\n{log0}");
    assert_within_summation_order(&final_model_at(&job.run_dir(), STEPS_4), &final_model_at(&reference.run_dir(), STEPS_4));
    assert_same_samples(&job, &samples(&reference), "4 → 3 → 4");
}

/// The pid of `launcher`'s child started as `worker --rank {rank}`.
fn worker_pid(launcher: u32, rank: usize) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).ok()?;
    children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()).find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let words: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        words.windows(2).any(|w| w[0] == b"--rank" && w[1] == rank.to_string().as_bytes())
    })
}

#[test]
fn launch_restarts_a_killed_worker_and_the_run_ends_bitwise_as_if_nothing_happened() {
    let _ports = crate::util::ports_lock();
    let (reference, _) = uninterrupted("WideResnet10x1");
    let out = tempfile::tempdir().unwrap();
    let log_path = out.path().join("launch.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut launcher = Command::new(env!("CARGO_BIN_EXE_ringsam"))
        .args(["launch", "--nproc", "3", "--transport", "tcp", "--min_replicas", "3", "--max_restarts", "1", "--"])
        .args(TRAIN)
        .args(["--model_name", "WideResnet10x1", "--max_steps", STEPS, "--log_every_steps", "1"])
        .args(["--output_dir", out.path().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let t0 = Instant::now();
    while !text().contains("step 8/") {
        assert!(t0.elapsed() < Duration::from_secs(120), "never reached step 8:\n{}", text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = worker_pid(launcher.id(), 2).expect("worker 2's pid");
    // SAFETY: kill(2) of a child of our own child, alive a moment ago; no memory is involved.
    unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = launcher.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(240), "launch did not finish:\n{}", text());
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = text();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("starting it again (restart 1 of 1)"), "{log}");
    let got = final_model(&out.path().join("lr_0.1/wd_0.001/rho_0.05/seed_0"));
    assert!(got == reference, "a restarted worker rejoins and the run ends bitwise equal\n{log}");
}

/// One chaos trial's outcome, for the table.
struct Trial {
    what: &'static str,
    from_memory: usize,
    from_disk: usize,
    recovery_seconds: Vec<f64>,
    redone: u64,
}

/// The generation lines ("generation G: …") of every slot's log, deduplicated by generation.
fn generations(job: &Job) -> Vec<String> {
    let mut seen = std::collections::BTreeMap::new();
    for slot in 0..3 {
        for line in job.text(slot).lines() {
            if let Some(rest) = line.split("generation ").nth(1)
                && let Some((g, _)) = rest.split_once(':')
                && let Ok(g) = g.parse::<u64>()
                && line.contains("replicas (slots")
            {
                seen.entry(g).or_insert_with(|| line.to_string());
            }
        }
    }
    seen.into_values().collect()
}

/// Waits until some log names a generation above `above`; returns the time it took.
fn wait_for_generation_above(job: &Job, above: usize, since: Instant) -> f64 {
    while generations(job).len() <= above {
        assert!(since.elapsed() < Duration::from_secs(120), "no new generation:\n{}", job.text(0));
        std::thread::sleep(Duration::from_millis(10));
    }
    since.elapsed().as_secs_f64()
}

/// The highest "step N/" slot 0 has logged.
fn last_logged_step(job: &Job) -> u64 {
    job.text(0).split("step ").filter_map(|w| w.split_once('/')?.0.parse::<u64>().ok()).max().unwrap_or(0)
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) of our own child, not yet reaped; no memory is involved.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// One trial (see `chaos`): three workers of WRN-10-1 with `--min_replicas 3`, a fault chosen by
/// `kind` at a step drawn from `seed`; the run must end bitwise equal to `reference`.
fn chaos_trial(kind: u64, seed: u64, (reference, taken): &(Vec<(String, Vec<f32>)>, Samples)) -> Trial {
    let job = Job::new("3", "WideResnet10x1");
    let mut children: Vec<Option<Child>> = (0..3).map(|s| Some(job.spawn(s))).collect();
    let victim = (seed % 3) as usize;
    wait_for_step(&job, 0, 3 + (seed / 3 % 15) as usize);
    let before = generations(&job).len();
    let t0 = Instant::now();
    let mut last_step = None;
    let what = match kind {
        0 => {
            // SIGKILL, back after a random pause.
            let mut c = children[victim].take().unwrap();
            c.kill().unwrap();
            c.wait().unwrap();
            std::thread::sleep(Duration::from_millis(seed * 37 % 800));
            children[victim] = Some(job.spawn(victim));
            "kill -9, restart"
        }
        1 => {
            // The whole job killed while a checkpoint is being written: the run must still hold
            // one that verifies, resume from it, and end bitwise equal.
            let checkpoints = job.run_dir().join("checkpoints");
            let writing = || {
                std::fs::read_dir(&checkpoints).into_iter().flatten().flatten().any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            };
            let t = Instant::now();
            while !writing() && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_micros(200));
            }
            last_step = Some(last_logged_step(&job));
            for c in children.iter_mut() {
                let mut c = c.take().unwrap();
                c.kill().unwrap();
                c.wait().unwrap();
            }
            // A `.tmp` left behind says the kill landed inside the write.
            let caught = writing();
            children = (0..3).map(|s| Some(job.spawn(s))).collect();
            if caught { "whole job killed inside a checkpoint write" } else { "whole job killed (just after a checkpoint write)" }
        }
        2 => {
            // Two kills in a row: the second during the re-formation the first started.
            let mut c = children[victim].take().unwrap();
            c.kill().unwrap();
            c.wait().unwrap();
            let second = (victim + 1) % 3;
            std::thread::sleep(Duration::from_millis(100 + seed * 13 % 300));
            let mut d = children[second].take().unwrap();
            d.kill().unwrap();
            d.wait().unwrap();
            children[victim] = Some(job.spawn(victim));
            children[second] = Some(job.spawn(second));
            "two kills in a row"
        }
        3 => {
            // A hang, not a death: SIGSTOP for longer than three heartbeats, then SIGCONT.
            let c = children[victim].as_ref().unwrap();
            signal(c, libc::SIGSTOP);
            std::thread::sleep(Duration::from_millis(1500));
            signal(c, libc::SIGCONT);
            "SIGSTOP 1.5 s"
        }
        _ => {
            // The whole job at once: nobody holds state, so recovery comes from disk, and the
            // steps since the last checkpoint are redone.
            last_step = Some(last_logged_step(&job));
            for c in children.iter_mut() {
                let mut c = c.take().unwrap();
                c.kill().unwrap();
                c.wait().unwrap();
            }
            children = (0..3).map(|s| Some(job.spawn(s))).collect();
            "whole job killed, restarted"
        }
    };
    let seconds = wait_for_generation_above(&job, before, t0);
    finish(children, &job);
    let got = final_model(&job.run_dir());
    assert!(&got == reference, "trial {what} (seed {seed}) did not end bitwise equal:\n{}", generations(&job).join("\n"));
    assert_same_samples(&job, taken, what);
    let lines = generations(&job);
    let after = &lines[before..];
    let mut redone = after.iter().filter_map(|l| l.split(" steps redone").next()?.rsplit(' ').next()?.parse::<u64>().ok()).sum();
    if let Some(last) = last_step {
        let restored = after
            .iter()
            .find_map(|l| l.split("state from disk at step ").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok());
        redone += last - restored.expect("a disk recovery");
    }
    Trial {
        what,
        from_memory: after.iter().filter(|l| l.contains("from the memory")).count(),
        from_disk: after.iter().filter(|l| l.contains("from disk")).count(),
        recovery_seconds: vec![seconds],
        redone,
    }
}

/// Issue 19's chaos trials: `RINGSAM_CHAOS_TRIALS` of them (CI runs the default 3; the full run
/// is `scripts/chaos.sh`), cycling through kill -9 and restart, a whole-job kill aimed at a
/// checkpoint write, two kills in a row, SIGSTOP, and a whole-job kill at a random step; every one
/// must end bitwise equal to an uninterrupted run, each batch with the same examples. Prints a
/// table.
#[test]
fn chaos() {
    let _ports = crate::util::ports_lock();
    let trials: u64 = std::env::var("RINGSAM_CHAOS_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let reference = uninterrupted("WideResnet10x1");
    let mut all = Vec::new();
    for t in 0..trials {
        let trial = chaos_trial(t % 5, 7 + 11 * t, &reference);
        eprintln!("chaos trial {t}: {}: recovered in {:.2} s", trial.what, trial.recovery_seconds[0]);
        all.push(trial);
    }
    let mut secs: Vec<f64> = all.iter().flat_map(|t| t.recovery_seconds.clone()).collect();
    secs.sort_by(f64::total_cmp);
    eprintln!("| trials | from memory | from disk | median recovery s | max recovery s | steps redone |");
    eprintln!("| --- | --- | --- | --- | --- | --- |");
    eprintln!(
        "| {} | {} | {} | {:.2} | {:.2} | {} |",
        all.len(),
        all.iter().map(|t| t.from_memory).sum::<usize>(),
        all.iter().map(|t| t.from_disk).sum::<usize>(),
        secs.get(secs.len() / 2).copied().unwrap_or(0.0),
        secs.last().copied().unwrap_or(0.0),
        all.iter().map(|t| t.redone).sum::<u64>()
    );
}

#[test]
fn bench_recovery_reports_both_paths() {
    let _ports = crate::util::ports_lock();
    let args = ["bench", "recovery", "--nproc", "3", "--model_name", "WideResnet10x1", "--batch_size", "48"];
    let o = crate::util::ringsam(&[&args[..], &["--heartbeat_seconds", "0.2", "--save_progress_seconds", "1", "--json"]].concat());
    let text = crate::util::stdout_ok(&o);
    let r: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    for key in ["step_seconds", "memory_seconds", "disk_seconds"] {
        assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {text}");
    }
    let two = crate::util::ringsam(&["bench", "recovery", "--nproc", "2"]);
    assert_eq!(two.status.code(), Some(2), "two workers cannot survive a loss: refused as a usage error");
}
