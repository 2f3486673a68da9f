//! The control task: owns the [`Rendezvous`], the socket's receiving side and one timer, and
//! runs the loop in the parent module's docs. Sending goes through one small task per peer slot
//! ([`sender`]), so a slot whose name does not resolve, or resolves slowly, delays only the
//! messages to that slot, and datagrams to one slot leave in the order they were sealed (the
//! receiver's freshness rule would drop one that overtook another).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ringsam_membership::{AcceptorRecord, Event, Rendezvous, Slot, StateTag, encode};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::wire::{MAX_DATAGRAM, Wire};
use super::{Counters, record_file};

/// Datagrams queued for one slot beyond which more are dropped, as a congested network would.
const OUTBOX: usize = 16;
/// When to wake with no timer armed (the rendezvous always arms one; this is a fallback).
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// What the training thread asks of the task: the latest value is all that matters, so it
/// travels in a `watch` (one slot, never grows, never blocks the sender).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Requests {
    /// The training state held in memory ([`Rendezvous::set_state`]).
    pub(super) state: Option<StateTag>,
    /// The highest generation whose ring the training thread saw fail.
    pub(super) failed: u64,
}

/// Everything the loop owns besides the socket, its buffer and the requests.
pub(super) struct Driver {
    pub(super) rendezvous: Rendezvous,
    pub(super) wire: Wire,
    /// The zero of the rendezvous' clock.
    pub(super) origin: Instant,
    /// Each slot's control address, by slot.
    pub(super) addresses: Vec<String>,
    pub(super) record_path: PathBuf,
    pub(super) events: std::sync::mpsc::Sender<Event>,
    pub(super) on_event: Option<super::EventHook>,
    pub(super) counters: Arc<Counters>,
}

/// A slot's sender queue: datagrams with the time they were queued.
type Outbox = mpsc::Sender<(Instant, Vec<u8>)>;

/// Runs the control loop until the events' receiver or the requests' sender is gone.
pub(super) async fn drive(driver: Driver, socket: UdpSocket, mut requests: watch::Receiver<Requests>) {
    let socket = Arc::new(socket);
    let mut state = Loop::new(driver, &socket);
    // One byte past the largest datagram, so a larger one shows up as too long, not cut to fit.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        if !state.flush().await {
            return;
        }
        let deadline = state.deadline();
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                // Receive errors (an ICMP error surfacing, an interrupted call) concern one
                // datagram at most: the loop goes on.
                if let Ok((len, _)) = received {
                    state.receive(&buf[..len.min(buf.len())]);
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                let now = state.now();
                state.d.rendezvous.handle_timeout(now);
            }
            changed = requests.changed() => {
                if changed.is_err() {
                    return;
                }
                let r = *requests.borrow_and_update();
                state.apply(r);
            }
        }
    }
}

/// The loop's state: the driver, plus what the loop itself keeps.
struct Loop {
    d: Driver,
    /// Per slot, the queue of its sender task (`None` for this slot).
    outboxes: Vec<Option<Outbox>>,
    /// The sender tasks; dropping the set (the loop ending or being aborted) ends them.
    _senders: JoinSet<()>,
    /// A record `poll_persist` gave that is not on disk yet: while there is one, nothing is sent.
    unwritten: Option<AcceptorRecord>,
    /// The last persistence error logged (logged again only when it changes or clears).
    persist_error: Option<String>,
    /// The highest failed generation already acted on.
    failed_seen: u64,
    /// Whether an oversized message was logged already.
    warned_oversize: bool,
}

impl Loop {
    fn new(d: Driver, socket: &Arc<UdpSocket>) -> Loop {
        let me = d.rendezvous.config().slot;
        // A datagram older than this is no use to anyone: the peer has judged us already.
        let max_age = d.rendezvous.config().suspect_after;
        let mut senders = JoinSet::new();
        let outboxes = d
            .addresses
            .iter()
            .enumerate()
            .map(|(i, address)| {
                if i == me.0 as usize {
                    return None;
                }
                let (tx, rx) = mpsc::channel(OUTBOX);
                senders.spawn(sender(Arc::clone(socket), address.clone(), rx, max_age));
                Some(tx)
            })
            .collect();
        Loop { d, outboxes, _senders: senders, unwritten: None, persist_error: None, failed_seen: 0, warned_oversize: false }
    }

    fn now(&self) -> Duration {
        self.d.origin.elapsed()
    }

    fn slot(&self) -> Slot {
        self.d.rendezvous.config().slot
    }

    /// When the timer should fire next.
    fn deadline(&self) -> Instant {
        self.d.rendezvous.poll_timeout().and_then(|t| self.d.origin.checked_add(t)).unwrap_or_else(|| Instant::now() + IDLE_WAKE)
    }

