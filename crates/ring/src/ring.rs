//! [`Ring`]: one rank's side of every all-reduce in flight on one ring, as a state machine.
//!
//! It does no I/O and reads no clock (quinn-proto's pattern). The driver calls, in a loop:
//! 1. [`Ring::handle_frame`] (or [`Ring::handle_frame_parts`]) for each frame that arrived from
//!    the previous rank;
//! 2. [`Ring::handle_timeout`] when the deadline from [`Ring::poll_timeout`] has passed;
//! 3. [`Ring::poll_send`] until `None`, writing each frame to the next rank, in any order (a
//!    chunk's all-gather value can only exist after this rank forwarded its reduce-scatter sum,
//!    so no frame can overtake one it depends on; a driver may stripe frames over streams);
//! 4. [`Ring::poll_event`] until `None`, completing operations ([`Ring::take_result`]).
//!
//! A driver whose reader can receive a frame's body straight into memory may also take chunks on
//! loan ([`Ring::set_lending`], [`Ring::take_lendable`]): all-gather values, which are plain
//! copies, read into the operation's buffer instead of copied there (see `op_buffer`).
//!
//! A driver whose writer takes buffers it is given without copying them (quinn's
//! `write_chunks`) may have the ring stage sums in buffers of their own ([`Ring::set_staging`]):
//! an intermediate reduce-scatter step computes `mine + received` into a new buffer that goes
//! straight to the writer ([`Ring::take_staged`]), and the operation's own copy of that partial
//! sum is never written (no rank reads it again; its all-gather value overwrites it). One pass
//! instead of adding in place and then copying into the transport.
//!
//! [`Ring::start`] begins an operation at any time; several may be in flight, matched by [`OpId`].
//!
//! # Failure
//! While any operation is pending, the previous rank owes us data. If nothing arrives from it for
//! `peer_timeout`, every pending operation fails with [`RingError::PeerTimeout`] and the ring is
//! dead: a new one must be formed (at a new generation). [`Ring::handle_inbound_lost`] and
//! [`Ring::handle_outbound_lost`] do the same at once when the driver knows a stream is gone.
//! Time spent with nothing pending is not counted. An operation that has received everything but
//! still has frames to send survives the loss of the *inbound* stream: a previous rank that
//! finished and exited has sent all it owed.
//!
//! # Memory
//! Each operation owns its buffer; frames are reduced into it as they arrive. Frames for an
//! operation this rank has not started yet are held back, at most [`RingConfig::max_early_ops`]
//! operations' worth — a peer cannot make us buffer without bound.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::frame::{FrameHeader, FrameKind, HEADER_LEN};
use crate::op_buffer::{Loan, OpBuffer, Values};
use crate::schedule::{Segments, ring_neighbors};

/// A position in the ring (0 … world−1).
pub type Rank = usize;

/// Identifies one all-reduce; every rank must use the same id for the same operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// How values combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum over ranks.
    Sum,
    /// Mean over ranks (the sum, scaled by 1/n once by the segment's owner, so still bitwise
    /// identical everywhere).
    Mean,
}

/// Fixed parameters of a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// This rank's position.
    pub rank: Rank,
    /// Ranks in the ring.
    pub world: usize,
    /// Largest chunk in values.
    pub chunk: usize,
    /// Generation; frames of other generations are dropped.
    pub generation: u32,
    /// Which ring (0: the whole world; others: sub-rings), carried in every frame.
    pub ring_id: u16,
    /// Silence from the previous rank, while it owes data, after which pending operations fail.
    pub peer_timeout: Duration,
    /// Operations whose frames may arrive before this rank starts them.
    pub max_early_ops: usize,
    /// Bytes of such early frames held at most, over all operations.
    pub max_early_bytes: usize,
}

impl RingConfig {
    /// Defaults: 256 Ki-value (1 MiB) chunks, 10 s peer timeout, 64 early operations.
    pub fn new(rank: Rank, world: usize) -> Self {
        RingConfig {
            rank,
            world,
            chunk: 256 * 1024,
            generation: 0,
            ring_id: 0,
            peer_timeout: Duration::from_secs(10),
            max_early_ops: 64,
            max_early_bytes: 512 << 20,
        }
    }
    /// The largest `chunk`: a frame's length field (u32 bytes) must hold it.
    pub const MAX_CHUNK: usize = u32::MAX as usize / 4;

