//! The membership protocol's transport and driver: one tokio task per worker that owns a UDP
//! socket and a [`Rendezvous`], and tells the training thread what happened ([`Control`]).
//!
//! # Why UDP
//! Membership is a few small messages per heartbeat whose only job is to arrive on time, or be
//! known lost. UDP is connectionless: a heartbeat is never queued behind bulk ring data, nor
//! behind a TCP connection to a peer that died (which would take retransmission timeouts to
//! notice), and there is no connection to set up again when a peer comes back. The protocol
//! already treats every message as one that may be lost, delayed or duplicated. Each slot's
//! address is a name, resolved anew before every send: a replaced Kubernetes pod keeps its DNS
//! name but gets a new IP. A slot that does not resolve or cannot be reached misses that message.
//!
//! # Why every datagram is authenticated, and fresh
//! Anyone who can reach the port could otherwise forge a Propose or a Commit and split the job.
//! Each datagram carries an HMAC-SHA256 tag under the cluster secret (the one the TCP handshake
//! uses, under another label), checked in constant time before anything is decoded; the format
//! and the checks are in `wire.rs`. Contents are not secret (slots, generations), so they are
//! not encrypted. A valid tag is not enough: a recorded heartbeat, replayed, would keep a dead
//! peer alive. So a receiver keeps, per sender, the newest `(boot, seq)` it accepted (the
//! sender's start time, then a per-process counter) and drops anything not strictly newer: a
//! replay, a datagram the network reordered (a loss, to the protocol), and anything from a dead
//! process of a slot once its successor spoke. A successor's datagrams count as newer because
//! it started later, by the clock of its machine: a clock stepped back by more than the restart
//! took would silence the restarted worker to peers that heard its predecessor, until they
//! restart too.
//!
//! # The loop
//! 1. Feed what happened: a datagram that opens → [`Rendezvous::handle_message`]; the timer →
//!    [`Rendezvous::handle_timeout`]; the training thread's requests → [`Rendezvous::set_state`]
//!    and [`Rendezvous::handle_ring_failure`].
//! 2. Persist: a record from [`Rendezvous::poll_persist`] is written durably (temporary file,
//!    fsync, rename, fsync of the directory) *before* anything queued after it is sent, since an
//!    Accept promises what the record holds. If the write fails, nothing is sent that round:
//!    the queued messages are dropped (the protocol retries by its timeouts), the failure is
//!    counted ([`Control::persist_failures`]) and logged, and the record is written again on the
//!    next round. A worker that cannot persist looks dead to its peers, which is the truth.
//! 3. Send: each message of [`Rendezvous::poll_transmit`], sealed, goes to its slot's sender.
//! 4. Report: each [`Event`] goes to the training thread ([`Control::next_event`]).
//! 5. Wait for a datagram, the timer ([`Rendezvous::poll_timeout`]) or a request.
//!
//! The task runs on a runtime the caller gives: the ring's, so heartbeats never wait on the
//! training thread. Record writes run on that runtime's blocking threads.
//!
//! # Memory
//! - Events: a std channel, unbounded. Events are few (a handful per re-formation, which are a
//!   heartbeat apart at least), losing one would leave the training thread out of step, and the
//!   task must never block on a training thread busy with a step.
//! - Requests: a `watch` holding the latest state and the highest failed generation; one slot,
//!   it never grows and never blocks.
//! - Sends: one task per peer slot with a queue of 16 datagrams; a full queue (a slot whose
//!   name resolves slowly) drops the datagram, as a congested network would. A datagram older
//!   than `suspect_after` by the time it could leave is not sent.
//! - Receiving: one buffer of the largest datagram, 64 KiB. A message must fit one datagram;
//!   any Join fits for jobs up to a few hundred slots. A larger one is logged and not sent.

mod drive;
mod record_file;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ringsam_membership::{Event, MembershipConfig, Rendezvous, StateTag};
use tokio::sync::watch;

use drive::{Driver, Requests};
use wire::Wire;

