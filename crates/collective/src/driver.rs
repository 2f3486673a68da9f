//! The async driver shared by the socket transports (TCP, QUIC) and the in-process pipes between
//! their ranks ([`crate::local_link`]): it owns a [`Ring`] and moves frames between it and the
//! inbound and outbound streams — one each, or several ("stripes", as NCCL stripes sockets) when
//! one connection's per-packet work is what bounds it.
//!
//! Striping: a frame goes out on stripe `(operation + chunk) mod stripes`, which spreads the
//! chunks of a segment, and consecutive one-chunk operations (buckets), over the stripes. The
//! ring needs no order between frames (a chunk's all-gather value can only exist after this rank
//! forwarded its reduce-scatter sum; tests/ring_sim.rs reorders frames at random to check), so
//! stripes may overtake each other freely. Frames are self-describing, so the receiver reads
//! every stripe alike.
//!
//! Tokio tasks per rank — a reader per stripe (a [`FrameSource`]: decodes and bounds headers,
//! reads payloads, forwards frames) and the loop that owns the ring, shaped like quinn's
//! `ConnectionDriver`: write queued frames straight from the operations' buffers, feed inbound
//! frames, start requested operations, arm one timer, forward events to waiting callers. The reader's queue is unbounded on purpose:
//! what peers send is bounded by the operations in flight, and a bounded queue could deadlock a
//! ring whose every rank is busy writing. Payload buffers travel back to the reader, so steady
//! state allocates no payload buffers. A source may instead hand over the pieces its transport
//! already holds (QUIC's received chunks), which the ring reduces from where they lie (two small
//! lists per frame are allocated for them).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::frame::{FrameHeader, HEADER_LEN};
use crate::{OpId, ReduceOp, Ring, RingError, RingEvent, Values};

/// An operation's storage, on its way to the driver and back.
type Storage = Box<dyn Values>;

enum Request {
    Op {
        op: OpId,
        data: Storage,
        reduce: ReduceOp,
        reply: oneshot::Sender<Result<Storage, RingError>>,
    },
    /// Flush every queued frame to the socket, then stop.
    Close(oneshot::Sender<()>),
    /// Fail every pending and later operation now (a peer is known lost by other means).
    Abort(String),
}

/// One rank's handle on a formed ring (any socket transport).
pub struct RingHandle {
    requests: mpsc::UnboundedSender<Request>,
    next_op: u64,
}

/// Fails a ring's operations from another thread ([`RingHandle::aborter`]).
#[derive(Clone, Debug)]
pub struct RingAborter(mpsc::WeakUnboundedSender<Request>);

impl RingAborter {
    /// Every pending operation of the ring, and every later one, fails with `why`. Does
    /// nothing once the ring's handle is gone.
    pub fn abort(&self, why: &str) {
        if let Some(tx) = self.0.upgrade() {
            let _ = tx.send(Request::Abort(why.to_string()));
        }
    }
}

/// An all-reduce started by [`RingHandle::submit`], running while its caller does other work;
/// its result comes back in the storage `V` that was submitted.
pub struct PendingAllreduce<V: Values = Vec<f32>>(oneshot::Receiver<Result<Storage, RingError>>, std::marker::PhantomData<V>);

fn driver_gone() -> RingError {
    RingError::Usage("the ring's driver has stopped".into())
}

impl<V: Values> PendingAllreduce<V> {
    /// Blocks the calling thread until the result is in. Call it from synchronous code (a
    /// training thread), never from a task of the runtime that drives the ring.
    pub fn wait(self) -> Result<V, RingError> {
        self.0.blocking_recv().map_err(|_| driver_gone())?.map(own)
    }

    /// Waits for the result from async code (on the runtime that drives the ring, too).
    pub async fn result(self) -> Result<V, RingError> {
        self.0.await.map_err(|_| driver_gone())?.map(own)
    }
}

/// The submitted storage as its own type again.
fn own<V: Values>(storage: Storage) -> V {
    *storage.into_any().downcast::<V>().expect("the driver returns the storage it was given")
}

impl RingHandle {
    /// All-reduces `data`; every rank must call this in the same order.
    pub async fn allreduce(&mut self, data: Vec<f32>, reduce: ReduceOp) -> Result<Vec<f32>, RingError> {
        self.submit(data, reduce)?.result().await
    }