    /// Largest payload in bytes a frame of this ring can carry.
    pub fn max_payload(&self) -> u32 {
        (self.chunk.min(Self::MAX_CHUNK) * 4) as u32
    }
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The previous rank sent nothing for too long while it owed data.
    #[error("rank {peer} sent nothing for {after:?} while it owed data (lost or stalled)")]
    PeerTimeout {
        /// The silent rank.
        peer: Rank,
        /// The timeout.
        after: Duration,
    },
    /// The driver reported the link gone.
    #[error("link to rank {peer} is down: {why}")]
    LinkDown {
        /// The peer.
        peer: Rank,
        /// What the transport said.
        why: String,
    },
    /// A peer sent a frame that cannot be part of the protocol.
    #[error("protocol violation from rank {peer}: {why}")]
    Protocol {
        /// The peer.
        peer: Rank,
        /// What was wrong.
        why: String,
    },
    /// The caller misused the API (duplicate op id, ring already failed).
    #[error("{0}")]
    Usage(String),
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingEvent {
    /// The operation finished; [`Ring::take_result`] has its buffer.
    OpDone(OpId),
    /// The operation failed.
    OpFailed(OpId, RingError),
    /// A peer is considered lost (emitted once, before the failures it caused).
    PeerLost(Rank),
}

struct Op {
    seg: Segments,
    data: OpBuffer,
    reduce: ReduceOp,
    received: usize,
    expected: usize,
    seen: std::collections::HashSet<(usize, usize)>, // (step, chunk) already applied, or lent
    /// Chunks lent out to be received into (step, chunk, values): nothing touches them meanwhile.
    lent: Vec<(usize, usize, std::ops::Range<usize>)>,
}

impl Op {
    fn lent_overlaps(&self, r: &std::ops::Range<usize>) -> bool {
        self.lent.iter().any(|(_, _, l)| l.start < r.end && r.start < l.end)
    }
}

impl Op {
    /// Still waiting for frames from the previous rank (not merely for its own sends to go out).
    fn awaiting(&self) -> bool {
        self.received < self.expected
    }
}

/// One rank's state for all operations on one ring.
pub struct Ring {
    cfg: RingConfig,
    ops: BTreeMap<u64, Op>,
    early: HashMap<u64, Vec<(FrameHeader, Vec<u8>)>>,
    early_bytes: usize,
    sendq: VecDeque<(u64, usize, usize)>, // (op, step, chunk) in send order
    /// Frames this rank will receive as plain copies, into ranges it has finished sending:
    /// (op, step, chunk), offered by [`Ring::take_lendable`].
    lendable: VecDeque<(u64, usize, usize)>,
    /// Whether to offer chunks at all ([`Ring::set_lending`]).
    lending: bool,
    /// Payloads of queued sends computed into buffers of their own, by (op, step, chunk)
    /// ([`Ring::set_staging`]).
    staged: HashMap<(u64, usize, usize), Vec<f32>>,
    /// Whether to stage sums ([`Ring::set_staging`]).
    staging: bool,
    events: VecDeque<RingEvent>,
    done: HashMap<u64, Box<dyn Values>>,
    last_heard: Option<Instant>,
    failed: Option<RingError>,
}

impl Ring {
    /// A ring rank with nothing in flight.
    pub fn new(cfg: RingConfig) -> Self {
        assert!(cfg.world >= 1 && cfg.rank < cfg.world && (1..=RingConfig::MAX_CHUNK).contains(&cfg.chunk), "ring config {cfg:?}");
        Ring {
            cfg,
            ops: BTreeMap::new(),
            early: HashMap::new(),
            early_bytes: 0,
            sendq: VecDeque::new(),
            lendable: VecDeque::new(),
            lending: false,
            staged: HashMap::new(),
            staging: false,
            events: VecDeque::new(),
            done: HashMap::new(),
            last_heard: None,
            failed: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RingConfig {
        &self.cfg
    }

    /// `(prev, next)` positions.
    pub fn neighbors(&self) -> (Rank, Rank) {
        ring_neighbors(self.cfg.rank, self.cfg.world)
    }

    /// Whether the ring has failed (a new one must be formed).
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Operations started and not yet finished or failed.
    pub fn pending(&self) -> usize {
        self.ops.len()
    }

    /// Starts all-reducing `data` as operation `op`, in place; [`Ring::take_result`] gives it back.
    pub fn start(&mut self, now: Instant, op: OpId, data: Vec<f32>, reduce: ReduceOp) -> Result<(), RingError> {
        self.start_boxed(now, op, Box::new(data), reduce)
    }

    /// [`Ring::start`] in storage the ring does not allocate (any [`Values`], such as pinned host
    /// memory a GPU allocator owns); [`Ring::take_values`] gives it back.
    pub fn start_values<V: Values>(&mut self, now: Instant, op: OpId, data: V, reduce: ReduceOp) -> Result<(), RingError> {
        self.start_boxed(now, op, Box::new(data), reduce)
    }

    /// [`Ring::start`] with storage whose type is erased already (a driver's queue holds these).
    pub fn start_boxed(&mut self, now: Instant, op: OpId, data: Box<dyn Values>, reduce: ReduceOp) -> Result<(), RingError> {
        if let Some(e) = &self.failed {
            return Err(RingError::Usage(format!("ring generation {} has failed ({e}); form a new one", self.cfg.generation)));
        }
        if self.ops.contains_key(&op.0) || self.done.contains_key(&op.0) {
            return Err(RingError::Usage(format!("operation {} is already in flight", op.0)));
        }
        let seg = Segments { len: data.values_len(), world: self.cfg.world, chunk: self.cfg.chunk };
        if self.cfg.world == 1 {
            self.done.insert(op.0, data);
            self.events.push_back(RingEvent::OpDone(op));
            return Ok(());
        }
        if !self.ops.values().any(Op::awaiting) {
            self.last_heard = Some(now); // time with nothing owed does not count as silence
        }
        let r = self.cfg.rank;
        let expected = seg.expected_receives(r);
        for k in 0..seg.chunks(seg.send_segment(r, 0)) {
            self.sendq.push_back((op.0, 0, k));
        }
        let data = OpBuffer::new(data);
        self.ops.insert(op.0, Op { seg, data, reduce, received: 0, expected, seen: Default::default(), lent: Vec::new() });
        let early = self.early.remove(&op.0).unwrap_or_default();
        self.early_bytes -= early.iter().map(|(_, p)| p.len()).sum::<usize>();
        for (h, payload) in early {
            self.apply(h, &[&payload])?;
        }
        if expected == 0 {
            self.finish(op.0);
        }
        Ok(())
    }

    /// Feeds one frame from the previous rank. `payload` is the frame's body (`header.len` bytes).
    /// A malformed frame fails every pending operation (the stream can no longer be trusted) and
    /// is returned as the error.
    pub fn handle_frame(&mut self, now: Instant, header: FrameHeader, payload: &[u8]) -> Result<(), RingError> {
        self.handle_frame_parts(now, header, &[payload])
    }

    /// [`Ring::handle_frame`] for a body that arrived in pieces, in order (QUIC hands a stream's
    /// data out as the datagrams carried it): reducing from the pieces where they lie saves
    /// copying them into one buffer first. Pieces may be cut anywhere, but if any is cut inside a
    /// value the whole body is joined first (a copy), so transports should cut on whole values.
    pub fn handle_frame_parts(&mut self, now: Instant, header: FrameHeader, parts: &[&[u8]]) -> Result<(), RingError> {
        if self.failed.is_some() {
            return Ok(()); // already dead: nothing more to learn
        }
        let (prev, _) = self.neighbors();
        if header.generation != self.cfg.generation || header.ring != self.cfg.ring_id {
            return Ok(()); // a stale frame from an older generation: drop it
        }
        self.last_heard = Some(now);
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if header.kind != FrameKind::Data || len != header.len as usize || !len.is_multiple_of(4) {
            return self.violation(prev, format!("frame body of {len} bytes for a header saying {}", header.len));
        }
        if self.ops.contains_key(&header.op) {
            return if parts.iter().all(|p| p.len().is_multiple_of(4)) {
                self.apply(header, parts)
            } else {
                self.apply(header, &[&parts.concat()])
            };
        }
        if self.done.contains_key(&header.op) {
            return self.violation(prev, format!("frame for finished operation {}", header.op));
        }
        if !self.early.contains_key(&header.op) && self.early.len() >= self.cfg.max_early_ops {
            return self.violation(prev, format!("frames for more than {} operations this rank has not started", self.cfg.max_early_ops));
        }
        if self.early_bytes + len > self.cfg.max_early_bytes {
            return self.violation(
                prev,
                format!("more than {} bytes of frames for operations this rank has not started", self.cfg.max_early_bytes),
            );
        }
        self.early_bytes += len;
        self.early.entry(header.op).or_default().push((header, parts.concat()));
        Ok(())
    }

    /// Reduces (or copies) one chunk, given as little-endian f32 bytes in pieces of whole values,
    /// into its operation.
    fn apply(&mut self, h: FrameHeader, parts: &[&[u8]]) -> Result<(), RingError> {
        debug_assert!(parts.iter().all(|p| p.len().is_multiple_of(4)), "pieces cut inside a value");
        let values = parts.iter().map(|p| p.len() / 4).sum::<usize>();
        let (prev, _) = self.neighbors();
        let r = self.cfg.rank;
        let n = self.cfg.world;
        let (step, chunk) = (h.step as usize, h.chunk as usize);
        let checked = {
            let Some(op) = self.ops.get(&h.op) else {
                return self.violation(prev, format!("frame for operation {} after it completed", h.op));
            };
            let segment = if step < op.seg.steps() { op.seg.recv_segment(r, step) } else { 0 };
            if step >= op.seg.steps() {
                Err(format!("step {step} of operation {} beyond its {} steps", h.op, op.seg.steps()))
            } else if chunk >= op.seg.chunks(segment) {
                Err(format!("chunk {chunk} of step {step} beyond segment {segment}'s {} chunks", op.seg.chunks(segment)))
            } else if op.seen.contains(&(step, chunk)) {
                Err(format!("duplicate frame for step {step} chunk {chunk} of operation {}", h.op))
            } else if op.lent_overlaps(&op.seg.chunk_range(segment, chunk)) {
                Err(format!("frame for step {step} chunk {chunk} of operation {} onto a chunk still being received", h.op))
            } else if op.seg.chunk_range(segment, chunk).len() != values {
                Err(format!("chunk of {values} values where {} belong", op.seg.chunk_range(segment, chunk).len()))
            } else {
                Ok(op.seg.chunk_range(segment, chunk))
            }
        };
        let range = match checked {
            Ok(r) => r,
            Err(why) => return self.violation(prev, why),
        };
        let op = self.ops.get_mut(&h.op).expect("checked above");
        if self.staging && step + 2 < n {
            // An intermediate reduce-scatter sum only goes on to the next rank: staged, it is
            // written once, into the buffer the transport takes, and this rank's partial sum
            // stays as it was.
            // SAFETY: no loan overlaps `range` (checked above).
            let mine = unsafe { op.data.range(range) };
            self.staged.insert((h.op, step + 1, chunk), sum_of(mine, parts));
        } else {
            // SAFETY: no loan overlaps `range` (checked above).
            let dst = unsafe { op.data.range_mut(range) };
            take_into(dst, parts, step < n - 1);
            if step == n - 2 && op.reduce == ReduceOp::Mean {
                let inv = 1.0 / n as f32;
                dst.iter_mut().for_each(|d| *d *= inv);
            }
        }
        op.received += 1;
        op.seen.insert((step, chunk));
        if step + 1 < op.seg.steps() {
            self.sendq.push_back((h.op, step + 1, chunk));
        }
        if op.received == op.expected {
            self.finish(h.op);
        }
        Ok(())
    }

    /// Moves a completed operation's buffer to the results once its last frame has been queued.
    fn finish(&mut self, op: u64) {
        // Frames still queued for sending read from the op's buffer; keep it until they are out.
        if self.sendq.iter().any(|&(o, _, _)| o == op) {
            return;
        }
        if let Some(o) = self.ops.remove(&op) {
            self.lendable.retain(|&(l, _, _)| l != op);
            match o.data.into_values() {
                Ok(v) => {
                    self.done.insert(op, v);
                    self.events.push_back(RingEvent::OpDone(OpId(op)));
                }
                // Every frame arrived, so every loan came back; a driver still holding one broke
                // the protocol, and the result cannot be handed out while it can write.
                Err(_) => self.events.push_back(RingEvent::OpFailed(
                    OpId(op),
                    RingError::Usage(format!("operation {op} finished with a chunk still lent out")),
                )),
            }
        }
    }

    fn violation(&mut self, peer: Rank, why: String) -> Result<(), RingError> {
        let e = RingError::Protocol { peer, why };
        self.fail(e.clone(), true);
        Err(e)
    }

    /// Marks the ring dead and fails the operations that can no longer finish: all of them when
    /// `all`, else those still waiting for frames. Operations that have received everything and
    /// only have frames left to send keep going — the next rank still needs those frames, and a
    /// previous rank that finished and closed its side is not a failure for them.
    fn fail(&mut self, e: RingError, all: bool) {
        if self.failed.is_none() {
            if let RingError::PeerTimeout { peer, .. } | RingError::LinkDown { peer, .. } = &e {
                self.events.push_back(RingEvent::PeerLost(*peer));
            }
            self.failed = Some(e.clone());
            self.early.clear();
            self.early_bytes = 0;
        }
        let doomed: Vec<u64> = self.ops.iter().filter(|(_, op)| all || op.awaiting()).map(|(&id, _)| id).collect();
        for id in doomed {
            self.ops.remove(&id);
            self.events.push_back(RingEvent::OpFailed(OpId(id), e.clone()));
        }
        self.sendq.retain(|(op, _, _)| self.ops.contains_key(op));
        self.lendable.retain(|(op, _, _)| self.ops.contains_key(op));
        self.staged.retain(|(op, _, _), _| self.ops.contains_key(op));
    }

    /// The transport lost the stream *from* the previous rank (it closed, crashed, or sent
    /// garbage): operations still waiting for its frames fail now.
    pub fn handle_inbound_lost(&mut self, why: &str) {
        let (prev, _) = self.neighbors();
        self.fail(RingError::LinkDown { peer: prev, why: why.to_string() }, false);
    }

    /// The transport lost the stream *to* the next rank: nothing pending can finish.
    pub fn handle_outbound_lost(&mut self, why: &str) {
        let (_, next) = self.neighbors();
        self.fail(RingError::LinkDown { peer: next, why: why.to_string() }, true);
    }

    /// Call when `now` has reached [`Ring::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.poll_timeout()
            && now >= deadline
        {
            let (prev, _) = self.neighbors();
            self.fail(RingError::PeerTimeout { peer: prev, after: self.cfg.peer_timeout }, false);
        }
    }

    /// When the driver should call [`Ring::handle_timeout`] next: `None` while nothing is owed.
    /// Changes after `start`, `handle_frame` and failures.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.ops.values().any(Op::awaiting) {
            return None;
        }
        self.last_heard.map(|t| t + self.cfg.peer_timeout)
    }

