//! Regressions, each named for the issue that found it (See: the issue tracker, issue 17: what a
//! new user met while trying ringsam).

use crate::util::{TINY_TRAINING, ringsam, stdout_ok};

fn train_args<'a>(extra: &[&'a str], out: &'a str) -> Vec<&'a str> {
    ["--threads", "1", "train"]
        .into_iter()
        .chain(TINY_TRAINING.iter().copied())
        .chain(extra.iter().copied())
        .chain(["--output_dir", out])
        .collect()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Issue 17: with stderr not a terminal (a pod's log), nothing was printed until an epoch ended.
#[test]
fn issue17_progress_lines_when_stderr_is_not_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let o = ringsam(&train_args(&["--max_steps", "10", "--log_every_steps", "5"], tmp.path().to_str().unwrap()));
    stdout_ok(&o);
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("images/s")).collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].contains("step 5/") && lines[0].contains("loss") && lines[0].contains("ETA"), "{err}");
    assert!(lines[1].contains("step 10/"), "{err}");
}

/// Issue 17: a run with different ASAM / sam_m / label smoothing silently resumed another run.
#[test]
fn issue17_resume_refuses_a_math_change_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    stdout_ok(&ringsam(&train_args(&["--max_steps", "3"], out)));
    let o = ringsam(&train_args(&["--max_steps", "6", "--adaptive_sam", "--label_smoothing", "0.1"], out));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("adaptive_sam: false -> true") && err.contains("label_smoothing: 0.0 -> 0.1"), "{err}");
    assert!(err.contains("--allow_config_change"), "{err}");
    let o = ringsam(&train_args(&["--max_steps", "6", "--adaptive_sam", "--label_smoothing", "0.1", "--allow_config_change"], out));
    let err = stderr(&o);
    assert!(stdout_ok(&o).contains("steps: 6"), "{err}");
    assert!(err.contains("resuming with a changed setting: adaptive_sam"), "{err}");
    // Settings that do not change the math are accepted: more loader prefetch, a longer run.
    let o = ringsam(&train_args(&["--max_steps", "8", "--adaptive_sam", "--label_smoothing", "0.1", "--prefetch", "2"], out));
    assert!(stdout_ok(&o).contains("steps: 8"), "{}", stderr(&o));
}

/// Issue 17: a NaN loss was reported as a configuration error (exit code 2).
#[test]
fn issue17_non_finite_loss_is_a_runtime_failure_naming_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let o =
        ringsam(&train_args(&["--max_steps", "20", "--learning_rate", "1e30", "--gradient_clipping", "0"], tmp.path().to_str().unwrap()));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("non-finite") && err.contains("step "), "{err}");
}

