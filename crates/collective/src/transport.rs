//! Forming a ring link over either socket transport: the one function that training's rings
//! (`ringsam_train::cluster`) and `bench allreduce`'s ranks both call, so the two cannot drift.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::certs::{read_certs, read_key};
use crate::local_link::InProcess;
use crate::quic::{QuicConfig, QuicLinks, QuicTuning};
use crate::tcp::TcpConfig;
use crate::{RingConfig, RingHandle};

/// Hears of every connection a listening rank refuses (the peer's address and why): a stranger,
/// a wrong secret or certificate, a stalled handshake. The caller logs and counts them; without
/// it, refusals would be silent and a later "ring not formed" would say nothing of them.
#[derive(Clone)]
pub struct Refusals(pub Arc<RefusalFn>);

/// What [`Refusals`] calls: the refused peer's address, and why.
pub type RefusalFn = dyn Fn(SocketAddr, &str) + Send + Sync;

impl Refusals {
    /// Reports one refusal.
    pub fn report(&self, peer: SocketAddr, why: &str) {
        (self.0)(peer, why)
    }
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refusals(..)")
    }
}

/// How a ring authenticates and carries frames.
#[derive(Clone, Debug)]
pub enum Transport {
    /// QUIC: cluster CA, this node's certificate and key (PEM files from `ringsam certs`).
    Quic {
        /// Cluster CA certificate.
        ca: PathBuf,
        /// This node's certificate.
        cert: PathBuf,
        /// This node's private key.
        key: PathBuf,
        /// Bulk-transfer settings.
        tuning: QuicTuning,
    },
    /// TCP with the shared cluster secret.
    Tcp {
        /// The secret.
        secret: Vec<u8>,
    },
}

/// Where a rank listens and whom it connects to.
#[derive(Clone, Debug)]
pub struct Link {
    /// This rank's listen address.
    pub listen: SocketAddr,
    /// The next rank's address.
    pub next: SocketAddr,
    /// How long to keep trying to form the ring.
    pub connect_timeout: Duration,
    /// Where refused connections are reported.
    pub on_refusal: Option<Refusals>,
    /// Which neighbours live in this process, met over pipes instead of sockets (None: neither).
    pub in_process: Option<InProcess>,
}

/// Forms this rank's part of `ring` over `transport`. With QUIC, also returns the links' path
/// statistics (for `--quic_stats`).
pub async fn form_ring(transport: &Transport, ring: RingConfig, link: Link) -> Result<(RingHandle, Option<QuicLinks>), String> {
    let Link { listen, next, connect_timeout, on_refusal, in_process } = link;
    match transport {
        Transport::Tcp { secret } => {
            let cfg = TcpConfig { ring, listen, next, secret: secret.clone(), connect_timeout, on_refusal };
            Ok((crate::tcp::connect_beside(cfg, in_process.as_ref()).await.map_err(|e| e.to_string())?, None))
        }
        Transport::Quic { ca, cert, key, tuning } => {
            let ca_cert =
                read_certs(ca).map_err(|e| e.to_string())?.into_iter().next().ok_or_else(|| format!("{}: no certificate", ca.display()))?;
            let cfg = QuicConfig {
                ring,
                listen,
                next,
                ca: ca_cert,
                cert_chain: read_certs(cert).map_err(|e| e.to_string())?,
                key: read_key(key).map_err(|e| e.to_string())?,
                connect_timeout,
                tuning: *tuning,
                on_refusal,
            };
            crate::quic::connect_beside(cfg, in_process.as_ref()).await.map_err(|e| e.to_string())
        }
    }
}
