//! The wire format of ring frames: a fixed 32-byte header, then `len` bytes of little-endian f32.
//!
//! ```text
//! 0  magic  u32 "RSAM"    8  generation u32    16 op    u64
//! 4  kind   u8            12 step       u32    24 chunk u32
//! 5  (zero) u8                                 28 len   u32  (payload bytes)
//! 6  ring   u16
//! ```
//! All integers little-endian. [`FrameHeader::decode`] checks the length against the maximum the
//! link negotiated *before* the caller allocates anything for the payload.

/// `"RSAM"` as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"RSAM");
/// Header bytes.
pub const HEADER_LEN: usize = 32;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// One chunk of one step of an all-reduce.
    Data = 1,
}

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload kind.
    pub kind: FrameKind,
    /// Which ring (the whole world, or a sub-ring) this frame belongs to.
    pub ring: u16,
    /// Ring generation; frames of another generation are stale.
    pub generation: u32,
    /// Step of the all-reduce (0 … 2(n−1)−1).
    pub step: u32,
    /// Operation id.
    pub op: u64,
    /// Chunk index within the step's segment.
    pub chunk: u32,
    /// Payload bytes that follow.
    pub len: u32,
}

/// Why a header was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a ringsam frame.
    #[error("bad magic {0:#010x} (not a ringsam peer, or the stream lost sync)")]
    Magic(u32),
    /// Unknown kind byte.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// Payload larger than negotiated.
    #[error("frame payload of {len} bytes exceeds the negotiated maximum of {max}")]
    TooLong {
        /// Claimed length.
        len: u32,
        /// Negotiated maximum.
        max: u32,
    },
    /// Payload not a whole number of f32.
    #[error("frame payload of {0} bytes is not a multiple of 4")]
    Misaligned(u32),
}

impl FrameHeader {
    /// Writes the header into `out` (appending 32 bytes).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.push(self.kind as u8);
        out.push(0);
        out.extend_from_slice(&self.ring.to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.step.to_le_bytes());
        out.extend_from_slice(&self.op.to_le_bytes());
        out.extend_from_slice(&self.chunk.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
    }

    /// Parses and bounds a header; `max_payload` is the negotiated maximum payload in bytes.
    pub fn decode(b: &[u8; HEADER_LEN], max_payload: u32) -> Result<FrameHeader, FrameError> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(FrameError::Magic(magic));
        }
        let kind = match b[4] {
            1 => FrameKind::Data,
            k => return Err(FrameError::Kind(k)),
        };
        let len = u32_at(28);
        if len > max_payload {
            return Err(FrameError::TooLong { len, max: max_payload });
        }
        if len % 4 != 0 {
            return Err(FrameError::Misaligned(len));
        }
        Ok(FrameHeader {
            kind,
            ring: u16::from_le_bytes([b[6], b[7]]),
            generation: u32_at(8),
            step: u32_at(12),
            op: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
            chunk: u32_at(24),
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> FrameHeader {
        FrameHeader { kind: FrameKind::Data, ring: 3, generation: 7, step: 2, op: 1 << 40, chunk: 9, len: 64 }
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        h().encode(&mut out);
        assert_eq!(out.len(), HEADER_LEN);
        assert_eq!(FrameHeader::decode(out[..].try_into().unwrap(), 1 << 20).unwrap(), h());
    }

    #[test]
    fn garbage_and_huge_lengths_are_rejected_before_allocation() {
        let mut out = Vec::new();
        FrameHeader { len: u32::MAX - 3, ..h() }.encode(&mut out);
        assert!(matches!(FrameHeader::decode(out[..].try_into().unwrap(), 1 << 20), Err(FrameError::TooLong { .. })));
        assert!(matches!(FrameHeader::decode(&[0xAB; HEADER_LEN], 1 << 20), Err(FrameError::Magic(_))));
        let mut out = Vec::new();
        FrameHeader { len: 6, ..h() }.encode(&mut out);
        assert!(matches!(FrameHeader::decode(out[..].try_into().unwrap(), 1 << 20), Err(FrameError::Misaligned(6))));
        out[4] = 9;
        assert!(matches!(FrameHeader::decode(out[..].try_into().unwrap(), 1 << 20), Err(FrameError::Kind(9))));
    }
}