    /// Writes the next frame for the next rank into `out` (cleared first); returns the rank to send
    /// it to, or `None` when nothing is queued. Frames may be delivered in any order (see the
    /// module docs).
    pub fn poll_send(&mut self, out: &mut Vec<u8>) -> Option<Rank> {
        let (header, payload) = self.peek_send()?;
        out.clear();
        out.reserve(HEADER_LEN + payload.len() * 4);
        header.encode(out);
        extend_le_bytes(out, payload);
        self.pop_send();
        Some(self.neighbors().1)
    }

    /// The next frame for the next rank without copying it: its header and the values of its
    /// payload, borrowed from the operation's buffer or from its staged sum
    /// ([`Ring::set_staging`]). A driver that can write straight from this borrow (the socket
    /// drivers) saves a copy of every byte; it must then call [`Ring::pop_send`] before anything
    /// else touches the ring (it may move a staged sum out first: [`Ring::take_staged`]).
    pub fn peek_send(&self) -> Option<(FrameHeader, &[f32])> {
        let &(op_id, step, chunk) = self.sendq.front()?;
        let op = self.ops.get(&op_id).expect("queued sends belong to pending operations (failures drop theirs)");
        let range = op.seg.chunk_range(op.seg.send_segment(self.cfg.rank, step), chunk);
        let header = self.header(op_id, step, chunk, range.len());
        if let Some(sum) = self.staged.get(&(op_id, step, chunk)) {
            return Some((header, sum));
        }
        // SAFETY: a queued send's range is never lent (`take_lendable` skips ranges with queued
        // sends, and while a range is lent nothing queues a send of it).
        Some((header, unsafe { op.data.range(range) }))
    }