    /// Starts all-reducing `data` in place and returns at once; several may be in flight
    /// (buckets), and every rank must submit them in the same order. The driver needs its runtime
    /// to be running elsewhere (a multi-thread runtime's worker) for the operation to make
    /// progress.
    pub fn submit(&mut self, data: Vec<f32>, reduce: ReduceOp) -> Result<PendingAllreduce, RingError> {
        self.submit_values(data, reduce)
    }

    /// [`RingHandle::submit`] in storage the ring does not allocate (any [`Values`], such as
    /// pinned host memory a GPU allocator owns); the result comes back in it.
    pub fn submit_values<V: Values>(&mut self, data: V, reduce: ReduceOp) -> Result<PendingAllreduce<V>, RingError> {
        let op = OpId(self.next_op);
        self.next_op += 1;
        let (reply, rx) = oneshot::channel();
        self.requests.send(Request::Op { op, data: Box::new(data), reduce, reply }).map_err(|_| driver_gone())?;
        Ok(PendingAllreduce(rx, std::marker::PhantomData))
    }

    /// A handle that fails this ring's operations from elsewhere: the membership protocol's
    /// heartbeats see a peer lost (a stopped process keeps its connections open) long before the
    /// ring's own peer timeout, which must allow for a slow step. It does not keep the ring alive.
    pub fn aborter(&self) -> RingAborter {
        RingAborter(self.requests.downgrade())
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

/// Starts the driver tasks for `ring` over `links` (`None` for a ring of one; otherwise at least
/// one inbound and one outbound stream: as many each way, or one on a side that is a pipe) on the
/// current tokio runtime, and returns the handle callers use.
pub(crate) fn spawn<R, W>(ring: Ring, links: Option<(Vec<R>, Vec<W>)>) -> RingHandle
where
    R: FrameSource,
    W: FrameSink,
{
    let (requests, reqs_rx) = mpsc::unbounded_channel();
    tokio::spawn(drive(ring, links, reqs_rx));
    RingHandle { requests, next_op: 0 }
}

/// A frame's body as a source hands it over.
pub(crate) enum Payload {
    /// In one buffer (a spare one, given back once reduced).
    Whole(Vec<u8>),
    /// In pieces, in order, each a whole number of values.
    Pieces(Vec<bytes::Bytes>),
    /// Already in the operation's buffer: received into a chunk the ring lent out.
    Placed(crate::Loan),
}

/// What a driver shares with its reader tasks.
#[derive(Default)]
pub(crate) struct Shared {
    /// Payload buffers the driver has finished with, for reuse. A stack, not a queue: the
    /// buffer reused next is the one just reduced, still in cache.
    spare: Mutex<Vec<Vec<u8>>>,
    /// Chunks the ring lent out ([`Ring::take_lendable`]), by the header of the frame that
    /// fills each: a reader that reads that header receives the body straight into the loan.
    placements: Mutex<HashMap<PlaceKey, crate::Loan>>,
}

/// A frame's identity and length, as placements are looked up.
type PlaceKey = (u16, u32, u64, u32, u32, u32);

fn place_key(h: &FrameHeader) -> PlaceKey {
    (h.ring, h.generation, h.op, h.step, h.chunk, h.len)
}

impl Shared {
    fn take_spare(&self) -> Vec<u8> {
        self.spare.lock().expect("never poisoned").pop().unwrap_or_default()
    }

    fn give_spare(&self, b: Vec<u8>) {
        self.spare.lock().expect("never poisoned").push(b);
    }

    fn take_placement(&self, h: &FrameHeader) -> Option<crate::Loan> {
        self.placements.lock().expect("never poisoned").remove(&place_key(h))
    }
}

/// One inbound stream of frames, read by its own reader task.
pub(crate) trait FrameSource: Send + 'static {
    /// Whether the source receives into lent chunks ([`Payload::Placed`]); the driver only lends
    /// to sources that do. A method, not a constant: a link's kind can be chosen at run time
    /// ([`crate::either_link`]).
    fn places(&self) -> bool {
        false
    }

    /// The next frame, its header checked against `max` (payload bytes) before anything is
    /// allocated for it; `Ok(None)` when the stream ended cleanly between frames. After an error
    /// the source is not read again.
    fn next_frame(&mut self, max: u32, shared: &Shared) -> impl Future<Output = Result<Option<(FrameHeader, Payload)>, String>> + Send;
}

/// A byte stream (TCP, or any `AsyncRead`) as a [`FrameSource`]: header, then the payload read
/// into the chunk lent for it, or else into a spare buffer.
pub(crate) struct ByteFrames<R>(pub R);

impl<R: AsyncRead + Unpin + Send + 'static> FrameSource for ByteFrames<R> {
    fn places(&self) -> bool {
        true
    }

