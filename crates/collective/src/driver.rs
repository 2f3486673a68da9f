//! The async driver shared by the socket transports (TCP, QUIC): it owns a [`Ring`] and moves
//! frames between it and one inbound and one outbound byte stream.
//!
//! Three tokio tasks per rank — a reader (decodes and bounds headers, reads payloads, forwards
//! frames), a writer (writes frames in order), and the loop that owns the ring, shaped like
//! quinn's `ConnectionDriver`: feed inbound frames, start requested operations, drain sends to the
//! writer, arm one timer, forward events to waiting callers. The writer's queue is unbounded on
//! purpose: what the ring queues is bounded by the operations in flight, and a bounded queue here
//! could deadlock a ring whose every rank waits to write. Buffers travel back to where they are
//! filled, so steady state allocates nothing per frame.

use std::collections::HashMap;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::frame::{FrameHeader, HEADER_LEN};
use crate::{OpId, ReduceOp, Ring, RingError, RingEvent};

enum Request {
    Op {
        op: OpId,
        data: Vec<f32>,
        reduce: ReduceOp,
        reply: oneshot::Sender<Result<Vec<f32>, RingError>>,
    },
    /// Flush every queued frame to the socket, then stop.
    Close(oneshot::Sender<()>),
}

/// One rank's handle on a formed ring (any socket transport).
pub struct RingHandle {
    requests: mpsc::UnboundedSender<Request>,
    next_op: u64,
}

impl RingHandle {
    /// All-reduces `data`; every rank must call this in the same order.
    pub async fn allreduce(&mut self, data: Vec<f32>, reduce: ReduceOp) -> Result<Vec<f32>, RingError> {
        let op = OpId(self.next_op);
        self.next_op += 1;
        let (reply, rx) = oneshot::channel();
        let gone = || RingError::Usage("the ring's driver has stopped".into());
        self.requests.send(Request::Op { op, data, reduce, reply }).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Closes this rank's side cleanly: frames already queued for the next rank are written
    /// first. Call it before exiting, or the next rank may miss the last frames it needs (a
    /// finished operation can still have frames on their way out).
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Starts the driver tasks for `ring` over `links` (`None` for a ring of one) on the current
/// tokio runtime, and returns the handle callers use.
pub(crate) fn spawn<R, W>(ring: Ring, links: Option<(R, W)>) -> RingHandle
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (requests, reqs_rx) = mpsc::unbounded_channel();
    tokio::spawn(drive(ring, links, reqs_rx));
    RingHandle { requests, next_op: 0 }
}

enum Inbound {
    Frame(FrameHeader, Vec<u8>),
    Closed(String),
}

/// The loop that owns the ring (see the module docs).
async fn drive<R, W>(mut ring: Ring, links: Option<(R, W)>, mut reqs: mpsc::UnboundedReceiver<Request>)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (frames_tx, mut frames_rx) = mpsc::unbounded_channel::<Inbound>();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (werr_tx, mut werr_rx) = mpsc::unbounded_channel::<String>();
    // Buffers travel back to where they are filled, so steady state allocates nothing per frame.
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Vec<u8>>(); // writer → loop
    let (used_tx, mut used_rx) = mpsc::unbounded_channel::<Vec<u8>>(); // loop → reader
    let mut writer = None;
    if let Some((mut rd, mut wr)) = links {
        let max = ring.config().max_payload();
        tokio::spawn(async move {
            let mut hdr = [0u8; HEADER_LEN];
            loop {
                let why = match rd.read_exact(&mut hdr).await {
                    Err(e) => e.to_string(),
                    Ok(_) => match FrameHeader::decode(&hdr, max) {
                        Err(e) => e.to_string(),
                        Ok(h) => {
                            let mut payload = used_rx.try_recv().unwrap_or_default();
                            // Bounded by `max` above. Same-size chunks (the common case) reuse the
                            // buffer as is: read_exact overwrites it, so there is nothing to zero.
                            if payload.len() != h.len as usize {
                                payload.resize(h.len as usize, 0);
                            }
                            match rd.read_exact(&mut payload).await {
                                Ok(_) => {
                                    if frames_tx.send(Inbound::Frame(h, payload)).is_err() {
                                        return;
                                    }
                                    continue;
                                }
                                Err(e) => e.to_string(),
                            }
                        }
                    },
                };
                let _ = frames_tx.send(Inbound::Closed(why));
                return;
            }
        });
        writer = Some(tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if let Err(e) = wr.write_all(&frame).await {
                    let _ = werr_tx.send(e.to_string());
                    return;
                }
                let _ = sent_tx.send(frame);
            }
            let _ = wr.shutdown().await; // every frame is out: tell the next rank we are done
        }));
    }
    let mut waiters: HashMap<OpId, oneshot::Sender<Result<Vec<f32>, RingError>>> = HashMap::new();
    let mut inbound_open = true;
    let mut buf = Vec::new();
    loop {
        while ring.poll_send(&mut buf).is_some() {
            let _ = out_tx.send(std::mem::replace(&mut buf, sent_rx.try_recv().unwrap_or_default()));
        }
        while let Some(e) = ring.poll_event() {
            match e {
                RingEvent::OpDone(op) => {
                    if let (Some(w), Some(r)) = (waiters.remove(&op), ring.take_result(op)) {
                        let _ = w.send(Ok(r));
                    }
                }
                RingEvent::OpFailed(op, err) => {
                    if let Some(w) = waiters.remove(&op) {
                        let _ = w.send(Err(err));
                    }
                }
                RingEvent::PeerLost(_) => {}
            }
        }
        let deadline = ring.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            req = reqs.recv() => match req {
                Some(Request::Op { op, data, reduce, reply }) => match ring.start(Instant::now(), op, data, reduce) {
                    Ok(()) => { waiters.insert(op, reply); }
                    Err(e) => { let _ = reply.send(Err(e)); }
                },
                Some(Request::Close(done)) => {
                    drop(out_tx); // the writer drains what is queued, then shuts the socket down
                    if let Some(w) = writer.take() {
                        let _ = w.await;
                    }
                    let _ = done.send(());
                    return;
                }
                None => return, // every handle is gone
            },
            f = frames_rx.recv(), if inbound_open => match f {
                Some(Inbound::Frame(h, p)) => {
                    let _ = ring.handle_frame(Instant::now(), h, &p);
                    let _ = used_tx.send(p);
                }
                Some(Inbound::Closed(why)) => { inbound_open = false; ring.handle_inbound_lost(&why); }
                None => { inbound_open = false; ring.handle_inbound_lost("reader stopped"); }
            },
            Some(why) = werr_rx.recv() => ring.handle_outbound_lost(&why),
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                ring.handle_timeout(Instant::now());
            }
        }
    }
}
