//! `ringsam experiment` and `ringsam sharpness` end to end, on tiny runs of the bundled digits.

use std::path::Path;

use crate::util::{TINY_TRAINING, ringsam, stdout_ok};

fn experiment(kind: &str, own: &[&str], out: &Path) -> std::process::Output {
    let args: Vec<&str> = ["--threads", "1", "experiment", kind]
        .into_iter()
        .chain(TINY_TRAINING.iter().copied())
        .chain(own.iter().copied())
        .chain(["--max_steps", "2", "--output_dir", out.to_str().unwrap()])
        .collect();
    ringsam(&args)
}

/// The label-noise grid: one ordinary run directory per cell (events included), the CSV, the
/// figure; run again, every cell is skipped.
#[test]
fn label_noise_runs_every_cell_once_and_writes_its_table_csv_and_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let own = ["--noise", "0,0.5", "--methods", "sgd,looksam:2", "--seeds", "2"];
    let sharp = ["--sharpness", "--sharpness_batch", "8", "--sharpness_m", "4", "--sharpness_eigs", "1", "--sharpness_iters", "1"];
    let o = experiment("label-noise", &own, tmp.path());
    let text = stdout_ok(&o);
    assert!(text.contains("noise 0.5") && text.contains("looksam_2") && text.contains("cells: 8"), "{text}");
    let csv = std::fs::read_to_string(tmp.path().join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 9, "{csv}");
    assert!(std::fs::read(tmp.path().join("label_noise.png")).unwrap().starts_with(b"\x89PNG"));
    let cell = tmp.path().join("looksam_2-noise_0.5-seed_1");
    let log = std::fs::read_to_string(cell.join("train.log")).unwrap();
    assert!(log.contains("label noise 0.5") && log.contains("seed 1"), "{log}");
    let run = cell.join("lr_0.1/wd_0.001/rho_0.05/seed_1");
    assert!(std::fs::read_dir(&run).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("events.out.tfevents")));
    let again = experiment("label-noise", &own, tmp.path());
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(err.matches("done before").count(), 8, "{err}");
    assert_eq!(std::fs::read_to_string(tmp.path().join("results.csv")).unwrap(), csv);
    // --sharpness later measures the finished cells' final weights, once.
    let with: Vec<&str> = own.iter().chain(&sharp).copied().collect();
    let text = stdout_ok(&experiment("label-noise", &with, tmp.path()));
    assert!(text.contains("Hessian λ1") && text.contains("sharpness figure"), "{text}");
    assert!(std::fs::read(tmp.path().join("sharpness.png")).unwrap().starts_with(b"\x89PNG"));
    let csv = std::fs::read_to_string(tmp.path().join("results.csv")).unwrap();
    assert!(csv.lines().skip(1).all(|l| l.split(',').nth(8).is_some_and(|v| !v.is_empty())), "every cell measured: {csv}");
    let err = String::from_utf8_lossy(&experiment("label-noise", &with, tmp.path()).stderr).to_string();
    assert!(!err.contains("measuring"), "{err}");
}

#[test]
fn cheap_sam_defaults_to_its_five_methods_and_refuses_rho_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let o = experiment("cheap-sam", &["--seeds", "1"], tmp.path());
    let text = stdout_ok(&o);
    for m in ["sgd", "sam ", "sam_every_2", "sam_every_5", "looksam_5"] {
        assert!(text.contains(m), "{m}: {text}");
    }
    assert!(tmp.path().join("cheap_sam.png").exists());
    // The same directory with settings that change the math: refused, not taken as its own.
    let o = experiment("cheap-sam", &["--seeds", "1", "--learning_rate", "0.05"], tmp.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("of another experiment") && err.contains("learning_rate"), "{err}");
    let o = experiment("label-noise", &["--noise", "0.2,0.2"], &tmp.path().join("twice"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("twice"));
    let o = experiment("cheap-sam", &["--sam_rho", "0"], &tmp.path().join("zero"));
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let o = experiment("cheap-sam", &["--methods", "sam,adam"], &tmp.path().join("bad"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("adam"));
}

/// `ringsam sharpness` reads a checkpoint and prints the diagnostics; `--log_sharpness_every`
/// writes them to TensorBoard.
#[test]
fn sharpness_of_a_checkpoint_and_during_training() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let flags =
        ["--max_steps", "2", "--log_sharpness_every", "2", "--sharpness_batch", "32", "--sharpness_iters", "2", "--output_dir", out];
    let args: Vec<&str> = ["--threads", "1", "train"].into_iter().chain(TINY_TRAINING.iter().copied()).chain(flags).collect();
    let o = ringsam(&args);
    stdout_ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("step 2: sharpness on 32 examples") && err.contains("λ1/λ5"), "{err}");
    let ckpt = tmp.path().join("lr_0.1/wd_0.001/rho_0.05/seed_0/checkpoints/checkpoint_2");
    let o = ringsam(&[
        "sharpness",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--json",
        "--sharpness_batch",
        "16",
        "--sharpness_m",
        "8",
        "--sharpness_eigs",
        "2",
        "--sharpness_iters",
        "2",
    ]);
    let v: serde_json::Value = serde_json::from_str(stdout_ok(&o).trim()).unwrap();
    assert_eq!(v["examples"], 16);
    assert_eq!(v["eigenvalues"].as_array().unwrap().len(), 2);
    assert!(v["m_sharpness"].as_f64().unwrap().is_finite());
    let o = ringsam(&["sharpness", "--checkpoint", ckpt.to_str().unwrap(), "--model_name", "WideResnet16x2"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("another model or dataset"), "{}", String::from_utf8_lossy(&o.stderr));
}
