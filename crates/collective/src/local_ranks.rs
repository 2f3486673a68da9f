//! Starting a ring's ranks as processes on this machine, on loopback: the one launcher behind
//! `ringsam launch` (training replicas) and `ringsam bench allreduce` (benchmark ranks).
//!
//! 1. [`LocalRanks::prepare`]: a free loopback port pair per rank (the port and the next, which
//!    a replica group's ring uses), a fresh cluster secret, and for QUIC a CA and node
//!    certificates in a private temporary directory (mode 0700, an unpredictable name) that is
//!    removed when the launcher is dropped — on success, error or panic alike.
//! 2. [`LocalRanks::spawn`]: one process per rank; the caller adds each one's arguments.
//! 3. [`LocalRanks::wait`]: waits for every rank. When `stop` is set (the caller's signal handler),
//!    SIGTERM goes once to every rank still running, so each checkpoints and stops. When a rank
//!    fails, the caller may start it again ([`Restart`]: elastic workers rejoin their job, the
//!    others go on); otherwise the others are ended: SIGTERM, then SIGKILL after a grace period —
//!    a stopped or hung rank must not keep the launcher waiting forever. Only processes not yet
//!    reaped are signalled: a reaped child's pid may already belong to an unrelated process.
//!
//! This is process plumbing, not protocol: it reads no environment and installs no signal
//! handler; the caller passes the executable and the stop flag.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What ranks started by one launcher share.
pub struct LocalRanks {
    /// Each rank's ring address on loopback, in rank order.
    pub addrs: Vec<SocketAddr>,
    /// The cluster secret for TCP rings (hex; pass it as `RINGSAM_CLUSTER_SECRET`).
    pub secret: String,
    certs: Option<tempfile::TempDir>,
    exe: PathBuf,
    children: Vec<Child>,
    stdout: Vec<Option<std::thread::JoinHandle<Vec<u8>>>>,
}

/// Asked when rank `r` failed with `status` (and no stop was requested): `true` after adding
/// the arguments to `command` (the executable set up as [`LocalRanks::spawn`] does) to start it
/// in the rank's place, `false` to end the job.
pub type Restart<'a> = &'a mut dyn FnMut(usize, ExitStatus, &mut Command) -> bool;

/// How a rank ended.
#[derive(Debug)]
pub struct RankExit {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it printed, when its stdout was captured.
    pub stdout: Vec<u8>,
    /// It was ended by the launcher because another rank failed.
    pub ended_by_launcher: bool,
}

impl LocalRanks {
    /// Step 1 of the module docs, for `n` ranks; `quic` makes certificates too.
    pub fn prepare(n: usize, quic: bool) -> std::io::Result<LocalRanks> {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < n {
            let p = free_port_pair()?;
            if !ports.iter().any(|&q| q.abs_diff(p) <= 1) {
                ports.push(p);
            }
        }
        let certs = if quic {
            use std::os::unix::fs::PermissionsExt;
            let private = std::fs::Permissions::from_mode(0o700);
            let dir = tempfile::Builder::new().prefix("ringsam-ranks-").permissions(private).tempdir()?;
            crate::certs::write_dev_certs(dir.path(), n).map_err(std::io::Error::other)?;
            Some(dir)
        } else {
            None
        };
        Ok(LocalRanks {
            addrs: ports.iter().map(|&p| SocketAddr::from(([127, 0, 0, 1], p))).collect(),
            secret: crate::tcp::fresh_secret()?,
            certs,
            exe: PathBuf::new(),
            children: Vec::new(),
            stdout: Vec::new(),
        })
    }

    /// The peers flag's value: every rank's address, comma-separated, in rank order.
    pub fn peers(&self) -> String {
        self.addrs.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(",")
    }

    /// Rank `r`'s QUIC credentials as flags (`--ca`, `--cert`, `--key`); none for TCP.
    pub fn quic_flags(&self, r: usize) -> Vec<String> {
        let Some(dir) = &self.certs else { return Vec::new() };
        let f = |name: String| dir.path().join(name).display().to_string();
        vec!["--ca".into(), f("ca.pem".into()), "--cert".into(), f(format!("node-{r}.pem")), "--key".into(), f(format!("node-{r}.key"))]
    }

