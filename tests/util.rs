//! Running the built binary.

use std::process::{Command, Output};

/// Runs `ringsam` with `args` (and `RINGSAM_THREADS` unset) and returns its output.
pub fn ringsam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringsam")).args(args).env_remove("RINGSAM_THREADS").output().expect("running the ringsam binary")
}

/// Stdout as a string; panics with stderr when the command failed.
pub fn stdout_ok(out: &Output) -> String {
    assert!(out.status.success(), "ringsam failed ({:?}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

/// `--ca`, `--cert` and `--key` for node `rank` of the certificates `ringsam certs --out dir`
/// wrote.
pub fn quic_cert_flags(dir: &std::path::Path, rank: usize) -> Vec<String> {
    let file = |f: String| dir.join(f).to_str().unwrap().to_string();
    vec![
        "--ca".into(),
        file("ca.pem".into()),
        "--cert".into(),
        file(format!("node-{rank}.pem")),
        "--key".into(),
        file(format!("node-{rank}.key")),
    ]
}

/// Training flags for a tiny, fast run (WRN-10-1 on the bundled digits, SAM, no augmentation).
pub const TINY_TRAINING: &[&str] = &[
    "--dataset",
    "digits",
    "--model_name",
    "WideResnet10x1",
    "--batch_size",
    "64",
    "--image_level_augmentations",
    "none",
    "--sam_rho",
    "0.05",
];

/// Tests that probe for free ports (or start local rings that do) hold this while they run:
/// a probed port is free only until something binds it, so two such tests in this binary could
/// otherwise race for the same port (seen in CI: "Address already in use").
pub fn ports_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A safetensors file's f32 tensors by name, sorted by name.
pub fn f32_tensors(bytes: &[u8]) -> Vec<(String, Vec<f32>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.data().chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