    /// Moves out the staged sum that is the payload of the frame [`Ring::peek_send`] shows (`None`
    /// when that frame is not staged); [`Ring::pop_send`] follows once it is written.
    pub fn take_staged(&mut self) -> Option<Vec<f32>> {
        let key = *self.sendq.front()?;
        self.staged.remove(&key)
    }

    /// Whether `h`, handled now, is an all-gather value this rank sends on exactly as it arrived
    /// (an operation in flight, not its last step): a driver that still holds the frame's bytes
    /// may send those when [`Ring::peek_send`] shows that frame, instead of the operation's copy.
    pub fn forwards_as_received(&self, h: &FrameHeader) -> bool {
        let (n, step) = (self.cfg.world, h.step as usize);
        self.ops.contains_key(&h.op) && step + 1 >= n && step + 1 < 2 * (n - 1)
    }

    /// Stage intermediate reduce-scatter sums in buffers of their own from now on (see the module
    /// docs); off by default, for drivers that copy what they send anyway.
    pub fn set_staging(&mut self, on: bool) {
        self.staging = on;
    }

    /// The header of this ring's frame for chunk `chunk` of step `step` of operation `op`,
    /// carrying `values` values.
    fn header(&self, op: u64, step: usize, chunk: usize, values: usize) -> FrameHeader {
        FrameHeader {
            kind: FrameKind::Data,
            ring: self.cfg.ring_id,
            generation: self.cfg.generation,
            step: step as u32,
            op,
            chunk: chunk as u32,
            len: (values * 4) as u32,
        }
    }

