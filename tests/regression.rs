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
