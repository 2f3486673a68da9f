//! Which library seals a QUIC ring's packets, and with which cipher suite.
//!
//! Every byte a ring moves is sealed once and opened once per hop, so the AEAD is a large share
//! of QUIC's CPU per byte (docs/BENCHMARKS.md, "Cipher"). rustls can run TLS with two libraries,
//! and on x86-64 neither is the faster everywhere:
//! - aws-lc-rs has a 512-bit VAES + VPCLMULQDQ AES-GCM, used on CPUs with AVX-512, but no 256-bit
//!   one: without AVX-512 it falls back to 128-bit AES-NI code;
//! - ring has the 256-bit VAES + VPCLMULQDQ (AVX2) AES-GCM, and nothing wider.
//!
//! So the default ([`CryptoLib::fastest_here`]) follows the CPU: aws-lc-rs with AVX-512, ring with
//! VAES but no AVX-512, aws-lc-rs otherwise (where both run AES-NI, or on other architectures;
//! not measured). `ringsam bench cipher` measures both libraries on the host at hand. Both speak
//! the same standard suites, so ranks that chose differently still form a ring.

use rustls::quic::{Keys, PacketKey, Version};

/// The libraries rustls can run TLS's ciphers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoLib {
    /// aws-lc-rs (AWS's fork of BoringSSL).
    AwsLc,
    /// ring.
    Ring,
}

/// The AES-GCM instructions an x86-64 CPU offers, grouped as the two libraries test for them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AesFeatures {
    /// VAES and VPCLMULQDQ with AVX2: ring's 256-bit AES-GCM.
    pub vaes_avx2: bool,
    /// AVX-512 F, DQ, BW and VL besides VAES and VPCLMULQDQ, on an OS where aws-lc-rs uses them:
    /// its 512-bit AES-GCM.
    pub vaes_avx512: bool,
}

impl AesFeatures {
    /// This CPU's (all false off x86-64).
    pub fn here() -> AesFeatures {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let vaes = has!("vaes") && has!("vpclmulqdq");
            let avx512 = has!("avx512f") && has!("avx512dq") && has!("avx512bw") && has!("avx512vl");
            // aws-lc builds its 512-bit AES-GCM out on Windows and turns it off on Apple's OSes,
            // so there it runs the 128-bit code whatever the CPU has.
            let aws_lc_uses_avx512 = cfg!(not(any(windows, target_vendor = "apple")));
            AesFeatures { vaes_avx2: vaes && has!("avx2"), vaes_avx512: vaes && avx512 && aws_lc_uses_avx512 }
        }
        #[cfg(not(target_arch = "x86_64"))]
        AesFeatures::default()
    }

    /// For logs: which wide AES-GCM the CPU allows.
    pub fn describe(self) -> &'static str {
        match (self.vaes_avx512, self.vaes_avx2) {
            (true, _) => "VAES with AVX-512",
            (false, true) => "VAES with AVX2, no AVX-512",
            (false, false) => "no VAES",
        }
    }
}

impl CryptoLib {
    /// The library whose AES-GCM is the wider on a CPU with `cpu`'s features (module doc).
    /// Measured on two CPUs: an AVX-512 Xeon (aws-lc-rs 1.56× ring) and an AMD EPYC with VAES but
    /// no AVX-512 (ring ahead); docs/BENCHMARKS.md, "Cipher".
    pub fn fastest_for(cpu: AesFeatures) -> CryptoLib {
        if cpu.vaes_avx2 && !cpu.vaes_avx512 { CryptoLib::Ring } else { CryptoLib::AwsLc }
    }

    /// [`CryptoLib::fastest_for`] this CPU: the default.
    pub fn fastest_here() -> CryptoLib {
        CryptoLib::fastest_for(AesFeatures::here())
    }

