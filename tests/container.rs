//! The container image as a pod runs it (scripts/image_check.sh): built on a local Debian base
//! with this build's binary, non-root, the quickstart, and SIGTERM → checkpoint → exit 143 →
//! resume. Needs a Docker daemon and root (debootstrap, once; the base is cached): without them
//! the test says it did not run.

use std::process::Command;

#[test]
fn the_image_trains_stops_on_sigterm_with_a_checkpoint_and_resumes() {
    let docker = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !docker.as_ref().is_ok_and(|o| o.status.success()) || !root {
        eprintln!("container test NOT RUN: needs a Docker daemon and root (debootstrap builds the base image)");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/image_check.sh");
    let out = Command::new(script).arg(env!("CARGO_BIN_EXE_ringsam")).output().expect("running scripts/image_check.sh");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/image_check.sh failed:\n{log}");
    assert!(log.contains("SIGTERM checkpoint (exit 143) and resume: ok"), "{log}");
}