    /// Marks the frame returned by [`Ring::peek_send`] as sent.
    pub fn pop_send(&mut self) {
        let Some((op_id, step, chunk)) = self.sendq.pop_front() else { return };
        self.staged.remove(&(op_id, step, chunk));
        let r = self.cfg.rank;
        if self.lending
            && let Some(op) = self.ops.get(&op_id)
        {
            // This rank reads and writes the range just sent only once more: when its all-gather
            // value arrives, as a plain copy. Until then it may be lent out for that.
            let segment = op.seg.send_segment(r, step);
            let n = self.cfg.world;
            if let Some(later) = (step + 1..op.seg.steps()).find(|&s| s >= n - 1 && op.seg.recv_segment(r, s) == segment) {
                self.lendable.push_back((op_id, later, chunk));
            }
        }
        if self.ops.get(&op_id).is_some_and(|op| op.received == op.expected) {
            self.finish(op_id);
        }
    }

    /// Offer chunks to lend ([`Ring::take_lendable`]) from now on; off by default, for drivers
    /// that never ask.
    pub fn set_lending(&mut self, on: bool) {
        self.lending = on;
        if !on {
            self.lendable.clear();
        }
    }

    /// A frame this rank will receive as a plain copy into a range nothing else touches until
    /// then (an all-gather value, its range already sent on), lent out: a driver can have it read
    /// straight into the operation's buffer, then hand it back with [`Ring::finish_placement`]
    /// (or [`Ring::cancel_placement`] if the frame came another way). Returns the header the
    /// frame will have. Offered after [`Ring::pop_send`] once [`Ring::set_lending`] is on;
    /// nothing on big-endian machines (the wire is little-endian).
    pub fn take_lendable(&mut self) -> Option<(FrameHeader, Loan)> {
        if cfg!(target_endian = "big") || self.failed.is_some() {
            self.lendable.clear();
            return None;
        }
        while let Some((op_id, step, chunk)) = self.lendable.pop_front() {
            let Some(op) = self.ops.get(&op_id) else { continue };
            let range = op.seg.chunk_range(op.seg.recv_segment(self.cfg.rank, step), chunk);
            let sending = self.sendq.iter().filter(|&&(o, _, _)| o == op_id).any(|&(_, s, k)| {
                let q = op.seg.chunk_range(op.seg.send_segment(self.cfg.rank, s), k);
                q.start < range.end && range.start < q.end
            });
            if range.is_empty() || sending || op.seen.contains(&(step, chunk)) || op.lent_overlaps(&range) {
                continue;
            }
            let op = self.ops.get_mut(&op_id).expect("looked up above");
            // SAFETY: no queued send reads `range`, no loan overlaps it, and the frame that would
            // write it is now `seen`, so the ring touches it again only after the loan is back
            // (`finish_placement` / `cancel_placement`), or never (the operation fails).
            let loan = unsafe { op.data.lend(range.clone()) };
            op.seen.insert((step, chunk));
            op.lent.push((step, chunk, range.clone()));
            return Some((self.header(op_id, step, chunk, range.len()), loan));
        }
        None
    }

