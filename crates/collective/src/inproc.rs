//! The in-process driver: ranks are threads (or replicas inside one process), links are bounded
//! channels. For tests, and for several replicas sharing one machine without sockets.
//!
//! Each [`InprocRing`] is driven by its caller: [`InprocRing::allreduce`] starts an operation and
//! runs the driver loop (send queued frames, receive from the previous rank until the ring's
//! deadline, handle the timeout, read events) until that operation is done or failed.
//!
//! # Channel
//! One `sync_channel` per link, rank → next. Bounded so a fast sender cannot queue a whole buffer
//! ahead; a full channel makes the sender receive (and so make progress) before sending more.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Instant;

use crate::frame::{FrameHeader, HEADER_LEN};
use crate::{OpId, ReduceOp, Ring, RingConfig, RingError, RingEvent};

/// Frames a link holds before its sender must wait.
const LINK_CAPACITY: usize = 64;

/// One rank's end of an in-process ring.
pub struct InprocRing {
    ring: Ring,
    to_next: SyncSender<Vec<u8>>,
    from_prev: Receiver<Vec<u8>>,
    next_op: u64,
    buf: Vec<u8>,
    pending_out: Option<Vec<u8>>,
}

impl InprocRing {
    /// Builds a ring of `cfgs.len()` ranks; `cfgs[r]` must have `rank = r` and the same world.
    pub fn connect(cfgs: Vec<RingConfig>) -> Vec<InprocRing> {
        let n = cfgs.len();
        let (mut txs, mut rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| sync_channel(LINK_CAPACITY)).unzip();
        // link r carries r → r+1: rank r keeps txs[r]; rank r+1 keeps rxs[r].
        rxs.rotate_right(1);
        cfgs.into_iter()
            .zip(txs.drain(..).zip(rxs.drain(..)))
            .map(|(cfg, (to_next, from_prev))| InprocRing {
                ring: Ring::new(cfg),
                to_next,
                from_prev,
                next_op: 0,
                buf: Vec::new(),
                pending_out: None,
            })
            .collect()
    }

    /// All-reduces `data` with the other ranks (every rank must call it, in the same order).
    pub fn allreduce(&mut self, data: Vec<f32>, reduce: ReduceOp) -> Result<Vec<f32>, RingError> {
        let op = OpId(self.next_op);
        self.next_op += 1;
        self.ring.start(Instant::now(), op, data, reduce)?;
        let mut result = None;
        loop {
            // Send what the ring has queued; a full link means: go receive first.
            loop {
                let frame = match self.pending_out.take() {
                    Some(f) => f,
                    None => match self.ring.poll_send(&mut self.buf) {
                        Some(_) => self.buf.clone(),
                        None => break,
                    },
                };
                match self.to_next.try_send(frame) {
                    Ok(()) => {}
                    Err(TrySendError::Full(f)) => {
                        self.pending_out = Some(f);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        self.ring.handle_outbound_lost("the next rank's channel is closed");
                        break;
                    }
                }
            }
            while let Some(e) = self.ring.poll_event() {
                match e {
                    RingEvent::OpDone(id) if id == op => result = self.ring.take_result(op),
                    RingEvent::OpFailed(id, err) if id == op => return Err(err),
                    _ => {}
                }
            }
            // Done, but a frame the next rank needs may still wait for room in its channel:
            // return only once it is out, or the next rank would wait for it forever.
            if let (Some(r), None) = (&result, &self.pending_out) {
                let _ = r;
                return Ok(result.take().expect("checked"));
            }
            let wait = if self.pending_out.is_some() {
                std::time::Duration::from_micros(200) // come back soon to retry the send
            } else {
                self.ring.poll_timeout().map_or(std::time::Duration::from_secs(1), |d| d.saturating_duration_since(Instant::now()))
            };
            match self.from_prev.recv_timeout(wait) {
                Ok(bytes) => {
                    match bytes
                        .get(..HEADER_LEN)
                        .map(|h| FrameHeader::decode(h.try_into().expect("32 bytes"), self.ring.config().max_payload()))
                    {
                        Some(Ok(h)) => {
                            let _ = self.ring.handle_frame(Instant::now(), h, &bytes[HEADER_LEN..]);
                        }
                        Some(Err(e)) => self.ring.handle_inbound_lost(&e.to_string()),
                        None => self.ring.handle_inbound_lost("short frame"),
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.ring.handle_timeout(Instant::now()),
                Err(RecvTimeoutError::Disconnected) => {
                    if self.ring.poll_timeout().is_none() && self.pending_out.is_some() {
                        // Nothing is owed to us; only our own frame waits for room. Don't spin.
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                    self.ring.handle_inbound_lost("the previous rank's channel is closed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_all_reduce_over_channels() {
        let world = 4;
        let rings = InprocRing::connect((0..world).map(|r| RingConfig { chunk: 7, ..RingConfig::new(r, world) }).collect());
        let handles: Vec<_> = rings
            .into_iter()
            .enumerate()
            .map(|(r, mut ring)| {
                std::thread::spawn(move || {
                    (0..20)
                        .map(|i| {
                            ring.allreduce(vec![(r + i) as f32; 1000 + i], ReduceOp::Sum).unwrap_or_else(|e| panic!("rank {r} op {i}: {e}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for i in 0..20 {
            let want = (0..world).map(|r| (r + i) as f32).sum::<f32>();
            for rank_results in &results {
                assert_eq!(rank_results[i], vec![want; 1000 + i]);
            }
        }
    }

    #[test]
    fn a_dead_rank_makes_the_others_fail_not_hang() {
        let world = 3;
        let mut rings = InprocRing::connect(
            (0..world).map(|r| RingConfig { peer_timeout: std::time::Duration::from_millis(300), ..RingConfig::new(r, world) }).collect(),
        );
        drop(rings.pop()); // rank 2 dies before doing anything
        let handles: Vec<_> =
            rings.into_iter().map(|mut ring| std::thread::spawn(move || ring.allreduce(vec![1.0; 100], ReduceOp::Sum))).collect();
        for h in handles {
            assert!(h.join().unwrap().is_err());
        }
    }
}