    async fn next_frame(&mut self, max: u32, shared: &Shared) -> Result<Option<(FrameHeader, Payload)>, String> {
        let rd = &mut self.0;
        let mut hdr = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match rd.read(&mut hdr[got..]).await.map_err(|e| e.to_string())? {
                // End of stream before a frame is a clean close; inside a header, a cut frame.
                0 if got == 0 => return Ok(None),
                0 => return Err(format!("stream ended {got} bytes into a frame header")),
                n => got += n,
            }
        }
        let h = FrameHeader::decode(&hdr, max).map_err(|e| e.to_string())?;
        // The loan's length is part of the key, so it is exactly this body.
        if let Some(mut loan) = shared.take_placement(&h) {
            rd.read_exact(loan.bytes_mut()).await.map_err(|e| e.to_string())?;
            return Ok(Some((h, Payload::Placed(loan))));
        }
        let mut payload = shared.take_spare();
        // Bounded by `max` above. Same-size chunks (the common case) reuse the buffer as is:
        // read_exact overwrites it, so there is nothing to zero.
        if payload.len() != h.len as usize {
            payload.resize(h.len as usize, 0);
        }
        rd.read_exact(&mut payload).await.map_err(|e| e.to_string())?;
        Ok(Some((h, Payload::Whole(payload))))
    }
}

enum Inbound {
    Frame(FrameHeader, Payload),
    /// A stream ended cleanly, between frames.
    Finished,
    Closed(String),
}

