//! The container image as a pod runs it (scripts/image_check.sh: non-root, the quickstart,
//! SIGTERM → checkpoint → exit 143 → resume), and the Kubernetes Job's pods as containers of it
//! (scripts/k8s_local.sh). Both build the image on a local Debian base with this build's binary.
//! They need a Docker daemon and root (debootstrap, once; the base is cached): without them each
//! test says it did not run.

use std::process::Command;

#[test]
fn the_image_trains_stops_on_sigterm_with_a_checkpoint_and_resumes() {
    let Some(log) = run_script("scripts/image_check.sh", "container test") else { return };
    assert!(log.contains("SIGTERM checkpoint (exit 143) and resume: ok"), "{log}");
}

/// The cpu-smoke Job's pods as containers (scripts/k8s_local.sh): trains to the end; a pod
/// killed and replaced under its name with a new IP recovers bitwise; SIGTERM to one pod (a
/// drain) leaves the other training; SIGTERM to every pod checkpoints and new pods resume
/// bitwise; a wrong certificate is refused, saying why.
#[test]
fn the_kubernetes_job_runs_as_containers_and_survives_a_lost_pod() {
    let Some(log) = run_script("scripts/k8s_local.sh", "Kubernetes pods as containers") else { return };
    let steps = [
        "1. the job trained",
        "2. pod 1 killed and replaced",
        "3. SIGTERM to pod 1 alone",
        "4. SIGTERM to every pod",
        "5. a wrong certificate",
    ];
    for step in steps {
        assert!(log.contains(step), "{step}: not reported\n{log}");
    }
    eprintln!("{log}");
}

/// Runs `script` with this build's binary and returns what it printed on stderr, asserting that
/// it succeeded; None (saying so) where there is no Docker daemon or no root.
fn run_script(script: &str, what: &str) -> Option<String> {
    let docker = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !docker.is_ok_and(|o| o.status.success()) || !root {
        eprintln!("{what} NOT RUN: needs a Docker daemon and root (debootstrap builds the base image)");
        return None;
    }
    let path = format!("{}/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&path).arg(env!("CARGO_BIN_EXE_ringsam")).output().unwrap_or_else(|e| panic!("running {script}: {e}"));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{script} failed:\n{log}");
    Some(log)
}
