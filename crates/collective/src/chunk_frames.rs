//! Frames from a stream that hands its data out as owned chunks (quinn's `read_chunk`): the
//! 32-byte header is copied out, and large chunks of the payload are kept as they are, cut on
//! whole f32 values, for the ring to reduce from ([`crate::Ring::handle_frame_parts`]).
//!
//! Why: reading a QUIC stream into a buffer of our own copies every byte once more after quinn
//! has already copied and decrypted it — 5 % of a loopback all-reduce's CPU, measured with perf.
//!
//! Memory: a kept chunk is a slice of the buffer its datagram was received into, and keeps all
//! of that buffer alive. A peer sending a few payload bytes per datagram could make kept slices
//! pin many times the frame's size, so only chunks of at least [`MIN_KEPT`] bytes are kept
//! (against quinn's buffers of at most 64 KiB, at most 4× the payload; the direct driver's
//! 128 KiB arenas, at most 8×); smaller ones, and a
//! value cut between two chunks, are gathered by copying, as a plain read would. So frames are
//! reduced in place where datagrams are large (loopback, where MTU discovery goes to 65000
//! bytes); on Ethernet-MTU paths the chunks are small and are gathered.
//!
//! Bounds: the header is checked against the negotiated maximum before the body is read; a frame
//! has at most `2·len / MIN_KEPT + 1` pieces.

use std::future::Future;

use bytes::{Buf, Bytes};

use crate::driver::{FrameSource, Payload, Shared};
use crate::frame::{FrameHeader, HEADER_LEN};

/// The smallest chunk kept as it is rather than copied (see the module docs).
pub(crate) const MIN_KEPT: usize = 16 << 10;

/// A stream read as a sequence of owned chunks.
pub(crate) trait ChunkSource: Send + 'static {
    /// The stream's next bytes, in order; `Ok(None)` at its end.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, String>> + Send;
}

/// A [`ChunkSource`] read as frames.
pub(crate) struct ChunkFrames<S> {
    src: S,
    /// What is left of the chunk being read.
    cur: Bytes,
}

impl<S: ChunkSource> ChunkFrames<S> {
    pub(crate) fn new(src: S) -> Self {
        ChunkFrames { src, cur: Bytes::new() }
    }