    /// Where `loan`, handed back for `header`, was lent: `None` if it was not lent for that frame
    /// (a caller mixing loans up), so the range stays lent and untouched.
    fn lent_index(&self, header: &FrameHeader, loan: &Loan) -> Option<usize> {
        let op = self.ops.get(&header.op)?;
        let (step, chunk) = (header.step as usize, header.chunk as usize);
        op.lent.iter().position(|(s, k, r)| (*s, *k) == (step, chunk) && op.data.lent_as(loan, r.clone()))
    }

    /// The frame `header` (from [`Ring::take_lendable`]) was received into `loan`.
    pub fn finish_placement(&mut self, now: Instant, header: FrameHeader, loan: Loan) {
        let found = self.lent_index(&header, &loan);
        drop(loan); // the range is the ring's again
        let Some(i) = found else { return }; // failed meanwhile, or not this frame's loan
        let (step, chunk) = (header.step as usize, header.chunk as usize);
        let op = self.ops.get_mut(&header.op).expect("found above");
        op.lent.swap_remove(i);
        self.last_heard = Some(now);
        op.received += 1;
        if step + 1 < op.seg.steps() {
            self.sendq.push_back((header.op, step + 1, chunk));
        }
        if op.received == op.expected {
            self.finish(header.op);
        }
    }