/// The loop that owns the ring (see the module docs).
async fn drive<R, W>(mut ring: Ring, links: Option<(Vec<R>, Vec<W>)>, mut reqs: mpsc::UnboundedReceiver<Request>)
where
    R: FrameSource,
    W: FrameSink,
{
    let places = links.as_ref().is_some_and(|(readers, _)| readers.iter().all(FrameSource::places));
    let takes_owned = links.as_ref().is_some_and(|(_, writers)| writers.iter().all(FrameSink::takes_owned));
    ring.set_lending(places);
    ring.set_staging(takes_owned);
    let (frames_tx, mut frames_rx) = mpsc::unbounded_channel::<Inbound>();
    // Payload buffers travel back to the readers, so steady state allocates nothing per frame.
    let shared: Arc<Shared> = Default::default();
    let mut outbound: Option<Vec<W>> = None;
    // Stripes still open: the link counts as closed when every stripe has ended (a stripe that
    // finishes first may have sent its last frame before the others have delivered theirs).
    let mut stripes_open = 0;
    // The readers stop with the driver (and all of them when one stripe fails): a reader left
    // running would keep its connection, and queue frames nobody reads.
    let mut readers_running = Readers(Vec::new());
    if let Some((readers, writers)) = links {
        // The two sides may differ in stripes: one side can be an in-process pipe, the other a
        // striped QUIC link.
        let (ins, outs) = (readers.len(), writers.len());
        debug_assert!(ins > 0 && outs > 0 && (ins == outs || ins == 1 || outs == 1), "stripes: {ins} in, {outs} out");
        let max = ring.config().max_payload();
        stripes_open = readers.len();
        for rd in readers {
            readers_running.0.push(tokio::spawn(read_frames(rd, max, frames_tx.clone(), shared.clone())).abort_handle());
        }
        outbound = Some(writers);
    }
    // `frames_tx` stays alive here: a ring of one has no reader, and its channel must not read
    // as closed; a reader that ends sends `Finished` or `Closed` first, so the channel never
    // reads as closed while the driver runs.
    let mut waiters: HashMap<OpId, oneshot::Sender<Result<Storage, RingError>>> = HashMap::new();
    // All-gather values received in pieces, kept to be sent on as they are (by the op, step and
    // chunk of the frame that sends them on), where the writer takes buffers without a copy.
    let mut forwards: HashMap<(u64, u32, u32), Vec<bytes::Bytes>> = HashMap::new();
    let mut inbound_open = true;
    let mut header = Vec::with_capacity(HEADER_LEN);
    let write_timeout = ring.config().peer_timeout;
    // Requests that arrived while a write was waiting, handled in order after it.
    let mut deferred: VecDeque<Request> = VecDeque::new();
    loop {
        // Frames are written straight from the operations' buffers (no copy into a frame buffer).
        // While a write waits for the socket, the reader task keeps draining the inbound stream
        // into its channel, so ranks that all write at once cannot deadlock.
        while let Some((h, _)) = ring.peek_send() {
            let Some(writers) = outbound.as_mut() else {
                ring.pop_send(); // a ring of one, or a lost link: nothing can go out
                continue;
            };
            let stripes = writers.len() as u64;
            let wr = &mut writers[(h.op.wrapping_add(h.chunk as u64) % stripes) as usize];
            header.clear();
            h.encode(&mut header);
            let written = if let Some(sum) = ring.take_staged() {
                guarded(wr.write_owned(&header, sum), write_timeout, &mut reqs, &mut deferred).await
            } else if let Some(pieces) = forwards.remove(&(h.op, h.step, h.chunk)) {
                guarded(wr.write_pieces(&header, pieces), write_timeout, &mut reqs, &mut deferred).await
            } else {
                let (_, values) = ring.peek_send().expect("peeked above");
                let payload = crate::ring::le_bytes(values);
                guarded(write_frame(wr, &header, &payload), write_timeout, &mut reqs, &mut deferred).await
            };
            match written {
                Ok(()) => {
                    ring.pop_send();
                    while let Some((h, loan)) = ring.take_lendable() {
                        shared.placements.lock().expect("never poisoned").insert(place_key(&h), loan);
                    }
                }
                Err(e) => {
                    outbound = None;
                    ring.handle_outbound_lost(&e);
                }
            }
        }
        while let Some(e) = ring.poll_event() {
            match e {
                RingEvent::OpDone(op) => {
                    if let (Some(w), Some(r)) = (waiters.remove(&op), ring.take_values(op)) {
                        let _ = w.send(Ok(r));
                    }
                }
                RingEvent::OpFailed(op, err) => {
                    shared.placements.lock().expect("never poisoned").retain(|k, _| k.2 != op.0);
                    forwards.retain(|k, _| k.0 != op.0);
                    if let Some(w) = waiters.remove(&op) {
                        let _ = w.send(Err(err));
                    }
                }
                RingEvent::PeerLost(_) => {}
            }
        }
        // A dead ring reads nothing more (the operations it kept only have frames to send), and a
        // reader stuck in a frame would keep its connection and any buffer lent to it.
        if ring.has_failed() {
            readers_running.stop();
        }
        let deadline = ring.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            // Frames first: after a long write, data that already arrived must count before the
            // silence timer is judged.
            biased;
            f = frames_rx.recv(), if inbound_open => match f {
                Some(Inbound::Frame(h, Payload::Whole(p))) => {
                    // Lent after its reader looked (the frame overtook the send it follows):
                    // take the loan back, and the frame is handled as usual.
                    if let Some(loan) = shared.take_placement(&h) {
                        ring.cancel_placement(&h, loan);
                    }
                    let _ = ring.handle_frame(Instant::now(), h, &p);
                    shared.give_spare(p);
                }
                Some(Inbound::Frame(h, Payload::Placed(loan))) => ring.finish_placement(Instant::now(), h, loan),
                Some(Inbound::Frame(h, Payload::Pieces(pieces))) => {
                    let forward = takes_owned && ring.forwards_as_received(&h);
                    let parts: Vec<&[u8]> = pieces.iter().map(|b| &b[..]).collect();
                    if ring.handle_frame_parts(Instant::now(), h, &parts).is_ok() && forward {
                        forwards.insert((h.op, h.step + 1, h.chunk), pieces);
                    }
                }
                Some(Inbound::Finished) => {
                    stripes_open = stripes_open.saturating_sub(1);
                    if stripes_open == 0 { inbound_open = false; ring.handle_inbound_lost("the previous rank closed its side"); }
                }
                // One stripe lost is the link lost: the other stripes' readers stop too.
                Some(Inbound::Closed(why)) => { inbound_open = false; readers_running.stop(); ring.handle_inbound_lost(&why); }
                // Cannot happen while this function holds `frames_tx`; handled, not assumed.
                None => { inbound_open = false; ring.handle_inbound_lost("reader stopped"); }
            },
            req = next_request(&mut reqs, &mut deferred) => match req {
                Some(Request::Op { op, data, reduce, reply }) => match ring.start_boxed(Instant::now(), op, data, reduce) {
                    Ok(()) => { waiters.insert(op, reply); }
                    Err(e) => { let _ = reply.send(Err(e)); }
                },
                Some(Request::Close(done)) => {
                    // Everything queued was written above; tell the next rank we are done, on every
                    // stripe at once (each may wait for its acknowledgements).
                    let mut closing = tokio::task::JoinSet::new();
                    for mut w in outbound.take().unwrap_or_default() {
                        closing.spawn(async move { let _ = w.shutdown().await; });
                    }
                    while closing.join_next().await.is_some() {}
                    let _ = done.send(());
                    return;
                }
                Some(Request::Abort(why)) => ring.handle_inbound_lost(&format!("aborted: {why}")),
                None => return, // every handle is gone
            },
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                ring.handle_timeout(Instant::now());
            }
        }
    }
}