    /// Makes `cur` non-empty; false at the end of the stream.
    async fn fill(&mut self) -> Result<bool, String> {
        while self.cur.is_empty() {
            match self.src.next_chunk().await? {
                Some(b) => self.cur = b,
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

impl<S: ChunkSource> FrameSource for ChunkFrames<S> {
    async fn next_frame(&mut self, max: u32, _shared: &Shared) -> Result<Option<(FrameHeader, Payload)>, String> {
        let mut hdr = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            if !self.fill().await? {
                // End of stream before a frame is a clean close; inside one, a cut frame.
                return if got == 0 { Ok(None) } else { Err(format!("stream ended {got} bytes into a frame header")) };
            }
            let n = (HEADER_LEN - got).min(self.cur.len());
            hdr[got..got + n].copy_from_slice(&self.cur[..n]);
            self.cur.advance(n);
            got += n;
        }
        let h = FrameHeader::decode(&hdr, max).map_err(|e| e.to_string())?;
        let mut pieces = Vec::new();
        // Small chunks copied together; a piece of its own once a kept chunk or the end follows.
        let mut gathered = Vec::new();
        let mut left = h.len as usize;
        while left > 0 {
            if !self.fill().await? {
                return Err(format!("stream ended {} bytes into a {}-byte frame body", h.len as usize - left, h.len));
            }
            let take = left.min(self.cur.len());
            // A value already begun in `gathered` is finished there before anything is kept.
            let whole = if gathered.len() % 4 == 0 { take / 4 * 4 } else { 0 };
            if whole >= MIN_KEPT {
                if !gathered.is_empty() {
                    pieces.push(Bytes::from(std::mem::take(&mut gathered)));
                }
                pieces.push(self.cur.split_to(whole));
                left -= whole;
            } else {
                // Up to the end of the chunk, or of the value begun in `gathered`.
                let n = if whole > 0 { whole } else { take.min(4 - gathered.len() % 4) };
                gathered.extend_from_slice(&self.cur[..n]);
                self.cur.advance(n);
                left -= n;
            }
        }
        if !gathered.is_empty() {
            pieces.push(Bytes::from(gathered));
        }
        Ok(Some((h, Payload::Pieces(pieces))))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::frame::FrameKind;

    /// Chunks handed out as given.
    struct Chunks(VecDeque<Bytes>);

    impl ChunkSource for Chunks {
        async fn next_chunk(&mut self) -> Result<Option<Bytes>, String> {
            Ok(self.0.pop_front())
        }
    }

    fn header(op: u64, len: u32) -> FrameHeader {
        FrameHeader { kind: FrameKind::Data, ring: 0, generation: 1, step: 0, op, chunk: 0, len }
    }

    /// `bytes` cut into chunks of the lengths `cuts` cycles through (a length of 0 is an empty
    /// chunk, which quinn can hand out too).
    fn cut(bytes: &[u8], cuts: &[usize]) -> VecDeque<Bytes> {
        let (mut out, mut at, mut i) = (VecDeque::new(), 0, 0);
        while at < bytes.len() {
            let n = cuts[i % cuts.len()].min(bytes.len() - at);
            out.push_back(Bytes::copy_from_slice(&bytes[at..at + n]));
            at += n;
            i += 1;
        }
        out
    }

    /// Frames read (header, body pieces) and how reading ended.
    type Read = (Vec<(FrameHeader, Vec<Bytes>)>, Result<(), String>);

    fn read_all(chunks: VecDeque<Bytes>, max: u32) -> Read {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut src = ChunkFrames::new(Chunks(chunks));
        let shared = Shared::default();
        let mut frames = Vec::new();
        let end = rt.block_on(async {
            loop {
                match src.next_frame(max, &shared).await? {
                    None => return Ok(()),
                    Some((h, Payload::Pieces(p))) => {
                        assert!(p.iter().all(|b| !b.is_empty() && b.len() % 4 == 0), "a piece cut inside a value");
                        assert!(p.len() <= 2 * h.len as usize / MIN_KEPT + 1, "{} pieces for {} bytes", p.len(), h.len);
                        frames.push((h, p));
                    }
                    Some(_) => unreachable!("chunk frames come in pieces"),
                }
            }
        });
        (frames, end)
    }

    fn joined(frames: Vec<(FrameHeader, Vec<Bytes>)>) -> Vec<(FrameHeader, Vec<u8>)> {
        frames.into_iter().map(|(h, p)| (h, p.concat())).collect()
    }

    #[test]
    fn frames_come_back_whole_however_the_stream_is_cut() {
        let sent: Vec<(FrameHeader, Vec<u8>)> = [0u32, 4, 40, 1000, 4096]
            .iter()
            .enumerate()
            .map(|(i, &len)| (header(i as u64, len), (0..len).map(|b| (b * 7 + i as u32) as u8).collect()))
            .collect();
        let mut wire = Vec::new();
        for (h, body) in &sent {
            h.encode(&mut wire);
            wire.extend_from_slice(body);
        }
        for cuts in [&[1usize][..], &[3], &[5, 0, 7], &[31, 33], &[64 << 10], &[4, 2, 6, 1, 1, 2], &[17000, 3, 20001]] {
            let (got, end) = read_all(cut(&wire, cuts), 1 << 20);
            assert_eq!(end, Ok(()), "cuts {cuts:?}");
            assert_eq!(joined(got), sent, "cuts {cuts:?}");
        }
    }

    /// Large chunks are reduced from where they lie; small ones (a peer could send a few bytes per
    /// datagram, each pinning its receive buffer) are copied together.
    #[test]
    fn large_chunks_are_kept_and_small_ones_gathered() {
        let len = 256u32 << 10;
        let mut wire = Vec::new();
        header(0, len).encode(&mut wire);
        wire.extend((0..len).map(|b| (b % 251) as u8));
        let inside = |piece: &Bytes, chunks: &VecDeque<Bytes>| chunks.iter().any(|c| c.as_ptr_range().contains(&piece.as_ptr()));

        let chunks = cut(&wire, &[40_001, 3]);
        let (got, end) = read_all(chunks.clone(), 1 << 20);
        assert_eq!(end, Ok(()));
        let kept = got[0].1.iter().filter(|p| inside(p, &chunks)).count();
        assert!(kept >= 5, "only {kept} of {} pieces kept", got[0].1.len());
        assert_eq!(got[0].1.concat(), wire[HEADER_LEN..]);

        let chunks = cut(&wire, &[1000]);
        let (got, end) = read_all(chunks.clone(), 1 << 20);
        assert_eq!(end, Ok(()));
        assert_eq!(got[0].1.len(), 1, "small chunks gather into one piece");
        assert!(!inside(&got[0].1[0], &chunks));
        assert_eq!(got[0].1.concat(), wire[HEADER_LEN..]);
    }

    #[test]
    fn cut_frames_and_oversized_headers_are_errors() {
        let mut wire = Vec::new();
        header(0, 64).encode(&mut wire);
        wire.extend_from_slice(&[1u8; 30]);
        let (got, end) = read_all(cut(&wire, &[7]), 1 << 20);
        assert!(got.is_empty());
        assert_eq!(end, Err("stream ended 30 bytes into a 64-byte frame body".to_string()));

        let (_, end) = read_all(cut(&wire[..20], &[7]), 1 << 20);
        assert_eq!(end, Err("stream ended 20 bytes into a frame header".to_string()));

        // Too long for the negotiated maximum: rejected on the header, before the body is read.
        let (_, end) = read_all(cut(&wire, &[100]), 32);
        assert!(end.unwrap_err().contains("exceeds the negotiated maximum"));
    }
}