/// Issue 17: `launch --nproc 2 -- train …` (the torchrun habit) failed with "unexpected argument
/// 'train'"; and a bad training flag surfaced only from inside the started workers.
#[test]
fn issue17_launch_accepts_a_leading_train_word_and_checks_flags_first() {
    let _ports = crate::util::ports_lock();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let mut args = vec!["launch", "--nproc", "2", "--transport", "tcp", "--", "train"];
    args.extend_from_slice(TINY_TRAINING);
    args.extend_from_slice(&["--max_steps", "3", "--output_dir", out]);
    let o = ringsam(&args);
    assert!(stdout_ok(&o).contains("steps: 3"), "{}", stderr(&o));
    let o = ringsam(&["launch", "--nproc", "2", "--", "train", "--dataset", "digits", "--momentum", "7"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--momentum") && !err.contains("rank 0"), "{err}");
}

/// Issue 17: `--batch_level_augmentations` help listed mixup and mixcut, which were always
/// refused; an unknown flag's usage line implied --dataset and --model_name were required.
#[test]
fn issue17_help_shows_what_is_accepted_with_defaults() {
    let help = stdout_ok(&ringsam(&["train", "--help"]));
    assert!(!help.contains("mixcut") && !help.contains("mixup |"), "{help}");
    assert!(help.contains("[default: 0.9]") && help.contains("--sam_rho"), "defaults are shown: {help}");
    let o = ringsam(&["train", "--bogus"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(err.contains("Usage: ringsam train [OPTIONS]") && !err.contains("--dataset <"), "{err}");
}

/// Issue 17: `--dataset digits` took the reference's `basic` augmentation, whose 4-px pad and
/// crop ruins 8×8 digits (a two-replica launch reached 21 % accuracy).
#[test]
fn issue17_digits_default_to_no_image_augmentation() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let o = ringsam(&[
        "--threads",
        "1",
        "train",
        "--dataset",
        "digits",
        "--model_name",
        "WideResnet10x1",
        "--max_steps",
        "1",
        "--output_dir",
        out,
    ]);
    stdout_ok(&o);
    let state = tmp.path().join("lr_0.1/wd_0.001/rho_0.0/seed_0/checkpoints/checkpoint_1/state.json");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(state["config"]["image_level_augmentations"], "none");
}

/// Issue 18: a restart with another model reported the previous run's checkpoints as corrupt,
/// trained from step 0 and deleted them as an "abandoned timeline".
#[test]
fn issue18_a_restart_with_another_model_is_refused_and_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    stdout_ok(&ringsam(&train_args(&["--max_steps", "3", "--checkpoint_every_epochs", "0"], out)));
    let ckpts = tmp.path().join("lr_0.1/wd_0.001/rho_0.05/seed_0/checkpoints");
    let before: Vec<_> = std::fs::read_dir(&ckpts).unwrap().map(|e| e.unwrap().file_name()).collect();
    let other: Vec<&str> =
        train_args(&["--max_steps", "3"], out).into_iter().map(|a| if a == "WideResnet10x1" { "WideResnet10x2" } else { a }).collect();
    let o = ringsam(&other);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("model_name") && err.contains("WideResnet10x1") && err.contains("another --output_dir"), "{err}");
    let after: Vec<_> = std::fs::read_dir(&ckpts).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(after, before, "the other run's checkpoints are untouched");
}

/// Issue 18: durations near u64::MAX panicked ("overflow when adding duration to instant") and a
/// zero QUIC window failed only later, as "ring not formed".
#[test]
fn issue18_huge_durations_and_zero_windows_are_refused_naming_the_flag() {
    let huge = "18446744073709551615";
    for (args, flag) in [
        (vec!["bench", "allreduce", "--timeout", huge], "--timeout"),
        (vec!["bench", "allreduce", "--quic_window", "0"], "--quic_window"),
        (vec!["worker", "--rank", "0", "--world_size", "2", "--peers", "a:1,b:2", "--connect_timeout", huge], "--connect_timeout"),
        (vec!["train", "--dataset", "digits", "--ring_timeout_seconds", huge], "--ring_timeout_seconds"),
    ] {
        let o = ringsam(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

/// Issue 18: SIGTERM was ignored before training started (a worker waiting for its peers exited
/// 39 s later).
#[test]
fn issue18_a_worker_waiting_for_its_peers_stops_on_sigterm() {
    let _ports = crate::util::ports_lock();
    let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let peers = format!("127.0.0.1:{},127.0.0.1:{}", port(), port());
    let tmp = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ringsam"))
        .args(["--threads", "1", "worker", "--rank", "0", "--world_size", "2", "--peers", &peers, "--transport", "tcp"])
        .args(TINY_TRAINING)
        .args(["--output_dir", tmp.path().to_str().unwrap()])
        .env("RINGSAM_CLUSTER_SECRET", "0123456789abcdef0123456789abcdef")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500)); // waiting for rank 1, which never comes
    let t0 = std::time::Instant::now();
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(t0.elapsed() < std::time::Duration::from_secs(10), "took {:?} to stop: {err}", t0.elapsed());
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert!(err.contains("stopped by a signal while forming the ring"), "{err}");
}

/// Issue 18: `launch --metrics-port 65535 --nproc 2` failed only after starting rank 0, which
/// then ran on alone; flags are checked before anything starts.
#[test]
fn issue18_launch_checks_its_own_flags_before_starting_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = vec!["launch", "--nproc", "2", "--metrics_port", "65535", "--"];
    args.extend_from_slice(TINY_TRAINING);
    args.extend_from_slice(&["--output_dir", tmp.path().to_str().unwrap()]);
    let o = ringsam(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--metrics_port") && !err.contains("rank 0"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "nothing ran");
}

/// Issue 18: `save_progress_seconds` was checked only at epoch ends, so a long epoch went
/// unprotected; it is checked after every step.
#[test]
fn issue18_save_progress_seconds_is_checked_between_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = ["--max_steps", "3", "--save_progress_seconds", "0", "--checkpoint_every_epochs", "0", "--keep_checkpoints", "5"];
    stdout_ok(&ringsam(&train_args(&extra, tmp.path().to_str().unwrap())));
    let mut got: Vec<String> = std::fs::read_dir(tmp.path().join("lr_0.1/wd_0.001/rho_0.05/seed_0/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["checkpoint_1", "checkpoint_2", "checkpoint_3"], "one per step, inside the first epoch");
}

/// Issue 18: settings whose memory cannot exist aborted the process (SIGABRT on a failed
/// allocation); they are refused before anything large is allocated, naming the flag.
#[test]
fn issue18_what_cannot_fit_in_memory_is_refused_naming_the_flag() {
    for (args, flag) in [
        (&["train", "--dataset", "digits", "--model_name", "WideResnet10x100000", "--max_steps", "1"][..], "--model_name"),
        (
            &["train", "--dataset", "synthetic", "--image_size", "4096", "--model_name", "WideResnet10x1", "--max_steps", "1"],
            "--image_size",
        ),
        (&["bench", "allreduce", "--sizes", "1024G"], "--sizes"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut all = args.to_vec();
        if args[0] == "train" {
            all.extend_from_slice(&["--output_dir", tmp.path().to_str().unwrap()]);
        }
        let o = ringsam(&all);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag) && err.contains("available"), "{args:?}: {err}");
    }
}
