//! `ringsam train` end to end: outputs, resume after a stop, a corrupt checkpoint skipped, eval.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{TINY_TRAINING, ringsam, stdout_ok};

const TINY: &[&str] = &["--threads", "1", "train"];

fn args<'a>(extra: &[&'a str], out: &'a str) -> Vec<&'a str> {
    TINY.iter().copied().chain(TINY_TRAINING.iter().copied()).chain(extra.iter().copied()).chain(["--output_dir", out]).collect()
}

fn run_dir(out: &Path) -> PathBuf {
    out.join("lr_0.1/wd_0.001/rho_0.05/seed_0")
}

fn checkpoints(out: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(run_dir(out).join("checkpoints"))
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_prefix("checkpoint_")?.parse().ok()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn train_writes_events_and_checkpoints_then_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    // 22 steps per epoch (1437 / 64); stop after 30 steps, in the middle of epoch 2.
    let o = ringsam(&args(&["--num_epochs", "3", "--max_steps", "30"], out));
    let text = stdout_ok(&o);
    assert!(text.contains("steps: 30"), "{text}");
    assert_eq!(checkpoints(tmp.path()), vec![22, 30], "checkpoint at the end of epoch 1 and at the stop");
    let events: Vec<_> = std::fs::read_dir(run_dir(tmp.path()))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("events.out.tfevents."))
        .collect();
    assert_eq!(events.len(), 1);

    // Same output directory, no step limit: resumes at step 30 and finishes the 3 epochs (66 steps).
    let o = ringsam(&args(&["--num_epochs", "3"], out));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(stdout_ok(&o).contains("steps: 66"), "{err}");
    assert!(err.contains("resumed from") && err.contains("checkpoint_30") && err.contains("batch 8"), "{err}");
}

#[test]
fn truncated_checkpoint_is_skipped_for_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    stdout_ok(&ringsam(&args(&["--num_epochs", "3", "--max_steps", "30"], out)));
    let newest = run_dir(tmp.path()).join("checkpoints/checkpoint_30/model.safetensors");
    let len = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&newest).unwrap().set_len(len / 2).unwrap();
    let o = ringsam(&args(&["--num_epochs", "3", "--max_steps", "40"], out));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("skipping checkpoint") && err.contains("truncated"), "{err}");
    assert!(err.contains("resumed from") && err.contains("checkpoint_22"), "{err}");
}

#[test]
fn sigterm_writes_a_checkpoint_and_the_next_run_resumes_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ringsam"))
        .args(args(&["--num_epochs", "100000", "--checkpoint_every_epochs", "0"], out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training is under way (the event file exists), then a little longer.
    let t0 = Instant::now();
    while !run_dir(tmp.path()).exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    // 143: stopped after a checkpoint, resumable (a Kubernetes Job must not count it complete).
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert!(err.contains("interrupted") && err.contains("run the same command again to resume"), "{err}");
    let saved = checkpoints(tmp.path());
    assert_eq!(saved.len(), 1, "{saved:?}");
    let o = ringsam(&args(&["--num_epochs", "100000", "--max_steps", &(saved[0] + 1).to_string()], out));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains(&format!("checkpoint_{}", saved[0])), "{err}");
    assert!(stdout_ok(&o).contains(&format!("steps: {}", saved[0] + 1)));
}

#[test]
fn eval_reads_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    stdout_ok(&ringsam(&args(&["--num_epochs", "1"], out)));
    let ck = run_dir(tmp.path()).join("checkpoints/checkpoint_22");
    let o = ringsam(&["eval", "--checkpoint", ck.to_str().unwrap(), "--json"]);
    let r: serde_json::Value = serde_json::from_str(stdout_ok(&o).trim()).unwrap();
    assert_eq!(r["examples"], 360);
    assert!(r["error_rate"].as_f64().unwrap() < 0.9);
}

#[test]
fn bad_flags_are_clear_errors() {
    let o = ringsam(&["train", "--dataset", "cifar10", "--data_dir", "/nonexistent", "--max_steps", "1"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent") && err.contains("data_batch_1.bin"), "{err}");
    let o = ringsam(&["train", "--dataset", "digits", "--image_level_augmentations", "sideways"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--image_level_augmentations"));
    let o = ringsam(&["train", "--dataset", "digits", "--config", "/nonexistent.toml"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent.toml"));
}

/// Found in review: a resumed run at its step limit must not take another step, and a run
/// directory of a different configuration must not be resumed silently.
#[test]
fn resume_respects_max_steps_and_refuses_a_different_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    stdout_ok(&ringsam(&args(&["--num_epochs", "3", "--max_steps", "5"], out)));
    let o = ringsam(&args(&["--num_epochs", "3", "--max_steps", "5"], out));
    assert!(stdout_ok(&o).contains("steps: 5"), "{}", String::from_utf8_lossy(&o.stderr));
    let other: Vec<&str> = TINY
        .iter()
        .chain(TINY_TRAINING)
        .map(|a| if *a == "64" { "32" } else { a })
        .chain(["--num_epochs", "3", "--max_steps", "5", "--output_dir", out])
        .collect();
    let o = ringsam(&other);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("batch_size: 64 -> 32") && err.contains("another --output_dir"), "{err}");
}

/// LookSAM's reused direction is training state: a run stopped between two SAM steps and resumed
/// from its checkpoint ends with the bytes of a run that never stopped (a resume that lost the
/// direction would take SGD steps where the other adds it).
#[test]
fn looksam_resumed_between_sam_steps_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (straight, stopped) = (tmp.path().join("straight"), tmp.path().join("stopped"));
    fn run(steps: &str, out: &Path) -> std::process::Output {
        let look = ["--looksam_k", "3", "--num_epochs", "3", "--checkpoint_every_epochs", "0", "--max_steps", steps];
        ringsam(&args(&look, out.to_str().unwrap()))
    }
    stdout_ok(&run("8", &straight));
    stdout_ok(&run("4", &stopped));
    let o = run("8", &stopped);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(stdout_ok(&o).contains("steps: 8") && err.contains("checkpoint_4"), "{err}");
    let file = |out: &Path, name: &str| std::fs::read(run_dir(out).join("checkpoints/checkpoint_8").join(name)).unwrap();
    assert!(file(&straight, "model.safetensors") == file(&stopped, "model.safetensors"), "the resumed run's weights differ");
    let optim = file(&stopped, "optim.safetensors");
    assert!(optim == file(&straight, "optim.safetensors") && optim.windows(17).any(|w| w == b"looksam_direction"));
}
