//! The outbound link thread: connects to the next rank (trying again until it answers), sends the
//! hello, then moves the driver's queued chunks into the stream as quinn-proto's flow control
//! allows. Closing moves what is still queued into the stream, finishes it, and waits for the
//! next rank to acknowledge all of it: at most [`CLOSE_ACK_WAIT`] from the driver's close.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{ClientConfig, ConnectionHandle, Dir, Event, StreamEvent, StreamId, VarInt};
use tokio::sync::oneshot;

use super::node::Node;
use super::queues::Outgoing;
use crate::quic::CLOSE_ACK_WAIT;

/// The first wait for a connection attempt that has heard nothing back before another replaces
/// it; it doubles up to [`MAX_RETRY`]. A next rank that is not listening yet drops our Initial
/// packets, and QUIC's own retransmission backs off from a second. An attempt the next rank has
/// answered is left to finish its handshake (or fail): replacing it would leave the next rank
/// greeting a connection nobody uses.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(2);

pub(crate) struct Outbound {
    pub(crate) node: Node,
    pub(crate) client: ClientConfig,
    pub(crate) next: SocketAddr,
    pub(crate) hello: [u8; 20],
    pub(crate) out: Arc<Outgoing>,
    /// Told once the stream is open and the hello queued; or why the ring could not form.
    pub(crate) formed: Option<oneshot::Sender<Result<(), String>>>,
    pub(crate) deadline: Instant,
    /// The link's statistics, for `--quic_stats`.
    pub(crate) stats: super::SharedStats,
}

/// How often, while the thread is busy, the link's statistics are copied out for
/// `--quic_stats` (also as the stream opens, and as the thread ends). An idle link's statistics
/// do not change, so the copy is never staler than this.
const STATS_EVERY: Duration = Duration::from_millis(10);

/// Where the connection stands.
enum Link {
    /// Trying: the attempt in flight, when the next replaces it, the wait after that, and why
    /// the last one failed.
    Connecting { ch: Option<ConnectionHandle>, next_try: Instant, wait: Duration, last_error: Option<String> },
    /// Streaming on `id`: first what is left of the hello, then the driver's chunks.
    /// `close_by` is set when the driver closes, `finished` once the stream is finished.
    Open { ch: ConnectionHandle, id: StreamId, hello: Bytes, close_by: Option<Instant>, finished: bool },
    /// Done (closed or failed): the thread leaves when the driver does.
    Done,
}

impl Outbound {
    pub(crate) fn run(mut self) {
        let mut link = Link::Connecting { ch: None, next_try: Instant::now(), wait: FIRST_RETRY, last_error: None };
        let mut pending: VecDeque<Bytes> = VecDeque::new();
        let mut stats_at = Instant::now();
        loop {
            let now = Instant::now();
            if now >= stats_at {
                self.copy_stats(&link);
                stats_at = now + STATS_EVERY;
            }
            let mut progress = match self.node.receive(now) {
                Ok(p) => p,
                Err(e) => {
                    self.fail(&mut link, format!("receiving UDP: {e}"));
                    false
                }
            };
            self.node.service(now);
            self.events(now, &mut link);
            if let Link::Connecting { ch, next_try, wait, last_error } = &mut link {
                if now >= self.deadline {
                    let why = last_error.clone().unwrap_or_else(|| "no answer".into());
                    self.fail(&mut link, why);
                } else if now >= *next_try && ch.is_some_and(|c| self.node.conns.get(&c).is_some_and(|c| c.stats().udp_rx.datagrams > 0)) {
                    // Answered: left to finish its handshake (or fail); look again later.
                    *next_try = now + *wait;
                } else if now >= *next_try {
                    if let Some(old) = ch.take().and_then(|c| self.node.conns.get_mut(&c)) {
                        old.close(now, VarInt::from_u32(0), Bytes::from_static(b"retrying"));
                    }
                    *next_try = now + *wait;
                    *wait = (*wait * 2).min(MAX_RETRY);
                    match self.node.ep.connect(now, self.client.clone(), self.next, crate::certs::PEER_NAME) {
                        Ok((h, conn)) => {
                            self.node.conns.insert(h, conn);
                            *ch = Some(h);
                        }
                        Err(e) => *last_error = Some(e.to_string()),
                    }
                }
            }
            progress |= self.write(now, &mut link, &mut pending);
            self.node.reap();
            progress |= self.node.transmit(now);
            let abandoned = self.out.lock().abandoned;
            if abandoned {
                self.copy_stats(&link);
                self.node.close_all(b"ring closed");
                return;
            }
            if !progress {
                let timers = [self.node.next_timer(), self.retry_at(&link), finish_deadline(&link)];
                let wake = timers.into_iter().flatten().min();
                let timeout = wake.map(|t| t.saturating_duration_since(Instant::now()));
                let out = self.out.clone();
                let has_queue = matches!(link, Link::Open { .. });
                // A close already acted on is not new work (it would wake the thread forever).
                let close_seen = matches!(link, Link::Open { close_by: Some(_), .. });
                self.out.bell.sleep(self.node.socket.as_raw_fd(), self.node.blocked.is_some(), timeout, || {
                    let s = out.lock();
                    s.abandoned || (has_queue && (!s.chunks.is_empty() || (s.closing && !close_seen)))
                });
            }
        }
    }