    /// From a flag value: `auto` (this CPU's [`CryptoLib::fastest_here`]), `aws-lc-rs` or `ring`.
    pub fn parse(s: &str) -> Result<CryptoLib, String> {
        match s {
            "auto" => Ok(CryptoLib::fastest_here()),
            "aws-lc-rs" => Ok(CryptoLib::AwsLc),
            "ring" => Ok(CryptoLib::Ring),
            other => Err(format!("crypto library {other:?}: expected auto, aws-lc-rs or ring")),
        }
    }

    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            CryptoLib::AwsLc => "aws-lc-rs",
            CryptoLib::Ring => "ring",
        }
    }
}

impl Default for CryptoLib {
    fn default() -> Self {
        CryptoLib::fastest_here()
    }
}

/// TLS 1.3's cipher suites, as the one a ring offers first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cipher {
    /// AES-128-GCM: 10 AES rounds to AES-256's 14, still 128-bit secure; QUIC's Initial
    /// packets use it too.
    #[default]
    Aes128Gcm,
    /// AES-256-GCM (rustls's own first choice).
    Aes256Gcm,
    /// ChaCha20-Poly1305: the fast one on CPUs without AES instructions.
    Chacha20Poly1305,
    /// No sealing at all, for measuring what sealing costs (`quic_unsealed.rs`); only in builds
    /// with the `unsealed-quic-bench` feature.
    #[cfg(feature = "unsealed-quic-bench")]
    Unsealed,
}

impl Cipher {
    /// Every suite, AES-128-GCM first.
    pub const ALL: [Cipher; 3] = [Cipher::Aes128Gcm, Cipher::Aes256Gcm, Cipher::Chacha20Poly1305];

    /// From a flag value.
    pub fn parse(s: &str) -> Result<Cipher, String> {
        match s {
            "aes-128-gcm" => Ok(Cipher::Aes128Gcm),
            "aes-256-gcm" => Ok(Cipher::Aes256Gcm),
            "chacha20-poly1305" => Ok(Cipher::Chacha20Poly1305),
            #[cfg(feature = "unsealed-quic-bench")]
            "unsealed-benchmark-only" => Ok(Cipher::Unsealed),
            other => Err(format!("cipher {other:?}: expected {}", Cipher::EXPECTED)),
        }
    }

    /// The flag values [`Cipher::parse`] takes, for its error.
    #[cfg(not(feature = "unsealed-quic-bench"))]
    const EXPECTED: &str = "aes-128-gcm, aes-256-gcm or chacha20-poly1305";
    #[cfg(feature = "unsealed-quic-bench")]
    const EXPECTED: &str = "aes-128-gcm, aes-256-gcm, chacha20-poly1305 or unsealed-benchmark-only";

    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "aes-128-gcm",
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::Chacha20Poly1305 => "chacha20-poly1305",
            #[cfg(feature = "unsealed-quic-bench")]
            Cipher::Unsealed => "unsealed-benchmark-only",
        }
    }

    /// Whether packets are sealed: always, except with a measurement build's
    /// `unsealed-benchmark-only`.
    pub fn seals(self) -> bool {
        #[cfg(feature = "unsealed-quic-bench")]
        if self == Cipher::Unsealed {
            return false;
        }
        true
    }

    fn suite(self) -> rustls::CipherSuite {
        match self {
            Cipher::Aes128Gcm => rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
            Cipher::Aes256Gcm => rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            Cipher::Chacha20Poly1305 => rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            #[cfg(feature = "unsealed-quic-bench")]
            Cipher::Unsealed => rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
        }
    }
}

/// `lib`'s TLS provider with `first` offered first, every other suite kept after it. AES-128 is
/// first by default because the client's order decides, and rustls would offer AES-256 (14
/// rounds to 10) first.
pub(crate) fn crypto_provider(lib: CryptoLib, first: Cipher) -> rustls::crypto::CryptoProvider {
    let mut p = match lib {
        CryptoLib::AwsLc => rustls::crypto::aws_lc_rs::default_provider(),
        CryptoLib::Ring => rustls::crypto::ring::default_provider(),
    };
    // A stable sort on "is not `first`" moves it to the front and keeps the rest in order.
    p.cipher_suites.sort_by_key(|s| s.suite() != first.suite());
    #[cfg(feature = "unsealed-quic-bench")]
    if first == Cipher::Unsealed {
        let base = p.cipher_suites[0].tls13().expect("every provider has TLS 1.3's AES-128-GCM");
        p.cipher_suites = vec![crate::quic_unsealed::unsealed_suite(lib, base)];
    }
    p
}