/// How a worker takes part in the membership protocol.
#[derive(Clone)]
pub struct ControlConfig {
    /// The rendezvous parameters (this worker's slot, the job's slots, heartbeat).
    pub membership: MembershipConfig,
    /// Local UDP address to bind (e.g. `0.0.0.0:PORT`).
    pub listen: SocketAddr,
    /// Every slot's control address `host:port`, indexed by slot (this worker's own is unused).
    /// Resolved anew before every send (see the module docs).
    pub addresses: Vec<String>,
    /// The shared cluster secret, keying HMAC-SHA256 on every datagram (at least 128 bits).
    pub secret: Vec<u8>,
    /// This slot's acceptor record: read at start (no file: a fresh worker), replaced atomically
    /// whenever the rendezvous asks. Its directory is created if missing.
    pub record_path: PathBuf,
    /// Called on the control thread with every event before it is queued for the training
    /// thread: a `Reforming` can abort the rings there at once, while the training thread is
    /// blocked in one of their operations.
    pub on_event: Option<EventHook>,
}

/// See [`ControlConfig::on_event`].
pub type EventHook = std::sync::Arc<dyn Fn(&Event) + Send + Sync>;

/// Counted by the task, read by [`Control`].
#[derive(Debug, Default)]
struct Counters {
    /// Datagrams dropped: failed authentication, replays, malformed, misaddressed.
    dropped: AtomicU64,
    /// Record writes that failed.
    persist_failures: AtomicU64,
}

/// One worker's running membership driver (see the module docs). Dropping it stops the task.
pub struct Control {
    events: std::sync::mpsc::Receiver<Event>,
    requests: watch::Sender<Requests>,
    task: tokio::task::JoinHandle<()>,
    counters: Arc<Counters>,
}

impl Control {
    /// Binds `cfg.listen`, then as [`Control::start_with_socket`].
    pub fn start(runtime: &tokio::runtime::Handle, cfg: ControlConfig) -> Result<Control, String> {
        let socket = std::net::UdpSocket::bind(cfg.listen).map_err(|e| format!("binding the control socket {}: {e}", cfg.listen))?;
        Self::start_with_socket(runtime, cfg, socket)
    }

    /// Checks `cfg`, reads the acceptor record, restores the [`Rendezvous`] from it and spawns
    /// the task on `runtime`, receiving on `socket` (already bound; `cfg.listen` is not used).
    /// Errors name the file, address or setting at fault.
    pub fn start_with_socket(runtime: &tokio::runtime::Handle, cfg: ControlConfig, socket: std::net::UdpSocket) -> Result<Control, String> {
        cfg.membership.validate().map_err(|e| e.to_string())?;
        let slots = cfg.membership.slots as usize;
        if cfg.addresses.len() != slots {
            return Err(format!("{} control addresses for {slots} slots: give one per slot, in slot order", cfg.addresses.len()));
        }
        crate::tcp::check_secret(&cfg.secret)?;
        let path = &cfg.record_path;
        if record_file::tmp_path(path).is_none() {
            return Err(format!("acceptor record {}: not a file name", path.display()));
        }
        let dir = record_file::parent_dir(path);
        std::fs::create_dir_all(dir).map_err(|e| format!("creating the record directory {}: {e}", dir.display()))?;
        let record = record_file::read(path)?;
        let rendezvous = Rendezvous::restore(cfg.membership.clone(), record).map_err(|e| format!("{}: {e}", path.display()))?;

        socket.set_nonblocking(true).map_err(|e| format!("control socket {}: {e}", local(&socket)))?;
        let socket = {
            let _entered = runtime.enter();
            tokio::net::UdpSocket::from_std(socket)
        }
        .map_err(|e| format!("control socket: {e}"))?;

        let wire = Wire::new(&cfg.secret, cfg.membership.slot, cfg.membership.slots, boot_time());
        let (events_tx, events) = std::sync::mpsc::channel();
        let (requests, requests_rx) = watch::channel(Requests::default());
        let counters = Arc::new(Counters::default());
        let driver = Driver {
            rendezvous,
            wire,
            origin: tokio::time::Instant::now(),
            addresses: cfg.addresses,
            record_path: cfg.record_path,
            events: events_tx,
            on_event: cfg.on_event,
            counters: Arc::clone(&counters),
        };
        let task = runtime.spawn(drive::drive(driver, socket, requests_rx));
        Ok(Control { events, requests, task, counters })
    }

    /// Blocks the calling (training) thread up to `timeout` for the next event. `None` also once
    /// the task has stopped ([`Control::finished`]).
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// The ring of `generation` (from its [`Event::Formed`]) failed: re-form. Ignored if the
    /// task has moved past that generation already (its events are on their way).
    pub fn ring_failed(&self, generation: u64) {
        self.requests.send_modify(|r| r.failed = r.failed.max(generation));
    }

