//! The inbound link thread: listens for the previous rank, greets each connection (TLS has
//! already checked its certificate; the hello must name this ring, rank and generation), keeps
//! the first that passes, and hands its stream's chunks to the driver's reader.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, Dir, Event, ReadError, StreamEvent, StreamId, VarInt};
use tokio::sync::oneshot;

use super::node::Node;
use super::queues::Incoming;

/// How long an accepted connection has to send its hello.
const GREETING: Duration = Duration::from_secs(5);

/// A connection accepted and not yet greeted.
struct Greeting {
    stream: Option<StreamId>,
    hello: Vec<u8>,
    deadline: Instant,
}

/// What the thread needs: its node, the hello it expects, and where formation and data go.
pub(crate) struct Inbound {
    pub(crate) node: Node,
    pub(crate) want_hello: [u8; 20],
    pub(crate) inc: Arc<Incoming>,
    pub(crate) formed: Option<oneshot::Sender<()>>,
}

impl Inbound {
    /// The thread's loop, until the driver's reader is gone.
    pub(crate) fn run(mut self) {
        let mut greetings: HashMap<ConnectionHandle, Greeting> = HashMap::new();
        let mut link: Option<(ConnectionHandle, StreamId)> = None;
        // Why the link's connection ended, until what it still holds has been read.
        let mut link_lost: Option<String> = None;
        let mut batch: Vec<Bytes> = Vec::new();
        loop {
            let now = Instant::now();
            let mut progress = match self.node.receive(now) {
                Ok(p) => p,
                Err(e) => {
                    self.inc.push(&mut batch, Some(Err(format!("receiving UDP: {e}"))));
                    return;
                }
            };
            self.node.service(now);
            for ch in self.node.accepted.drain(..) {
                greetings.insert(ch, Greeting { stream: None, hello: Vec::new(), deadline: now + GREETING });
            }
            self.events(&mut greetings, link, &mut link_lost);
            if link.is_none() {
                link = self.greet(now, &mut greetings);
            }
            self.node.waiting = greetings.len();
            let mut end = None;
            // With the queue full the stream is left unread: the previous rank's flow-control
            // credit runs out and it waits, until the driver's reader makes room (and rings).
            // Not once the connection has ended: what quinn-proto still holds (a stream window
            // at most) is read now, or it would go with the connection.
            let throttled = link.is_some() && link_lost.is_none() && !self.inc.has_room();
            if let Some((ch, id)) = link.filter(|_| !throttled) {
                match self.node.conns.get_mut(&ch) {
                    Some(conn) => end = read_all(conn.recv_stream(id), usize::MAX, &mut batch),
                    None if !self.inc.ended() => end = Some(Err("the previous rank's connection is gone".into())),
                    None => {}
                }
                // The connection ended before the stream did: the rest of the stream is lost.
                if let Some(why) = link_lost.take()
                    && end.is_none()
                {
                    end = Some(Err(format!("the previous rank's connection was lost: {why}")));
                }
            }
            progress |= !batch.is_empty();
            self.inc.push(&mut batch, end);
            self.node.reap();
            progress |= self.node.transmit(now);
            if self.inc.abandoned() {
                self.node.close_all(b"ring closed");
                return;
            }
            if !progress {
                let wake = self.node.next_timer().into_iter().chain(greetings.values().map(|g| g.deadline)).min();
                let timeout = wake.map(|t| t.saturating_duration_since(Instant::now()));
                use std::os::fd::AsRawFd;
                let inc = self.inc.clone();
                self.inc.bell.sleep(self.node.socket.as_raw_fd(), self.node.blocked.is_some(), timeout, || {
                    inc.abandoned() || (throttled && inc.has_room())
                });
            }
        }
    }

