//! What a link thread and the ring's async driver hand each other: whole frames' chunks, not
//! datagrams. The driver's side ([`DirectSend`], [`DirectRecv`]) locks a queue once per frame
//! written and once per batch of chunks read, and the thread rings nobody while it is busy.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::io::AsyncWrite;

use super::bell::Bell;
use crate::chunk_frames::ChunkSource;

/// Bytes the driver may have queued for the link thread beyond what quinn-proto has taken: one
/// frame always goes in, so this only bounds how far the driver runs ahead.
pub(crate) const QUEUE_LIMIT: usize = 4 << 20;

/// The outbound link's queue: the driver's frames on their way into the QUIC stream.
#[derive(Debug)]
pub(crate) struct Outgoing {
    state: Mutex<OutState>,
    pub(crate) bell: Arc<Bell>,
}

#[derive(Debug, Default)]
pub(crate) struct OutState {
    /// Chunks in stream order.
    pub(crate) chunks: VecDeque<Bytes>,
    /// Bytes queued here or held by the thread, not yet taken by quinn-proto.
    queued: usize,
    /// The driver, waiting for room or for the close to finish.
    writer: Option<Waker>,
    /// The driver has written its last frame.
    pub(crate) closing: bool,
    /// The thread has finished the stream (acknowledged, or given up waiting).
    closed: bool,
    /// Why the link failed; every later write fails with it.
    failed: Option<String>,
    /// The driver's end is gone: the thread closes the connection and stops.
    pub(crate) abandoned: bool,
}

impl Outgoing {
    pub(crate) fn new(bell: Arc<Bell>) -> Arc<Outgoing> {
        Arc::new(Outgoing { state: Mutex::default(), bell })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().expect("never poisoned")
    }

