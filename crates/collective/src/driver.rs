//! The async driver shared by the socket transports (TCP, QUIC): it owns a [`Ring`] and moves
//! frames between it and one inbound and one outbound byte stream.
//!
//! Two tokio tasks per rank — a reader (decodes and bounds headers, reads payloads, forwards
//! frames) and the loop that owns the ring, shaped like quinn's `ConnectionDriver`: write queued
//! frames straight from the operations' buffers, feed inbound frames, start requested operations,
//! arm one timer, forward events to waiting callers. The reader's queue is unbounded on purpose:
//! what peers send is bounded by the operations in flight, and a bounded queue could deadlock a
//! ring whose every rank is busy writing. Payload buffers travel back to the reader, so steady
//! state allocates nothing per frame.

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

/// An all-reduce started by [`RingHandle::submit`], running while its caller does other work.
pub struct PendingAllreduce(oneshot::Receiver<Result<Vec<f32>, RingError>>);

fn driver_gone() -> RingError {
    RingError::Usage("the ring's driver has stopped".into())
}

impl PendingAllreduce {
    /// Blocks the calling thread until the result is in. Call it from synchronous code (a
    /// training thread), never from a task of the runtime that drives the ring.
    pub fn wait(self) -> Result<Vec<f32>, RingError> {
        self.0.blocking_recv().map_err(|_| driver_gone())?
    }

    /// Waits for the result from async code (on the runtime that drives the ring, too).
    pub async fn result(self) -> Result<Vec<f32>, RingError> {
        self.0.await.map_err(|_| driver_gone())?
    }
}

impl RingHandle {
    /// All-reduces `data`; every rank must call this in the same order.
    pub async fn allreduce(&mut self, data: Vec<f32>, reduce: ReduceOp) -> Result<Vec<f32>, RingError> {
        self.submit(data, reduce)?.result().await
    }

    /// Starts all-reducing `data` and returns at once; several may be in flight (buckets), and
    /// every rank must submit them in the same order. The driver needs its runtime to be running
    /// elsewhere (a multi-thread runtime's worker) for the operation to make progress.
    pub fn submit(&mut self, data: Vec<f32>, reduce: ReduceOp) -> Result<PendingAllreduce, RingError> {
        let op = OpId(self.next_op);
        self.next_op += 1;
        let (reply, rx) = oneshot::channel();
        self.requests.send(Request::Op { op, data, reduce, reply }).map_err(|_| driver_gone())?;
        Ok(PendingAllreduce(rx))
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
    // Payload buffers travel back to the reader, so steady state allocates nothing per frame. A
    // stack, not a queue: the buffer reused next is the one just reduced, still in cache.
    let used: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Default::default();
    let used_by_reader = used.clone();
    let mut outbound: Option<W> = None;
    if let Some((mut rd, wr)) = links {
        let max = ring.config().max_payload();
        tokio::spawn(async move {
            let mut hdr = [0u8; HEADER_LEN];
            loop {
                let why = match rd.read_exact(&mut hdr).await {
                    Err(e) => e.to_string(),
                    Ok(_) => match FrameHeader::decode(&hdr, max) {
                        Err(e) => e.to_string(),
                        Ok(h) => {
                            let mut payload = used_by_reader.lock().expect("never poisoned").pop().unwrap_or_default();
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
        outbound = Some(wr);
    }
    let mut waiters: HashMap<OpId, oneshot::Sender<Result<Vec<f32>, RingError>>> = HashMap::new();
    let mut inbound_open = true;
    let mut header = Vec::with_capacity(HEADER_LEN);
    let write_timeout = ring.config().peer_timeout;
    loop {
        // Frames are written straight from the operations' buffers (no copy into a frame buffer).
        // While a write waits for the socket, the reader task keeps draining the inbound stream
        // into its channel, so ranks that all write at once cannot deadlock.
        while let Some((h, values)) = ring.peek_send() {
            let Some(wr) = outbound.as_mut() else {
                ring.pop_send(); // a ring of one, or a lost link: nothing can go out
                continue;
            };
            header.clear();
            h.encode(&mut header);
            // A next rank that stops reading (stalled, partitioned) must not hang us: a write gets
            // as long as a silent peer does.
            let write = async {
                wr.write_all(&header).await?;
                wr.write_all(&crate::ring::le_bytes(values)).await
            };
            let written = match tokio::time::timeout(write_timeout, write).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("the next rank accepted nothing for {write_timeout:?}")),
            };
            match written {
                Ok(()) => ring.pop_send(),
                Err(e) => {
                    outbound = None;
                    ring.handle_outbound_lost(&e);
                }
            }
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
            // Frames first: after a long write, data that already arrived must count before the
            // silence timer is judged.
            biased;
            f = frames_rx.recv(), if inbound_open => match f {
                Some(Inbound::Frame(h, p)) => {
                    let _ = ring.handle_frame(Instant::now(), h, &p);
                    used.lock().expect("never poisoned").push(p);
                }
                Some(Inbound::Closed(why)) => { inbound_open = false; ring.handle_inbound_lost(&why); }
                None => { inbound_open = false; ring.handle_inbound_lost("reader stopped"); }
            },
            req = reqs.recv() => match req {
                Some(Request::Op { op, data, reduce, reply }) => match ring.start(Instant::now(), op, data, reduce) {
                    Ok(()) => { waiters.insert(op, reply); }
                    Err(e) => { let _ = reply.send(Err(e)); }
                },
                Some(Request::Close(done)) => {
                    // Everything queued was written above; tell the next rank we are done.
                    if let Some(mut w) = outbound.take() {
                        let _ = w.shutdown().await;
                    }
                    let _ = done.send(());
                    return;
                }
                None => return, // every handle is gone
            },
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                ring.handle_timeout(Instant::now());
            }
        }
    }
}