    /// Connection events: streams opened, connections lost (the link's is noted in `link_lost`).
    fn events(
        &mut self,
        greetings: &mut HashMap<ConnectionHandle, Greeting>,
        link: Option<(ConnectionHandle, StreamId)>,
        link_lost: &mut Option<String>,
    ) {
        let mut refused = Vec::new();
        for (ch, conn) in self.node.conns.iter_mut() {
            while let Some(ev) = conn.poll() {
                match ev {
                    Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                        while let Some(id) = conn.streams().accept(Dir::Uni) {
                            if let Some(g) = greetings.get_mut(ch) {
                                g.stream.get_or_insert(id);
                            }
                        }
                    }
                    Event::ConnectionLost { reason } => {
                        // A peer that closes before its hello chose to leave (the previous rank
                        // replacing an attempt it had given up on does): nothing was refused.
                        // During the handshake an application's close travels as the transport's
                        // APPLICATION_ERROR.
                        use quinn_proto::{ConnectionError, TransportErrorCode};
                        let left = match &reason {
                            ConnectionError::ApplicationClosed(_) => true,
                            ConnectionError::ConnectionClosed(c) => c.error_code == TransportErrorCode::APPLICATION_ERROR,
                            _ => false,
                        };
                        if greetings.remove(ch).is_some() && !left {
                            refused.push((
                                conn.remote_address(),
                                format!("TLS handshake failed or connection lost before its hello: {reason}"),
                            ));
                        } else if link.is_some_and(|(l, _)| l == *ch) {
                            *link_lost = Some(reason.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        for (peer, why) in refused {
            self.node.refused(peer, &why);
        }
    }

    /// Reads hellos; returns the link once one passes. Closes connections whose hello is wrong
    /// or late.
    fn greet(&mut self, now: Instant, greetings: &mut HashMap<ConnectionHandle, Greeting>) -> Option<(ConnectionHandle, StreamId)> {
        let mut chosen = None;
        let mut turned_away = Vec::new();
        for (ch, g) in greetings.iter_mut() {
            let Some(conn) = self.node.conns.get_mut(ch) else { continue };
            if let Some(id) = g.stream {
                let mut got = Vec::new();
                let _ = read_all(conn.recv_stream(id), 20 - g.hello.len(), &mut got);
                got.iter().for_each(|c| g.hello.extend_from_slice(c));
            }
            if g.hello.len() == 20 {
                // All of it, stripe index 0 of 1 included: this driver has no stripes.
                if g.hello[..] == self.want_hello[..] && chosen.is_none() {
                    chosen = Some((*ch, g.stream.expect("a hello came on a stream")));
                } else {
                    turned_away.push((*ch, "a hello for another ring, rank, generation or frame size"));
                }
            } else if now >= g.deadline {
                turned_away.push((*ch, "no hello within 5 s"));
            }
        }
        for (ch, why) in turned_away {
            greetings.remove(&ch);
            if let Some(conn) = self.node.conns.get_mut(&ch) {
                let peer = conn.remote_address();
                conn.close(now, VarInt::from_u32(1), Bytes::from_static(b"refused"));
                self.node.refused(peer, why);
            }
        }
        if let Some((ch, _)) = chosen {
            greetings.remove(&ch);
            // Formed: this endpoint accepts no one else; those still being greeted are closed.
            self.node.ep.set_server_config(None);
            for (other, _) in greetings.drain() {
                if let Some(conn) = self.node.conns.get_mut(&other) {
                    conn.close(now, VarInt::from_u32(1), Bytes::from_static(b"the ring has formed"));
                }
            }
            if let Some(tx) = self.formed.take() {
                let _ = tx.send(());
            }
        }
        chosen
    }
}

/// Reads what `stream` has now, at most `max` bytes, into `out`; the stream's end if it came.
pub(crate) fn read_all(mut stream: quinn_proto::RecvStream<'_>, max: usize, out: &mut Vec<Bytes>) -> Option<Result<(), String>> {
    if max == 0 {
        return None;
    }
    let mut chunks = match stream.read(true) {
        Ok(c) => c,
        Err(e) => return Some(Err(format!("reading the previous rank's stream: {e}"))),
    };
    let mut left = max;
    let mut end = None;
    while left > 0 {
        match chunks.next(left) {
            Ok(Some(c)) => {
                left -= c.bytes.len();
                out.push(c.bytes);
            }
            Ok(None) => {
                end = Some(Ok(()));
                break;
            }
            Err(ReadError::Blocked) => break,
            Err(ReadError::Reset(code)) => {
                end = Some(Err(format!("the previous rank reset its stream (code {code})")));
                break;
            }
        }
    }
    let _ = chunks.finalize();
    end
}