    /// Step 2: starts `exe` once per rank; `args(rank, &mut command)` adds that rank's arguments.
    /// With `capture`, every rank's stdout is collected (returned by [`LocalRanks::wait`]);
    /// otherwise rank 0's is inherited and the others' discarded. The secret goes in
    /// `RINGSAM_CLUSTER_SECRET`.
    pub fn spawn(&mut self, exe: &Path, capture: bool, mut args: impl FnMut(usize, &mut Command)) -> std::io::Result<()> {
        self.exe = exe.to_path_buf();
        for r in 0..self.addrs.len() {
            let mut cmd = self.command(r);
            cmd.stdout(match (r, capture) {
                (_, true) => Stdio::piped(),
                (0, false) => Stdio::inherit(),
                _ => Stdio::null(),
            });
            args(r, &mut cmd);
            let mut child = cmd.spawn()?;
            // Drained on a thread: a rank blocked on a full pipe would never exit.
            self.stdout.push(child.stdout.take().map(|mut out| {
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut out, &mut buf);
                    buf
                })
            }));
            self.children.push(child);
        }
        Ok(())
    }

    /// The executable set up as rank `r`'s process: a process group of its own, so a signal
    /// reaches whatever it started too (nothing it spawned outlives it holding its output open),
    /// and the cluster secret.
    fn command(&self, r: usize) -> Command {
        let mut cmd = Command::new(&self.exe);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.env("RINGSAM_CLUSTER_SECRET", &self.secret);
        if r != 0 {
            cmd.stdout(Stdio::null());
        }
        cmd
    }

    /// Ends rank `r` at once (SIGKILL to its process group) and reaps it: a benchmark's or a
    /// test's fault.
    pub fn kill(&mut self, r: usize) -> std::io::Result<ExitStatus> {
        if self.children[r].try_wait()?.is_none() {
            self.signal(r, libc::SIGKILL);
        }
        self.children[r].wait()
    }

    /// Starts rank `r` again (after [`LocalRanks::kill`] or its exit), set up as
    /// [`LocalRanks::spawn`] does; `args` adds its arguments.
    pub fn respawn(&mut self, r: usize, args: impl FnOnce(&mut Command)) -> std::io::Result<()> {
        let mut cmd = self.command(r);
        args(&mut cmd);
        self.children[r] = cmd.spawn()?;
        Ok(())
    }

    /// Step 3 of the module docs. Returns every rank's exit, in rank order.
    pub fn wait(self, stop: &AtomicBool, grace: Duration) -> std::io::Result<Vec<RankExit>> {
        self.wait_restarting(stop, grace, &mut |_, _, _| false)
    }

    /// [`LocalRanks::wait`], asking `restart` about every rank that fails (see [`Restart`]).
    pub fn wait_restarting(mut self, stop: &AtomicBool, grace: Duration, restart: Restart<'_>) -> std::io::Result<Vec<RankExit>> {
        let n = self.children.len();
        let mut status: Vec<Option<ExitStatus>> = vec![None; n];
        let mut ended = vec![false; n];
        let (mut forwarded, mut kill_at) = (false, None::<Instant>);
        while status.iter().any(Option::is_none) {
            for (r, st) in status.iter_mut().enumerate() {
                if st.is_none() {
                    *st = self.children[r].try_wait()?;
                }
                let Some(s) = *st else { continue };
                if s.success() || forwarded || stop.load(Ordering::SeqCst) {
                    continue;
                }
                let mut cmd = self.command(r);
                if restart(r, s, &mut cmd) {
                    self.children[r] = cmd.spawn()?;
                    *st = None;
                }
            }
            let failed = status.iter().flatten().any(|s| !s.success());
            if (stop.load(Ordering::SeqCst) && !forwarded) || (failed && kill_at.is_none()) {
                forwarded = true;
                for (r, _) in status.iter().enumerate().filter(|(_, s)| s.is_none()) {
                    self.signal(r, libc::SIGTERM);
                    ended[r] = failed;
                }
                if failed {
                    kill_at = Some(Instant::now() + grace);
                }
            }
            if kill_at.is_some_and(|t| Instant::now() >= t) {
                for (r, _) in status.iter().enumerate().filter(|(_, s)| s.is_none()) {
                    self.signal(r, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let outputs = std::mem::take(&mut self.stdout);
        Ok(status
            .into_iter()
            .zip(outputs)
            .zip(ended)
            .map(|((s, out), ended_by_launcher)| RankExit {
                status: s.expect("every rank was waited for"),
                stdout: out.and_then(|h| h.join().ok()).unwrap_or_default(),
                ended_by_launcher,
            })
            .collect())
    }

    /// Sends `sig` to rank `r`'s process group, whose leader the caller knows is not reaped yet.
    fn signal(&self, r: usize, sig: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(self.children[r].id()) else { return };
        // SAFETY: kill(2) on the process group our own child leads; the child is not reaped yet
        // (its status was unknown at the last try_wait), so its pid, and the group id, cannot
        // have been reused; no memory is involved.
        unsafe { libc::kill(-pid, sig) };
    }

    /// The certificates' directory (QUIC only).
    pub fn certs_dir(&self) -> Option<PathBuf> {
        self.certs.as_ref().map(|d| d.path().to_path_buf())
    }
}

impl Drop for LocalRanks {
    /// A launcher dropped before waiting (an error while starting ranks) ends what it started.
    fn drop(&mut self) {
        for r in 0..self.children.len() {
            if matches!(self.children[r].try_wait(), Ok(None)) {
                self.signal(r, libc::SIGKILL);
                let _ = self.children[r].wait();
            }
        }
    }
}

/// A port `p` whose `p + 1` is free too, each for TCP and UDP on 127.0.0.1.
fn free_port_pair() -> std::io::Result<u16> {
    let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..100 {
        let p = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if p < u16::MAX && free(p) && free(p + 1) {
            return Ok(p);
        }
    }
    Err(std::io::Error::other("no two consecutive free ports on 127.0.0.1"))
}