    /// The training state this process holds in memory, advertised in its next Joins (see
    /// [`Rendezvous::set_state`]); only the latest value counts. The elastic loop calls it before
    /// each re-formation, so a Join sent while its training thread is still failing out of a step
    /// may carry the previous tag: a holder's state is never older than its tag, so a stale tag
    /// can only pick a source with fewer steps (more redone), never an inconsistent one.
    pub fn set_state(&self, state: Option<StateTag>) {
        self.requests.send_modify(|r| r.state = state);
    }

    /// Datagrams dropped: failed authentication, replays, misaddressed, malformed.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Record writes that failed (each also withheld that round's messages).
    pub fn persist_failures(&self) -> u64 {
        self.counters.persist_failures.load(Ordering::Relaxed)
    }

    /// Whether the task has stopped (its runtime shut down): no more events will come.
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// This process's start in nanoseconds since the UNIX epoch: the `boot` of its datagrams.
fn boot_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The socket's local address, for messages.
fn local(socket: &std::net::UdpSocket) -> String {
    socket.local_addr().map_or_else(|_| "(unbound)".to_string(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsam_membership::{AcceptorRecord, Slot};

    const SECRET: &[u8] = b"00112233445566778899aabbccddeeff";

    #[test]
    fn two_workers_form_over_udp() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let sockets: Vec<std::net::UdpSocket> = (0..2).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let addresses: Vec<String> = sockets.iter().map(|s| s.local_addr().unwrap().to_string()).collect();
        let record = |i: usize| dir.path().join("records").join(format!("slot-{i}.record"));
        let controls: Vec<Control> = sockets
            .into_iter()
            .enumerate()
            .map(|(i, socket)| {
                let membership = MembershipConfig::new(Slot(i as u32), 1, 2, 2, 2, Duration::from_millis(100)).unwrap();
                let cfg = ControlConfig {
                    membership,
                    listen: socket.local_addr().unwrap(),
                    addresses: addresses.clone(),
                    secret: SECRET.to_vec(),
                    record_path: record(i),
                    on_event: None,
                };
                Control::start_with_socket(runtime.handle(), cfg, socket).unwrap()
            })
            .collect();

        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut formed: Vec<Option<(u64, u32)>> = vec![None; 2];
        while formed.iter().any(Option::is_none) && std::time::Instant::now() < deadline {
            for (i, control) in controls.iter().enumerate() {
                if let Some(Event::Formed { membership, rank, .. }) = control.next_event(Duration::from_millis(20)) {
                    formed[i] = Some((membership.generation, rank));
                }
            }
        }
        let (Some((g0, rank0)), Some((g1, rank1))) = (formed[0], formed[1]) else {
            panic!("not formed within 5 s: {formed:?}");
        };
        assert_eq!(g0, g1, "one generation");
        assert_eq!((rank0, rank1), (0, 1));
        for (i, control) in controls.iter().enumerate() {
            assert_eq!(control.dropped(), 0, "slot {i}: nothing but authentic, fresh datagrams on loopback");
            assert_eq!(control.persist_failures(), 0);
            // The commit's record is on disk before the Formed event is reported.
            let bytes = std::fs::read(record(i)).unwrap();
            let written = AcceptorRecord::decode(&bytes).unwrap();
            assert_eq!(written.committed.map(|m| m.generation), Some(g0), "slot {i}");
            assert!(!control.finished());
        }
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = ControlConfig {
            membership: MembershipConfig::new(Slot(0), 1, 2, 2, 2, Duration::from_millis(100)).unwrap(),
            listen: "127.0.0.1:0".parse().unwrap(),
            addresses: vec!["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()],
            secret: SECRET.to_vec(),
            record_path: dir.path().join("slot-0.record"),
            on_event: None,
        };
        let start = |cfg: ControlConfig| Control::start(runtime.handle(), cfg).err().unwrap_or_default();
        assert!(start(ControlConfig { addresses: vec!["127.0.0.1:1".to_string()], ..cfg.clone() }).contains("addresses"));
        assert!(start(ControlConfig { secret: b"short".to_vec(), ..cfg.clone() }).contains("secret"));
        std::fs::write(&cfg.record_path, b"garbage").unwrap();
        assert!(start(cfg.clone()).contains("slot-0.record"));
        std::fs::remove_file(&cfg.record_path).unwrap();
        assert!(Control::start(runtime.handle(), cfg).is_ok());
    }
}
