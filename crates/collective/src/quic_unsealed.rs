//! QUIC packets left unsealed, for measuring what the AEAD costs a ring and nothing else.
//!
//! Built only with the `unsealed-quic-bench` feature, and reachable only through `bench
//! allreduce --quic_cipher unsealed-benchmark-only`: the TLS handshake still runs and
//! authenticates both peers, but every packet's payload and header travel in the clear and
//! are not protected against change. A ring with this cipher does every other thing a sealed
//! one does (the same packets, copies, syscalls and 16-byte tags), so the difference between
//! the two in one run is the cost of sealing and opening alone (docs/BENCHMARKS.md, "What the
//! AEAD costs").
//!
//! It takes the place of TLS 1.3's AES-128-GCM suite, under that suite's identifier (QUIC's
//! Initial packets use its keys too), so it only forms rings with ranks that chose it as well:
//! a sealed neighbour cannot read its first packet, and the connection attempt times out.

use std::sync::OnceLock;

use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::quic::{Algorithm, HeaderProtectionKey, PacketKey, Tag};
use rustls::{CipherSuiteCommon, Error, SupportedCipherSuite, Tls13CipherSuite};

use crate::quic_crypto::CryptoLib;

const TAG_LEN: usize = 16;

/// AES-GCM's limits, kept so that quinn-proto updates keys when it would for a sealed ring.
const CONFIDENTIALITY_LIMIT: u64 = 1 << 23;
const INTEGRITY_LIMIT: u64 = 1 << 52;

/// `lib`'s AES-128-GCM suite with unsealed QUIC packets: the only suite the provider offers.
pub(crate) fn unsealed_suite(lib: CryptoLib, base: &'static Tls13CipherSuite) -> SupportedCipherSuite {
    static AWS_LC: OnceLock<Tls13CipherSuite> = OnceLock::new();
    static RING: OnceLock<Tls13CipherSuite> = OnceLock::new();
    let slot = match lib {
        CryptoLib::AwsLc => &AWS_LC,
        CryptoLib::Ring => &RING,
    };
    SupportedCipherSuite::Tls13(slot.get_or_init(|| Tls13CipherSuite {
        common: CipherSuiteCommon { ..base.common },
        hkdf_provider: base.hkdf_provider,
        aead_alg: base.aead_alg,
        quic: Some(&NullPacketKey),
    }))
}

/// Packets sealed with no cipher: [`Algorithm`] and its packet key.
struct NullPacketKey;

/// Header protection that protects nothing: the first byte and the packet number go in the
/// clear.
struct ClearHeaders;

impl Algorithm for NullPacketKey {
    fn packet_key(&self, _key: AeadKey, _iv: Iv) -> Box<dyn PacketKey> {
        Box::new(NullPacketKey)
    }

    fn header_protection_key(&self, _key: AeadKey) -> Box<dyn HeaderProtectionKey> {
        Box::new(ClearHeaders)
    }

    fn aead_key_len(&self) -> usize {
        16
    }
}

impl PacketKey for NullPacketKey {
    /// A tag of zeros, so the packets are as long as sealed ones.
    fn encrypt_in_place(&self, _packet_number: u64, _header: &[u8], _payload: &mut [u8]) -> Result<Tag, Error> {
        Ok(Tag::from(&[0u8; TAG_LEN][..]))
    }

    fn decrypt_in_place<'a>(&self, _packet_number: u64, _header: &[u8], payload: &'a mut [u8]) -> Result<&'a [u8], Error> {
        let body = payload.len().checked_sub(TAG_LEN).ok_or(Error::DecryptError)?;
        if payload[body..].iter().any(|&b| b != 0) {
            return Err(Error::DecryptError);
        }
        Ok(&payload[..body])
    }

    fn tag_len(&self) -> usize {
        TAG_LEN
    }

    fn confidentiality_limit(&self) -> u64 {
        CONFIDENTIALITY_LIMIT
    }

    fn integrity_limit(&self) -> u64 {
        INTEGRITY_LIMIT
    }
}

impl HeaderProtectionKey for ClearHeaders {
    fn encrypt_in_place(&self, _sample: &[u8], _first: &mut u8, _packet_number: &mut [u8]) -> Result<(), Error> {
        Ok(())
    }

    fn decrypt_in_place(&self, _sample: &[u8], _first: &mut u8, _packet_number: &mut [u8]) -> Result<(), Error> {
        Ok(())
    }

    fn sample_len(&self) -> usize {
        TAG_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quic_crypto::{Cipher, crypto_provider, packet_keys};

    #[test]
    fn only_the_unsealed_suite_is_offered_and_its_keys_leave_packets_in_the_clear() {
        let unsealed = Cipher::parse("unsealed-benchmark-only").unwrap();
        assert_eq!(unsealed.name(), "unsealed-benchmark-only");
        assert!(!unsealed.seals() && Cipher::Aes128Gcm.seals());
        for lib in [CryptoLib::AwsLc, CryptoLib::Ring] {
            let suites = crypto_provider(lib, unsealed).cipher_suites;
            assert_eq!(suites.len(), 1);
            assert_eq!(suites[0].suite(), rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
            let (seal, open) = packet_keys(lib, unsealed);
            let mut packet = b"plain".to_vec();
            let tag = seal.encrypt_in_place(3, b"h", &mut packet).unwrap();
            assert_eq!(packet, b"plain");
            packet.extend_from_slice(tag.as_ref());
            assert_eq!(open.decrypt_in_place(3, b"h", &mut packet).unwrap(), b"plain");
        }
    }

    #[test]
    fn packets_pass_unchanged_and_a_changed_tag_is_refused() {
        let plain: Vec<u8> = (0..100u8).collect();
        let mut packet = plain.clone();
        let tag = NullPacketKey.encrypt_in_place(1, b"h", &mut packet).unwrap();
        assert_eq!(packet, plain);
        packet.extend_from_slice(tag.as_ref());
        let mut bad = packet.clone();
        *bad.last_mut().unwrap() = 1;
        assert!(NullPacketKey.decrypt_in_place(1, b"h", &mut bad).is_err());
        assert!(NullPacketKey.decrypt_in_place(1, b"h", &mut [0u8; 5]).is_err());
        assert_eq!(NullPacketKey.decrypt_in_place(1, b"h", &mut packet).unwrap(), &plain[..]);
    }
}