    /// Connected, lost, stream acknowledged.
    fn events(&mut self, now: Instant, link: &mut Link) {
        let mut lost = None;
        for (h, conn) in self.node.conns.iter_mut() {
            while let Some(ev) = conn.poll() {
                match (ev, &mut *link) {
                    (Event::Connected, Link::Connecting { ch: Some(c), .. }) if c == h => {
                        let Some(id) = conn.streams().open(Dir::Uni) else {
                            lost = Some("the next rank allows no stream".to_string());
                            continue;
                        };
                        let hello = Bytes::copy_from_slice(&self.hello);
                        *link = Link::Open { ch: *h, id, hello, close_by: None, finished: false };
                        *self.stats.lock().expect("never poisoned") = Some(conn.stats());
                        if let Some(tx) = self.formed.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    (Event::ConnectionLost { reason }, Link::Connecting { ch, last_error, .. }) if *ch == Some(*h) => {
                        *last_error = Some(reason.to_string());
                        *ch = None;
                    }
                    (Event::ConnectionLost { reason }, Link::Open { ch, .. }) if ch == h => {
                        lost = Some(format!("the connection to the next rank was lost: {reason}"));
                    }
                    (Event::Stream(StreamEvent::Stopped { error_code, .. }), Link::Open { ch, .. }) if ch == h => {
                        lost = Some(format!("the next rank stopped reading (code {error_code})"));
                    }
                    (Event::Stream(StreamEvent::Finished { .. }), Link::Open { ch, finished: true, .. }) if ch == h => {
                        // Every byte acknowledged: the close is complete.
                        self.out.set_closed();
                        conn.close(now, VarInt::from_u32(0), Bytes::from_static(b"done"));
                        *link = Link::Done;
                    }
                    _ => {}
                }
            }
        }
        if let Some(why) = lost {
            self.fail(link, why);
        }
    }

    /// Moves the hello, then queued chunks, into the stream; finishes it once the driver closed
    /// and all went.
    fn write(&mut self, now: Instant, link: &mut Link, pending: &mut VecDeque<Bytes>) -> bool {
        let Link::Open { ch, id, hello, close_by, finished } = link else { return false };
        let Some(conn) = self.node.conns.get_mut(ch) else {
            self.fail(link, "the connection to the next rank is gone".into());
            return false;
        };
        let closing = {
            let mut s = self.out.lock();
            pending.extend(s.chunks.drain(..));
            s.closing
        };
        if closing && close_by.is_none() {
            *close_by = Some(now + CLOSE_ACK_WAIT);
        }
        let mut progress = false;
        if !hello.is_empty() {
            // Not counted in the queue's bytes: the hello never was in it.
            let mut h = [std::mem::take(hello)];
            if let Ok(w) = conn.send_stream(*id).write_chunks(&mut h) {
                progress = w.bytes > 0;
            }
            *hello = std::mem::take(&mut h[0]);
        }
        let mut taken = 0;
        while hello.is_empty() && !pending.is_empty() {
            match conn.send_stream(*id).write_chunks(pending.make_contiguous()) {
                Ok(w) if w.bytes > 0 => {
                    taken += w.bytes;
                    pending.drain(..w.chunks);
                }
                _ => break, // blocked by flow control until the next rank reads
            }
        }
        if taken > 0 {
            self.out.taken(taken);
        }
        if closing && !*finished && hello.is_empty() && pending.is_empty() {
            let _ = conn.send_stream(*id).finish();
            *finished = true;
        }
        if close_by.is_some_and(|by| now >= by) {
            // Not all written and acknowledged in time (the next rank is gone or stopped
            // reading): close anyway.
            self.out.set_closed();
            conn.close(now, VarInt::from_u32(0), Bytes::from_static(b"done"));
            *link = Link::Done;
        }
        progress || taken > 0
    }

    fn copy_stats(&self, link: &Link) {
        if let Link::Open { ch, .. } = link
            && let Some(conn) = self.node.conns.get(ch)
        {
            *self.stats.lock().expect("never poisoned") = Some(conn.stats());
        }
    }

    /// When a connecting link next has something to do: try again, or give up.
    fn retry_at(&self, link: &Link) -> Option<Instant> {
        match link {
            Link::Connecting { next_try, .. } => Some((*next_try).min(self.deadline)),
            _ => None,
        }
    }

    fn fail(&mut self, link: &mut Link, why: String) {
        if let Some(tx) = self.formed.take() {
            let _ = tx.send(Err(why.clone()));
        }
        self.out.fail(why);
        *link = Link::Done;
    }
}

fn finish_deadline(link: &Link) -> Option<Instant> {
    match link {
        Link::Open { close_by, .. } => *close_by,
        _ => None,
    }
}