    /// A datagram arrived: to the rendezvous if it opens, else counted.
    fn receive(&mut self, bytes: &[u8]) {
        match self.d.wire.open(bytes) {
            Ok((from, msg)) => {
                let now = self.now();
                self.d.rendezvous.handle_message(now, from, msg);
            }
            Err(_) => {
                self.d.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The training thread's latest requests. The state goes first, so a re-formation the
    /// failure starts advertises the newest state.
    fn apply(&mut self, r: Requests) {
        self.d.rendezvous.set_state(r.state);
        if r.failed > self.failed_seen {
            self.failed_seen = r.failed;
            // A failure of a ring the rendezvous has already left (the training thread had not
            // yet read the events saying so) must not tear down its successor.
            if self.d.rendezvous.membership().is_some_and(|m| m.generation == r.failed) {
                let now = self.now();
                self.d.rendezvous.handle_ring_failure(now);
            }
        }
    }

    /// Steps 2 to 4 of the loop: persist, then send, then report. Returns false when the
    /// events' receiver is gone (the task should end).
    async fn flush(&mut self) -> bool {
        if let Some(record) = self.d.rendezvous.poll_persist() {
            self.unwritten = Some(record); // each record supersedes the last
        }
        if let Some(record) = self.unwritten.take() {
            let path = self.d.record_path.clone();
            let copy = record.clone();
            // Off the runtime's threads: an fsync can take long, and this runtime also drives
            // the ring.
            let written = tokio::task::spawn_blocking(move || record_file::write(&path, &copy))
                .await
                .unwrap_or_else(|e| Err(format!("the record writer did not finish: {e}")));
            match written {
                Ok(()) => {
                    if self.persist_error.take().is_some() {
                        eprintln!("control ({}): acceptor record {} written again", self.slot(), self.d.record_path.display());
                    }
                }
                Err(why) => {
                    self.d.counters.persist_failures.fetch_add(1, Ordering::Relaxed);
                    if self.persist_error.as_deref() != Some(why.as_str()) {
                        eprintln!("control ({}): {why}; sending nothing until the record is on disk", self.slot());
                        self.persist_error = Some(why);
                    }
                    self.unwritten = Some(record);
                }
            }
        }
        let durable = self.unwritten.is_none();
        while let Some((to, msg)) = self.d.rendezvous.poll_transmit() {
            // A promise that is not on disk must not be acted on: drop what was queued after it
            // (the protocol retries by its timeouts, as after any loss).
            if durable {
                self.send(to, &encode(&msg));
            }
        }
        while let Some(event) = self.d.rendezvous.poll_event() {
            if let Some(hook) = &self.d.on_event {
                hook(&event);
            }
            if self.d.events.send(event).is_err() {
                return false;
            }
        }
        true
    }

    /// Seals `payload` for `to` and queues it on that slot's sender.
    fn send(&mut self, to: Slot, payload: &[u8]) {
        let Some(Some(outbox)) = self.outboxes.get(to.0 as usize) else { return };
        let mut datagram = Vec::new();
        if let Err(len) = self.d.wire.seal(to, payload, &mut datagram) {
            if !self.warned_oversize {
                self.warned_oversize = true;
                eprintln!("control ({}): a {len}-byte message to {to} does not fit one datagram; not sent (logged once)", self.slot());
            }
            return;
        }
        // Full: the slot is unreachable or its name resolves slowly; dropped like a lost datagram.
        let _ = outbox.try_send((Instant::now(), datagram));
    }
}

/// Sends the datagrams queued for one slot, in order, resolving its address before each (a
/// replaced pod keeps its name but not its IP). A datagram older than `max_age` is skipped, and
/// a lookup is given at most `max_age`. Errors lose the datagram, as the network could.
async fn sender(socket: Arc<UdpSocket>, address: String, mut queue: mpsc::Receiver<(Instant, Vec<u8>)>, max_age: Duration) {
    let ipv4 = socket.local_addr().map_or(true, |a| a.is_ipv4());
    while let Some((queued, datagram)) = queue.recv().await {
        if queued.elapsed() > max_age {
            continue;
        }
        let Ok(Ok(resolved)) = tokio::time::timeout(max_age, tokio::net::lookup_host(address.as_str())).await else { continue };
        let Some(to) = pick(resolved, ipv4) else { continue };
        let _ = socket.send_to(&datagram, to).await;
    }
}

/// The first address this socket can send to: of its own family, or, for an IPv6 socket, an
/// IPv4 address mapped into IPv6.
fn pick(resolved: impl Iterator<Item = SocketAddr>, ipv4_socket: bool) -> Option<SocketAddr> {
    let mut mapped = None;
    for a in resolved {
        match (a.ip(), ipv4_socket) {
            (IpAddr::V4(_), true) | (IpAddr::V6(_), false) => return Some(a),
            (IpAddr::V4(v4), false) => {
                if mapped.is_none() {
                    mapped = Some(SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()));
                }
            }
            (IpAddr::V6(_), true) => {}
        }
    }
    mapped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_the_sockets_family_first() {
        let v4: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:7000".parse().unwrap();
        assert_eq!(pick([v6, v4].into_iter(), true), Some(v4));
        assert_eq!(pick([v4, v6].into_iter(), false), Some(v6));
        assert_eq!(pick([v4].into_iter(), false), Some("[::ffff:10.0.0.1]:7000".parse().unwrap()));
        assert_eq!(pick([v6].into_iter(), true), None);
    }
}
