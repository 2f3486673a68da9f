//! How fast one core seals and opens QUIC packets with each library and suite
//! (`ringsam bench cipher`): the AEAD a ring's every byte passes through twice per hop, measured
//! on its own, through the same rustls packet keys quinn uses.
//!
//! The packets fill a 64 MiB working set, walked in order, so the data comes from memory rather
//! than a hot cache, as a ring's does. Time is the thread's CPU time, which another process
//! sharing the core does not inflate. Every pass's opened packets are checked against what was
//! sealed, outside the timing.

use crate::allreduce::thread_cpu_seconds;
use ringsam_collective::quic_crypto::{Cipher, CryptoLib, packet_keys};

/// Bytes of packets the passes walk through.
const WORKING_SET: usize = 64 << 20;
/// An AEAD tag's bytes.
const TAG: usize = 16;
/// A short header's bytes, sealed as associated data as quinn does.
const HEADER: [u8; 11] = *b"\x40ringsam\x00\x01\x02";

/// One library and suite's throughput on one core.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CipherRow {
    /// The library.
    pub lib: CryptoLib,
    /// The suite.
    pub cipher: Cipher,
    /// Bytes sealed per packet.
    pub packet: usize,
    /// Bytes sealed per second of CPU (10⁹).
    pub seal_gb_s: f64,
    /// Bytes opened per second of CPU (10⁹).
    pub open_gb_s: f64,
}

impl CipherRow {
    /// CPU nanoseconds to seal and open one byte: what one hop of a ring costs in AEAD.
    pub fn ns_per_byte(&self) -> f64 {
        1.0 / self.seal_gb_s + 1.0 / self.open_gb_s
    }
}

/// QUIC's bytes around what a 1-RTT packet seals: the short header (1 byte, quinn's 8-byte
/// connection id, up to 4 bytes of packet number) and the 16-byte tag.
pub const HEADER_AND_TAG: usize = 29;

/// The bytes sealed in a 1-RTT packet of `udp_payload` bytes.
pub fn sealed_bytes(udp_payload: usize) -> usize {
    udp_payload.saturating_sub(HEADER_AND_TAG)
}

/// Seals and opens at least `bytes` of packets that each seal `packet` bytes, with `lib`'s
/// `cipher`, in whole passes over the working set (so at least one). Errors if `packet` is
/// outside 16..=65000 or an opened packet differs from what was sealed.
pub fn measure(lib: CryptoLib, cipher: Cipher, packet: usize, bytes: u64) -> Result<CipherRow, String> {
    if !(16..=65000).contains(&packet) {
        return Err(format!("{packet} bytes sealed per packet: expected 16 to 65000 (within one UDP datagram)"));
    }
    let (seal, open) = packet_keys(lib, cipher);
    let slot = packet + TAG;
    let slots = (WORKING_SET / slot).max(1);
    let pattern = |i: usize| (i.wrapping_mul(31) >> 3) as u8;
    let mut set: Vec<u8> = (0..slots * slot).map(pattern).collect();
    let passes = bytes.div_ceil((slots * packet) as u64).max(1);
    let (mut seal_s, mut open_s, mut pn) = (0.0, 0.0, 0u64);
    for _ in 0..passes {
        let first_pn = pn;
        let t = thread_cpu_seconds();
        for s in set.chunks_exact_mut(slot) {
            let (payload, tag) = s.split_at_mut(packet);
            let sealed = seal.encrypt_in_place(pn, &HEADER, payload).map_err(|e| format!("sealing: {e}"))?;
            tag.copy_from_slice(sealed.as_ref());
            pn += 1;
        }
        seal_s += thread_cpu_seconds() - t;
        let t = thread_cpu_seconds();
        for (i, s) in set.chunks_exact_mut(slot).enumerate() {
            open.decrypt_in_place(first_pn + i as u64, &HEADER, s).map_err(|e| format!("opening packet {i}: {e}"))?;
        }
        open_s += thread_cpu_seconds() - t;
        check_opened(&set, slot, packet, pattern)?;
    }
    let total = (passes * (slots * packet) as u64) as f64;
    Ok(CipherRow { lib, cipher, packet, seal_gb_s: total / seal_s.max(1e-9) / 1e9, open_gb_s: total / open_s.max(1e-9) / 1e9 })
}

fn check_opened(set: &[u8], slot: usize, packet: usize, pattern: impl Fn(usize) -> u8) -> Result<(), String> {
    for (i, s) in set.chunks_exact(slot).enumerate() {
        if let Some(j) = (0..packet).find(|&j| s[j] != pattern(i * slot + j)) {
            return Err(format!("packet {i} byte {j} differs after sealing and opening"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_library_and_suite_round_trips() {
        for lib in [CryptoLib::AwsLc, CryptoLib::Ring] {
            for cipher in Cipher::ALL {
                let row = measure(lib, cipher, 1452, 1).unwrap();
                assert!(row.seal_gb_s > 0.0 && row.open_gb_s > 0.0 && row.ns_per_byte() > 0.0, "{row:?}");
            }
        }
    }

    #[test]
    fn a_packet_no_datagram_carries_is_refused() {
        assert!(measure(CryptoLib::Ring, Cipher::Aes128Gcm, 65001, 1).unwrap_err().contains("expected 16 to 65000"));
        assert!(measure(CryptoLib::Ring, Cipher::Aes128Gcm, 10, 1).is_err());
    }
}