    /// The frame `header` was not received into `loan` (it arrived another way, or the driver
    /// gave up): the range is the ring's again and the frame is expected as usual.
    pub fn cancel_placement(&mut self, header: &FrameHeader, loan: Loan) {
        let found = self.lent_index(header, &loan);
        drop(loan);
        if let Some(i) = found {
            let op = self.ops.get_mut(&header.op).expect("found above");
            op.lent.swap_remove(i);
            op.seen.remove(&(header.step as usize, header.chunk as usize));
        }
    }

    /// Next event, if any.
    pub fn poll_event(&mut self) -> Option<RingEvent> {
        self.events.pop_front()
    }

    /// The storage of a finished operation, holding its result (once).
    pub fn take_values(&mut self, op: OpId) -> Option<Box<dyn Values>> {
        self.done.remove(&op.0)
    }

    /// The result of a finished operation started with a `Vec<f32>` (once).
    ///
    /// # Panics
    /// If the operation was started with another kind of storage (use [`Ring::take_values`]).
    pub fn take_result(&mut self, op: OpId) -> Option<Vec<f32>> {
        let v = self.take_values(op)?;
        Some(*v.into_any().downcast::<Vec<f32>>().expect("take_result is for operations started with a Vec<f32>"))
    }
}

/// `values` as little-endian bytes: the values' own memory on little-endian machines, a copy
/// elsewhere.
pub fn le_bytes(values: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: as in `extend_le_bytes`.
        std::borrow::Cow::Borrowed(unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) })
    }
    #[cfg(not(target_endian = "little"))]
    {
        std::borrow::Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// `mine + received`, `received` being little-endian f32s in pieces of whole values covering
/// `mine` in order.
fn sum_of(mine: &[f32], received: &[&[u8]]) -> Vec<f32> {
    let mut sum = Vec::with_capacity(mine.len());
    let mut at = 0;
    for part in received {
        let piece = &mine[at..at + part.len() / 4];
        at += piece.len();
        sum.extend(piece.iter().zip(part.chunks_exact(4)).map(|(m, b)| m + f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    }
    sum
}

/// Adds (`add`) or copies the little-endian f32s in `received`, pieces of whole values covering
/// `dst` in order, into `dst`.
fn take_into(dst: &mut [f32], received: &[&[u8]], add: bool) {
    let mut at = 0;
    for part in received {
        let piece = &mut dst[at..at + part.len() / 4];
        at += piece.len();
        let incoming = part.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if add {
            piece.iter_mut().zip(incoming).for_each(|(d, v)| *d += v);
        } else {
            piece.iter_mut().zip(incoming).for_each(|(d, v)| *d = v);
        }
    }
}

/// Appends `values` to `out` as little-endian bytes: one memcpy on little-endian machines.
fn extend_le_bytes(out: &mut Vec<u8>, values: &[f32]) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32 has no padding and any byte pattern is a valid u8; the slice covers exactly
        // the values' memory, and on a little-endian machine that memory is the wire format.
        let bytes = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) };
        out.extend_from_slice(bytes);
    }
    #[cfg(not(target_endian = "little"))]
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}