/// A client's sealing key and a server's opening key for `cipher` run by `lib`, derived from one
/// secret: the packet protection quinn uses, for measuring it on its own (`bench cipher`).
pub fn packet_keys(lib: CryptoLib, cipher: Cipher) -> (Box<dyn PacketKey>, Box<dyn PacketKey>) {
    let provider = crypto_provider(lib, cipher);
    let suite = provider.cipher_suites[0].tls13().and_then(|s| s.quic_suite()).expect("every TLS 1.3 suite rustls ships has QUIC keys");
    let secret = b"ringsam bench cipher";
    let client = Keys::initial(Version::V1, suite.suite, suite.quic, secret, rustls::Side::Client);
    let server = Keys::initial(Version::V1, suite.suite, suite.quic, secret, rustls::Side::Server);
    (client.local.packet, server.remote.packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chosen_cipher_is_offered_first_and_nothing_is_dropped() {
        for lib in [CryptoLib::AwsLc, CryptoLib::Ring] {
            for cipher in Cipher::ALL {
                let ours: Vec<_> = crypto_provider(lib, cipher).cipher_suites.iter().map(|s| s.suite()).collect();
                assert_eq!(ours[0], cipher.suite(), "{lib:?} {cipher:?}");
                let all = match lib {
                    CryptoLib::AwsLc => rustls::crypto::aws_lc_rs::default_provider(),
                    CryptoLib::Ring => rustls::crypto::ring::default_provider(),
                };
                let mut theirs: Vec<_> = all.cipher_suites.iter().map(|s| s.suite()).collect();
                let mut sorted = ours.clone();
                theirs.sort_by_key(|s| u16::from(*s));
                sorted.sort_by_key(|s| u16::from(*s));
                assert_eq!(sorted, theirs);
            }
        }
    }

    #[test]
    fn the_wider_aes_gcm_is_chosen() {
        let cpu = |vaes_avx2, vaes_avx512| AesFeatures { vaes_avx2, vaes_avx512 };
        assert_eq!(CryptoLib::fastest_for(cpu(true, true)), CryptoLib::AwsLc);
        assert_eq!(CryptoLib::fastest_for(cpu(true, false)), CryptoLib::Ring);
        assert_eq!(CryptoLib::fastest_for(cpu(false, false)), CryptoLib::AwsLc);
    }

    /// Keys from different libraries interoperate, and a flipped bit is refused.
    #[test]
    fn packets_sealed_by_one_library_open_with_the_other() {
        for cipher in Cipher::ALL {
            for (seal_lib, open_lib) in [(CryptoLib::AwsLc, CryptoLib::Ring), (CryptoLib::Ring, CryptoLib::AwsLc)] {
                let (seal, _) = packet_keys(seal_lib, cipher);
                let (_, open) = packet_keys(open_lib, cipher);
                let plain: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
                let mut packet = plain.clone();
                let tag = seal.encrypt_in_place(9, b"header", &mut packet).unwrap();
                assert_ne!(packet, plain);
                packet.extend_from_slice(tag.as_ref());
                let mut bad = packet.clone();
                bad[3] ^= 1;
                assert!(open.decrypt_in_place(9, b"header", &mut bad).is_err(), "{cipher:?}");
                assert_eq!(open.decrypt_in_place(9, b"header", &mut packet).unwrap(), &plain[..], "{cipher:?}");
            }
        }
    }

    #[test]
    fn flag_values_round_trip() {
        for lib in [CryptoLib::AwsLc, CryptoLib::Ring] {
            assert_eq!(CryptoLib::parse(lib.name()), Ok(lib));
        }
        for c in Cipher::ALL {
            assert_eq!(Cipher::parse(c.name()), Ok(c));
        }
        assert!(Cipher::parse("aes").unwrap_err().contains("expected aes-128-gcm"));
        assert!(CryptoLib::parse("openssl").unwrap_err().contains("expected auto"));
    }
}