/// A write to the next rank, given as long as a silent peer gets: a next rank that stops reading
/// (stalled, partitioned) must not hang us. An abort (a heartbeat miss: the next rank's host is
/// cut off, its socket buffer full) ends it at once; other requests wait their turn.
async fn guarded(
    write: impl Future<Output = std::io::Result<()>>,
    timeout: std::time::Duration,
    reqs: &mut mpsc::UnboundedReceiver<Request>,
    deferred: &mut VecDeque<Request>,
) -> Result<(), String> {
    tokio::select! {
        biased;
        r = tokio::time::timeout(timeout, write) => match r {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("the next rank accepted nothing for {timeout:?}")),
        },
        why = next_abort(reqs, deferred) => Err(format!("aborted: {why}")),
    }
}

/// One outbound stream, as the driver writes frames to it.
pub(crate) trait FrameSink: AsyncWrite + Unpin + Send + Sized + 'static {
    /// Whether [`FrameSink::write_owned`] keeps the payload it is given instead of copying it:
    /// the ring then stages its intermediate reduce-scatter sums in buffers of their own
    /// ([`Ring::set_staging`]), which such a stream sends without a copy.
    fn takes_owned(&self) -> bool {
        false
    }

    /// Writes a frame whose payload (f32 values, sent little-endian) is the stream's to keep.
    fn write_owned(&mut self, header: &[u8], payload: Vec<f32>) -> impl Future<Output = std::io::Result<()>> + Send {
        async move { write_frame(self, header, &crate::ring::le_bytes(&payload)).await }
    }

    /// Writes a frame whose payload is `pieces` in order, the stream's to keep.
    fn write_pieces(&mut self, header: &[u8], pieces: Vec<bytes::Bytes>) -> impl Future<Output = std::io::Result<()>> + Send {
        async move { write_frame(self, header, &pieces.concat()).await }
    }
}

impl FrameSink for tokio::net::tcp::OwnedWriteHalf {}

/// The next request: one deferred during a write first.
async fn next_request(reqs: &mut mpsc::UnboundedReceiver<Request>, deferred: &mut VecDeque<Request>) -> Option<Request> {
    match deferred.pop_front() {
        Some(r) => Some(r),
        None => reqs.recv().await,
    }
}

/// Waits for an abort, setting aside any other request; never returns once every handle is
/// gone (the write then ends on its own).
async fn next_abort(reqs: &mut mpsc::UnboundedReceiver<Request>, deferred: &mut VecDeque<Request>) -> String {
    loop {
        match reqs.recv().await {
            Some(Request::Abort(why)) => return why,
            Some(other) => deferred.push_back(other),
            None => std::future::pending::<()>().await,
        }
    }
}