    /// The thread: `n` more bytes went into the stream (the driver may have room again).
    pub(crate) fn taken(&self, n: usize) {
        let waker = {
            let mut s = self.lock();
            s.queued = s.queued.saturating_sub(n);
            if s.queued < QUEUE_LIMIT { s.writer.take() } else { None }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The thread: the link is lost.
    pub(crate) fn fail(&self, why: String) {
        let waker = {
            let mut s = self.lock();
            s.failed.get_or_insert(why);
            s.writer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The thread: the stream is finished.
    pub(crate) fn set_closed(&self) {
        let waker = {
            let mut s = self.lock();
            s.closed = true;
            s.writer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Stream bytes the inbound thread may have handed over and the driver's reader not yet taken:
/// beyond it the thread stops reading, and QUIC's flow control makes the previous rank wait
/// (what is queued also keeps receive arenas alive).
pub(crate) const INBOUND_LIMIT: usize = 8 << 20;

/// The inbound link's queue: stream chunks on their way to the driver's reader.
#[derive(Debug)]
pub(crate) struct Incoming {
    state: Mutex<InState>,
    pub(crate) bell: Arc<Bell>,
}

#[derive(Debug, Default)]
struct InState {
    chunks: VecDeque<Bytes>,
    /// Bytes in `chunks`.
    queued: usize,
    /// The stream ended: cleanly, or why not.
    end: Option<Result<(), String>>,
    reader: Option<Waker>,
    abandoned: bool,
}

impl Incoming {
    pub(crate) fn new(bell: Arc<Bell>) -> Arc<Incoming> {
        Arc::new(Incoming { state: Mutex::default(), bell })
    }

    fn lock(&self) -> MutexGuard<'_, InState> {
        self.state.lock().expect("never poisoned")
    }

    /// The thread: chunks read, and the stream's end if it came.
    pub(crate) fn push(&self, chunks: &mut Vec<Bytes>, end: Option<Result<(), String>>) {
        if chunks.is_empty() && end.is_none() {
            return;
        }
        let waker = {
            let mut s = self.lock();
            s.queued += chunks.iter().map(Bytes::len).sum::<usize>();
            s.chunks.extend(chunks.drain(..));
            if s.end.is_none() {
                s.end = end;
            }
            s.reader.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether the thread may read more from the stream ([`INBOUND_LIMIT`]).
    pub(crate) fn has_room(&self) -> bool {
        self.lock().queued < INBOUND_LIMIT
    }

    /// Whether the driver's reader is gone.
    pub(crate) fn abandoned(&self) -> bool {
        self.lock().abandoned
    }

    /// Whether the stream's end was already handed over.
    pub(crate) fn ended(&self) -> bool {
        self.lock().end.is_some()
    }
}

/// The driver's outbound stream over a link thread.
pub(crate) struct DirectSend {
    pub(crate) out: Arc<Outgoing>,
}

impl DirectSend {
    /// Queues `chunks` once there is room (or fails with the link).
    async fn queue(&mut self, chunks: impl IntoIterator<Item = Bytes>) -> std::io::Result<()> {
        poll_fn(|cx| self.poll_room(cx)).await?;
        self.push(chunks);
        Ok(())
    }

    /// Appends `chunks` to the queue (room was checked) and wakes the thread.
    fn push(&self, chunks: impl IntoIterator<Item = Bytes>) {
        {
            let mut s = self.out.lock();
            for c in chunks {
                s.queued += c.len();
                s.chunks.push_back(c);
            }
        }
        self.out.bell.ring();
    }

    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut s = self.out.lock();
        if let Some(why) = &s.failed {
            return Poll::Ready(Err(std::io::Error::other(why.clone())));
        }
        if s.queued < QUEUE_LIMIT {
            return Poll::Ready(Ok(()));
        }
        s.writer = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for DirectSend {
    fn drop(&mut self) {
        self.out.lock().abandoned = true;
        self.out.bell.ring();
    }
}

/// Frames go to the thread as the chunks the driver holds: a staged sum and forwarded pieces
/// without a copy (quinn-proto keeps `Bytes` until they are acknowledged).
impl crate::driver::FrameSink for DirectSend {
    fn takes_owned(&self) -> bool {
        true
    }

    async fn write_owned(&mut self, header: &[u8], payload: Vec<f32>) -> std::io::Result<()> {
        self.queue([Bytes::copy_from_slice(header), crate::quic::le_payload(payload)]).await
    }

    async fn write_pieces(&mut self, header: &[u8], pieces: Vec<Bytes>) -> std::io::Result<()> {
        self.queue(std::iter::once(Bytes::copy_from_slice(header)).chain(pieces)).await
    }
}

/// Borrowed bytes (a frame's header and the rank's own values) are copied once, into a chunk.
impl AsyncWrite for DirectSend {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.poll_room(cx))?;
        self.push([Bytes::copy_from_slice(buf)]);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Finishes the stream and waits until the thread reports it acknowledged (or gave up).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut s = self.out.lock();
        if s.closed || s.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        let first = !s.closing;
        s.closing = true;
        s.writer = Some(cx.waker().clone());
        drop(s);
        if first {
            self.out.bell.ring();
        }
        Poll::Pending
    }
}

/// The driver's inbound stream over a link thread.
pub(crate) struct DirectRecv {
    pub(crate) inc: Arc<Incoming>,
    /// Chunks taken from the queue in one lock, handed out one by one.
    local: VecDeque<Bytes>,
}

impl DirectRecv {
    pub(crate) fn new(inc: Arc<Incoming>) -> DirectRecv {
        DirectRecv { inc, local: VecDeque::new() }
    }

    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, String>> {
        if let Some(c) = self.local.pop_front() {
            return Poll::Ready(Ok(Some(c)));
        }
        let mut s = self.inc.lock();
        std::mem::swap(&mut self.local, &mut s.chunks);
        if !self.local.is_empty() {
            let was_full = s.queued >= INBOUND_LIMIT;
            s.queued = 0;
            drop(s);
            if was_full {
                // The thread stopped reading for want of room: there is room now.
                self.inc.bell.ring();
            }
            return Poll::Ready(Ok(self.local.pop_front()));
        }
        match &s.end {
            Some(Ok(())) => Poll::Ready(Ok(None)),
            Some(Err(why)) => Poll::Ready(Err(why.clone())),
            None => {
                s.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for DirectRecv {
    fn drop(&mut self) {
        self.inc.lock().abandoned = true;
        self.inc.bell.ring();
    }
}

impl ChunkSource for DirectRecv {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
        poll_fn(|cx| self.poll_chunk(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inbound thread stops reading at the limit, and the reader's next take makes room.
    #[test]
    fn a_full_inbound_queue_has_no_room_until_the_reader_takes_from_it() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let inc = Incoming::new(Arc::new(Bell::new().unwrap()));
        let mut recv = DirectRecv::new(inc.clone());
        let mut chunks: Vec<Bytes> = (0..9).map(|_| Bytes::from(vec![7u8; 1 << 20])).collect();
        inc.push(&mut chunks, None);
        assert!(!inc.has_room(), "9 MiB queued is over the limit");
        let first = rt.block_on(recv.next_chunk()).unwrap().unwrap();
        assert_eq!(first.len(), 1 << 20);
        assert!(inc.has_room(), "the reader took the queue: room again");
        // What was taken in one lock is still handed out in order, then the end.
        inc.push(&mut Vec::new(), Some(Ok(())));
        let mut rest = 0;
        while let Some(c) = rt.block_on(recv.next_chunk()).unwrap() {
            rest += c.len();
        }
        assert_eq!(rest, 8 << 20);
    }
}