/// Writes a header and its payload. Both go in one call where the stream takes vectored writes
/// (TCP's `writev`): a header written alone is a segment of its own on a no-delay socket, and a
/// wake-up of the reader for 32 bytes.
async fn write_frame<W: AsyncWrite + Unpin>(wr: &mut W, header: &[u8], payload: &[u8]) -> std::io::Result<()> {
    let (mut header, mut payload) = (header, payload);
    while !header.is_empty() {
        let n = wr.write_vectored(&[std::io::IoSlice::new(header), std::io::IoSlice::new(payload)]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let in_header = n.min(header.len());
        header = &header[in_header..];
        payload = &payload[n - in_header..];
    }
    wr.write_all(payload).await
}

/// The reader tasks of a driver, stopped when it ends.
struct Readers(Vec<tokio::task::AbortHandle>);

impl Readers {
    fn stop(&mut self) {
        self.0.drain(..).for_each(|r| r.abort());
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One inbound stream's reader task: frames to the driver until the stream ends (reported as
/// `Finished`) or fails (reported as `Closed`).
async fn read_frames<R: FrameSource>(mut src: R, max: u32, frames_tx: mpsc::UnboundedSender<Inbound>, shared: Arc<Shared>) {
    loop {
        let next = match src.next_frame(max, &shared).await {
            Ok(Some((h, payload))) => Inbound::Frame(h, payload),
            Ok(None) => Inbound::Finished,
            Err(why) => Inbound::Closed(why),
        };
        let last = !matches!(next, Inbound::Frame(..));
        if frames_tx.send(next).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    /// Takes at most `per_call` bytes a call, across slices when `vectored`.
    struct Trickle {
        out: Vec<u8>,
        per_call: usize,
        vectored: bool,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.per_call);
            self.out.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            if !self.vectored {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
                return self.poll_write(cx, first);
            }
            let mut left = self.per_call;
            for b in bufs {
                let n = b.len().min(left);
                self.out.extend_from_slice(&b[..n]);
                left -= n;
            }
            self.calls += 1;
            Poll::Ready(Ok(self.per_call - left))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl FrameSink for Trickle {}

    /// A next rank that accepts nothing (its host cut off, the socket buffer full).
    struct Stalled;

    impl FrameSink for Stalled {}

    impl AsyncWrite for Stalled {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<std::io::Result<usize>> {
            Poll::Pending
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Issue 19 (found by scripts/chaos_netns.sh): an abort read only between writes left a
    /// worker whose next host was cut off waiting out the whole write timeout.
    #[test]
    fn an_abort_ends_a_write_the_next_rank_never_takes() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let ring = Ring::new(crate::RingConfig { peer_timeout: std::time::Duration::from_secs(600), ..crate::RingConfig::new(0, 2) });
            let (_quiet_prev, rd) = tokio::io::duplex(64);
            let mut handle = spawn(ring, Some((vec![ByteFrames(rd)], vec![Stalled])));
            let pending = handle.submit(vec![1.0; 1024], ReduceOp::Sum).unwrap();
            // A request made while the write waits is kept, not lost, and fails with the ring.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let later = handle.submit(vec![2.0; 8], ReduceOp::Sum).unwrap();
            handle.aborter().abort("a heartbeat was missed");
            let t0 = std::time::Instant::now();
            let err = tokio::time::timeout(std::time::Duration::from_secs(5), pending.result()).await.expect("the abort ends the write");
            assert!(err.is_err() && t0.elapsed() < std::time::Duration::from_secs(5));
            let err = tokio::time::timeout(std::time::Duration::from_secs(5), later.result()).await.expect("the later request is answered");
            assert!(err.is_err(), "{err:?}");
        });
    }

    #[test]
    fn a_frame_is_written_whole_however_the_stream_takes_it() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let header: Vec<u8> = (0..HEADER_LEN as u8).collect();
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let want = [&header[..], &payload[..]].concat();
        for vectored in [false, true] {
            for per_call in [1, 5, 31, 32, 33, 100, 4096] {
                let mut w = Trickle { out: Vec::new(), per_call, vectored, calls: 0 };
                rt.block_on(write_frame(&mut w, &header, &payload)).unwrap();
                assert_eq!(w.out, want, "vectored {vectored}, {per_call} bytes a call");
                if vectored && per_call == 4096 {
                    assert_eq!(w.calls, 1, "header and payload in one call");
                }
            }
        }
    }
}
