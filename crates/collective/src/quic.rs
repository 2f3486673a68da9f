//! The ring over QUIC: every rank authenticated by TLS 1.3 with certificates from the cluster
//! CA, in both directions (a rank without a CA-signed certificate cannot connect, and cannot be
//! connected to). This module holds the configuration both drivers use ([`quinn_configs`]), the
//! choice between them ([`QuicDriver`]; the direct one is `crate::quic_direct`), and quinn's
//! driver, described below.
//!
//! Each rank runs one endpoint: it accepts connections from its previous rank and opens them to
//! its next (one each way, or [`QuicTuning::stripes`]). A neighbour in the same process is met
//! over a pipe instead ([`crate::local_link`]): the endpoint then only connects out, or is not
//! opened at all when both are. Over QUIC, frames flow on one unidirectional stream
//! per connection, driven by [`crate::driver`] as over TCP, except that frames are read as quinn
//! holds them ([`crate::chunk_frames`]). Flow-control windows are the caller's (quinn's 1.25 MB
//! default is tuned for 100 Mbit/s × 100 ms), and MTU discovery may
//! go as far as the path allows ([`QuicConfig::max_mtu`]): per-packet work (AEAD, acks, syscalls)
//! is what bounds QUIC's throughput on a CPU-bound host.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWrite;

use crate::certs::PEER_NAME;
use crate::chunk_frames::{ChunkFrames, ChunkSource};
use crate::driver::{self, ByteFrames, RingHandle};
use crate::either_link::Either;
use crate::local_link::{InProcess, PipeReader, PipeWriter};
use crate::quic_crypto::crypto_provider;
pub use crate::quic_crypto::{Cipher, CryptoLib};
use crate::{Ring, RingConfig};

/// How a rank joins a QUIC ring.
pub struct QuicConfig {
    /// Ring parameters.
    pub ring: RingConfig,
    /// Address this rank listens on (UDP).
    pub listen: SocketAddr,
    /// Address of the next rank.
    pub next: SocketAddr,
    /// The cluster CA certificate.
    pub ca: CertificateDer<'static>,
    /// This node's certificate chain.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
    /// How long to keep trying to form the ring.
    pub connect_timeout: Duration,
    /// Bulk-transfer settings.
    pub tuning: QuicTuning,
    /// Where refused connections are reported (none: they are dropped silently).
    pub on_refusal: Option<crate::transport::Refusals>,
}

/// The settings that decide how fast QUIC moves a ring's bulk data (each measured on loopback
/// and on shaped links: docs/BENCHMARKS.md, "The ring on shaped links").
///
/// Why a 1 MiB stream window: on a shaped link with a short queue, a larger window lets the
/// sender keep that queue full, flow-control bound (the figures are in docs/BENCHMARKS.md).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuicTuning {
    /// Per-stream flow-control window in bytes.
    pub stream_window: u32,
    /// Connection flow-control window (receive) and send buffer, in bytes.
    pub conn_window: u32,
    /// UDP socket send and receive buffer sizes to ask the OS for, in bytes (the OS caps them
    /// at `net.core.rmem_max` / `wmem_max`).
    pub udp_buffer: usize,
    /// Largest UDP payload the path to the next rank carries (MTU discovery searches up to it);
    /// `None` picks [`LOOPBACK_MTU`] when the next rank is on loopback and quinn's 1452 otherwise.
    pub max_mtu: Option<u16>,
    /// The congestion controller.
    pub congestion: Congestion,
    /// Ask the peer to acknowledge every this many packets (the ACK-frequency extension; `None`:
    /// QUIC's default of every second packet). Fewer ACKs are fewer datagrams to send, encrypt
    /// and receive.
    pub ack_every: Option<u32>,
    /// Connections per ring neighbour, chunks striped over them (see [`crate::driver`]); quinn's
    /// driver only (the direct one refuses more than 1). quinn encrypts and decrypts a
    /// connection's packets on one task, so one connection uses one core for its crypto however
    /// many the runtime has; stripes spread it.
    pub stripes: usize,
    /// The library that runs TLS's cipher (default: the one with the wider AES-GCM on this CPU,
    /// [`CryptoLib::fastest_here`]).
    pub crypto: CryptoLib,
    /// The cipher suite offered first (the client's order decides).
    pub cipher: Cipher,
    /// What drives the connections: quinn's async layer, or link threads of ours over
    /// quinn-proto (`crate::quic_direct`).
    pub driver: QuicDriver,
}

/// What drives a rank's QUIC connections (the wire is the same either way, so ranks with
/// different drivers can be neighbours).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuicDriver {
    /// quinn's endpoint and connection tasks on the ring's tokio runtime.
    Quinn,
    /// One thread per neighbour over quinn-proto, handing the ring whole frames (Linux only).
    Direct,
}

/// Direct where it runs (Linux): as fast as quinn with 65000-byte datagrams, 1.3-1.6x quinn's
/// busbw at Ethernet's MTU where the CPU is the limit (level at 1 Gbit/s, where both reach the
/// line, with 37-42 % less CPU): docs/BENCHMARKS.md, "The direct QUIC driver".
impl Default for QuicDriver {
    fn default() -> Self {
        if cfg!(target_os = "linux") { QuicDriver::Direct } else { QuicDriver::Quinn }
    }
}

impl std::fmt::Display for QuicDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl QuicDriver {
    /// From a flag value.
    pub fn parse(s: &str) -> Result<QuicDriver, String> {
        match s {
            "quinn" => Ok(QuicDriver::Quinn),
            "direct" if cfg!(target_os = "linux") => Ok(QuicDriver::Direct),
            "direct" => Err("the direct QUIC driver needs Linux (eventfd, ppoll); use quinn".into()),
            other => Err(format!("QUIC driver {other:?}: expected quinn or direct")),
        }
    }

    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            QuicDriver::Quinn => "quinn",
            QuicDriver::Direct => "direct",
        }
    }
}

impl Default for QuicTuning {
    fn default() -> Self {
        QuicTuning {
            stream_window: 1 << 20,
            conn_window: 8 << 20,
            udp_buffer: 4 << 20,
            max_mtu: None,
            congestion: Congestion::Cubic,
            ack_every: None,
            stripes: 1,
            crypto: CryptoLib::fastest_here(),
            cipher: Cipher::Aes128Gcm,
            driver: QuicDriver::default(),
        }
    }
}

/// quinn's congestion controllers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Congestion {
    /// CUBIC (quinn's default).
    #[default]
    Cubic,
    /// NewReno.
    NewReno,
    /// BBR (quinn marks its implementation experimental).
    Bbr,
}

impl Congestion {
    /// From a flag value.
    pub fn parse(s: &str) -> Result<Congestion, String> {
        match s {
            "cubic" => Ok(Congestion::Cubic),
            "newreno" => Ok(Congestion::NewReno),
            "bbr" => Ok(Congestion::Bbr),
            other => Err(format!("congestion controller {other:?}: expected cubic, newreno or bbr")),
        }
    }
}

/// Incoming connections that may wait at once (greeted or queued); quinn refuses the rest.
pub const MAX_INCOMING: usize = 32;

/// The UDP payload MTU discovery aims for on loopback (whose MTU is 65536 bytes).
pub const LOOPBACK_MTU: u16 = 65000;

/// quinn's MTU for paths it knows nothing about (Ethernet 1500 less IPv6 and UDP headers).
pub const DEFAULT_MTU: u16 = 1452;

/// The most bytes one segmentation-offload (GSO) send may carry: a UDP datagram's 64 KiB limit,
/// less headers. quinn batches up to 10 datagrams in one GSO send but does not cap the batch at
/// this limit: above an MTU of 6500 its batches failed and were silently lost (measured here:
/// with MTU discovery allowed up to 9000 the probes were all lost and black-hole detection pinned
/// the MTU at 1200). [`CappedGso`] caps the batch instead.
const MAX_GSO_BYTES: usize = 65000;

/// quinn's UDP socket with its GSO batches capped at [`MAX_GSO_BYTES`] for datagrams of up to
/// `mtu` bytes, so that every MTU keeps offload: on a 9000-byte network, a 4 Gbit/s netns ring
/// with GSO off (MTU 8952, one datagram a call) reached 0.51–0.53 of the line, the same network at
/// MTU 6500 with GSO 0.60–0.75 (docs/BENCHMARKS.md, "The ring on shaped links").
#[derive(Debug)]
struct CappedGso {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    max_segments: usize,
}

impl CappedGso {
    fn new(inner: Arc<dyn quinn::AsyncUdpSocket>, mtu: u16) -> CappedGso {
        CappedGso { inner, max_segments: max_gso_segments(mtu) }
    }
}

impl quinn::AsyncUdpSocket for CappedGso {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> std::io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments().min(self.max_segments)
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Datagrams of up to `mtu` bytes one GSO send may carry (at most [`MAX_GSO_BYTES`] in all).
pub(crate) fn max_gso_segments(mtu: u16) -> usize {
    (MAX_GSO_BYTES / mtu.max(1) as usize).max(1)
}

/// The MTU-discovery upper bound for `cfg` (see [`QuicConfig::max_mtu`]).
pub fn max_mtu(cfg: &QuicConfig) -> u16 {
    cfg.tuning.max_mtu.unwrap_or(if cfg.next.ip().is_loopback() { LOOPBACK_MTU } else { DEFAULT_MTU })
}

/// Why a QUIC ring could not be formed.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// TLS or endpoint configuration.
    #[error("QUIC configuration: {0}")]
    Config(String),
    /// Network trouble, or the peer failed authentication.
    #[error("{what}: {why}")]
    Connect {
        /// What we were doing.
        what: String,
        /// What went wrong.
        why: String,
    },
    /// The ring did not form in time.
    #[error("ring not formed within {0:?}")]
    Timeout(Duration),
}

fn cfg_err(e: impl std::fmt::Display) -> QuicError {
    QuicError::Config(e.to_string())
}

/// The quinn configurations a rank's endpoint runs with: mutual TLS 1.3 against the cluster CA,
/// bulk-transfer windows, the MTU bound. Public so that a benchmark can drive `quinn-proto` with
/// exactly what the ring uses (`benches/quinn_proto_floor.rs`).
pub struct QuinnConfigs {
    /// For accepting the previous rank.
    pub server: quinn::ServerConfig,
    /// For connecting to the next rank.
    pub client: quinn::ClientConfig,
    /// The endpoint's own (the largest UDP payload it accepts).
    pub endpoint: quinn::EndpointConfig,
    /// MTU discovery's upper bound ([`max_mtu`]).
    pub mtu_bound: u16,
}

/// Builds [`QuinnConfigs`] for `cfg`.
pub fn quinn_configs(cfg: &QuicConfig) -> Result<QuinnConfigs, QuicError> {
    let provider = Arc::new(crypto_provider(cfg.tuning.crypto, cfg.tuning.cipher));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cfg.ca.clone()).map_err(cfg_err)?;
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build().map_err(cfg_err)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(cfg_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cfg.cert_chain.clone(), cfg.key.clone_key())
        .map_err(cfg_err)?;
    server.alpn_protocols = vec![b"ringsam/1".to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(cfg_err)?
        .with_root_certificates(roots)
        .with_client_auth_cert(cfg.cert_chain.clone(), cfg.key.clone_key())
        .map_err(cfg_err)?;
    client.alpn_protocols = vec![b"ringsam/1".to_vec()];

    let t = cfg.tuning;
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(VarInt::from_u32(t.stream_window))
        .receive_window(VarInt::from_u32(t.conn_window.max(t.stream_window)))
        .send_window(t.conn_window.max(t.stream_window) as u64)
        .keep_alive_interval(Some(Duration::from_secs(2)));
    match t.congestion {
        Congestion::Cubic => transport.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default())),
        Congestion::NewReno => transport.congestion_controller_factory(Arc::new(quinn::congestion::NewRenoConfig::default())),
        Congestion::Bbr => transport.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default())),
    };
    if let Some(n) = t.ack_every {
        let mut ack = quinn::AckFrequencyConfig::default();
        ack.ack_eliciting_threshold(VarInt::from_u32(n.saturating_sub(1)));
        transport.ack_frequency_config(Some(ack));
    }
    // Packet count is the cost that matters (every datagram is a syscall share, an AEAD call and
    // an ack): on loopback, 64 KB datagrams instead of 1200-byte ones made the 4-rank 64 MiB
    // benchmark 2.5x faster. quinn only searches up to `upper_bound`, and only if the peer's
    // endpoint accepts datagrams that large (`max_udp_payload_size` below).
    let mtu_bound = max_mtu(cfg);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(mtu_bound);
    transport.mtu_discovery_config(Some(mtu)).enable_segmentation_offload(true);
    let transport = Arc::new(transport);
    let mut server_cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server).map_err(cfg_err)?));
    server_cfg.transport_config(transport.clone());
    // Strangers' Initial packets cost memory until they are refused: bound how many incoming
    // connections may wait, and the data buffered for them (quinn refuses the rest).
    server_cfg.max_incoming(MAX_INCOMING).incoming_buffer_size(64 << 10).incoming_buffer_size_total(MAX_INCOMING as u64 * (64 << 10));
    let mut client_cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client).map_err(cfg_err)?));
    client_cfg.transport_config(transport);
    let mut ep_cfg = quinn::EndpointConfig::default();
    ep_cfg.max_udp_payload_size(mtu_bound.max(DEFAULT_MTU)).map_err(cfg_err)?;
    Ok(QuinnConfigs { server: server_cfg, client: client_cfg, endpoint: ep_cfg, mtu_bound })
}

/// Builds the endpoint with [`quinn_configs`]. With `accepts`, it listens at `cfg.listen` for the
/// previous rank; without (the previous rank's link is a pipe), it only connects out.
fn endpoint(cfg: &QuicConfig, accepts: bool) -> Result<Endpoint, QuicError> {
    let QuinnConfigs { server: server_cfg, client: client_cfg, endpoint: ep_cfg, mtu_bound } = quinn_configs(cfg)?;
    let t = cfg.tuning;
    // An endpoint that only connects out binds any free port of the listen address, as a client
    // does: its datagrams still leave from the interface the peers know.
    let bind = if accepts { cfg.listen } else { SocketAddr::new(cfg.listen.ip(), 0) };
    let bind_err = |e: std::io::Error| QuicError::Connect { what: format!("binding UDP {bind}"), why: e.to_string() };
    let socket = bind_udp(bind, t.udp_buffer)?;
    let runtime = quinn::default_runtime().ok_or_else(|| QuicError::Config("no async runtime for QUIC".into()))?;
    let socket = Arc::new(CappedGso::new(runtime.wrap_udp_socket(socket).map_err(bind_err)?, mtu_bound));
    let mut ep = Endpoint::new_with_abstract_socket(ep_cfg, accepts.then_some(server_cfg), socket, runtime).map_err(bind_err)?;
    ep.set_default_client_config(client_cfg);
    Ok(ep)
}

/// A UDP socket bound at `addr`, asking the OS for `buffer` bytes each way.
pub(crate) fn bind_udp(addr: SocketAddr, buffer: usize) -> Result<std::net::UdpSocket, QuicError> {
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|e| QuicError::Connect { what: format!("binding UDP {addr}"), why: e.to_string() })?;
    // The default UDP receive buffer (~208 KiB on Linux) overflows when a burst of a ring step
    // arrives while the process is busy reducing: measured here, thousands of datagrams dropped
    // per benchmark run (RcvbufErrors), and every drop shrinks the congestion window. Ask for
    // `buffer` bytes each way (the OS caps it at net.core.rmem_max / wmem_max).
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_recv_buffer_size(buffer);
    let _ = sock.set_send_buffer_size(buffer);
    Ok(socket)
}

/// The application hello on each stream: which rank, generation and ring this is, how many
/// stripes the link has and which one this stream is.
pub(crate) fn hello(cfg: &RingConfig, stripes: usize, stripe: usize) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(b"RSQH");
    h[4..8].copy_from_slice(&(cfg.rank as u32).to_le_bytes());
    h[8..12].copy_from_slice(&cfg.generation.to_le_bytes());
    h[12..16].copy_from_slice(&cfg.max_payload().to_le_bytes());
    h[16..18].copy_from_slice(&cfg.ring_id.to_le_bytes());
    h[18] = stripes as u8;
    h[19] = stripe as u8;
    h
}

/// The most stripes a link may have (the hello carries the count in one byte).
pub const MAX_STRIPES: usize = 16;

/// Forms the ring. Returns the handle; the endpoint lives as long as the streams do.
pub async fn connect(cfg: QuicConfig) -> Result<RingHandle, QuicError> {
    Ok(connect_observed(cfg).await?.0)
}

/// A rank's connections to the next rank, for their statistics (RTT, congestion window, losses).
#[derive(Clone, Debug)]
pub struct QuicLinks {
    /// One per stripe.
    pub outbound: Vec<LinkStats>,
}

/// Where one connection's statistics are read.
#[derive(Clone, Debug)]
pub enum LinkStats {
    /// A quinn connection, asked directly.
    Quinn(Connection),
    /// A link thread's connection (`crate::quic_direct`), as the thread last copied them (at
    /// most 10 ms old while data flows).
    Direct(Arc<std::sync::Mutex<Option<quinn::ConnectionStats>>>),
}

impl QuicLinks {
    /// One line per outbound stripe: RTT, congestion window, datagrams, losses, congestion
    /// events, and ACK frames received.
    pub fn summary(&self) -> String {
        self.outbound.iter().map(stripe_summary).collect::<Vec<_>>().join("; ")
    }
}

fn stripe_summary(c: &LinkStats) -> String {
    let s = match c {
        LinkStats::Quinn(c) => c.stats(),
        LinkStats::Direct(s) => match *s.lock().expect("never poisoned") {
            Some(s) => s,
            None => return "no statistics yet".into(),
        },
    };
    format!(
        "rtt {:?}, cwnd {} B, mtu {} B, datagrams sent {}, lost {} ({} bytes), congestion events {}, acks received {}",
        s.path.rtt,
        s.path.cwnd,
        s.path.current_mtu,
        s.udp_tx.datagrams,
        s.path.lost_packets,
        s.path.lost_bytes,
        s.path.congestion_events,
        s.frame_rx.acks
    )
}

/// [`connect`], also returning the connections.
pub async fn connect_observed(cfg: QuicConfig) -> Result<(RingHandle, Option<QuicLinks>), QuicError> {
    connect_beside(cfg, None).await
}

/// Either kind of inbound stream, and of outbound.
type Inbound = Either<ByteFrames<PipeReader>, ChunkFrames<QuicRecv>>;
type Outbound = Either<PipeWriter, QuicSend>;

/// [`connect_observed`], meeting the neighbours that live in this process over pipes
/// ([`crate::local_link`]); no endpoint is opened when both are.
pub async fn connect_beside(cfg: QuicConfig, local: Option<&InProcess>) -> Result<(RingHandle, Option<QuicLinks>), QuicError> {
    if cfg.ring.world == 1 {
        return Ok((driver::spawn::<Inbound, Outbound>(Ring::new(cfg.ring), None), None));
    }
    #[cfg(target_os = "linux")]
    if cfg.tuning.driver == QuicDriver::Direct {
        return crate::quic_direct::connect_beside(cfg, local).await;
    }
    #[cfg(not(target_os = "linux"))]
    if cfg.tuning.driver == QuicDriver::Direct {
        return Err(QuicError::Config("the direct QUIC driver needs Linux".into()));
    }
    let ring = Ring::new(cfg.ring);
    let stripes = cfg.tuning.stripes;
    if !(1..=MAX_STRIPES).contains(&stripes) {
        return Err(QuicError::Config(format!("{stripes} stripes: 1 to {MAX_STRIPES} connections per neighbour")));
    }
    let (pipe_in, pipe_out) = (local.filter(|l| l.prev), local.filter(|l| l.next));
    let ep = if pipe_in.is_some() && pipe_out.is_some() { None } else { Some(endpoint(&cfg, pipe_in.is_none())?) };
    let accept = async {
        match (pipe_in, &ep) {
            (Some(l), _) => pipe_from_prev(l, &cfg.ring).await.map(Either::Pipe),
            (None, ep) => accept_stripes(opened(ep)?, &cfg).await.map(Either::Net),
        }
    };
    let connect = async {
        match (pipe_out, &ep) {
            (Some(l), _) => pipe_to_next(l, &cfg.ring).await.map(Either::Pipe),
            (None, ep) => connect_stripes(opened(ep)?, &cfg).await.map(Either::Net),
        }
    };
    let (inbound, outbound) = tokio::time::timeout(cfg.connect_timeout, async { tokio::try_join!(accept, connect) })
        .await
        .map_err(|_| QuicError::Timeout(cfg.connect_timeout))??;
    // Formed: this endpoint accepts no one else (strangers' Initials are refused at once and cost
    // nothing). A re-formation opens a new endpoint, and with it a new window for a replacement.
    if let Some(ep) = &ep {
        ep.set_server_config(None);
    }
    let links = QuicLinks { outbound: connections(&outbound).into_iter().map(LinkStats::Quinn).collect() };
    let recv: Vec<Inbound> = match inbound {
        Either::Pipe(p) => vec![Either::Pipe(ByteFrames(p))],
        Either::Net(v) => v
            .into_iter()
            .map(|(conn, stream)| Either::Net(ChunkFrames::new(QuicRecv { stream, _conn: conn, _endpoint: ep.clone().expect("opened") })))
            .collect(),
    };
    let send: Vec<Outbound> = match outbound {
        Either::Pipe(p) => vec![Either::Pipe(p)],
        Either::Net(v) => v
            .into_iter()
            .map(|(conn, stream)| Either::Net(QuicSend { stream, stopped: None, _conn: conn, _endpoint: ep.clone().expect("opened") }))
            .collect(),
    };
    Ok((driver::spawn(ring, Some((recv, send))), Some(links)))
}

/// The previous rank's pipe, when it lives in this process (either driver).
pub(crate) async fn pipe_from_prev(local: &InProcess, ring: &RingConfig) -> Result<PipeReader, QuicError> {
    local
        .links
        .receive_from_prev(ring)
        .await
        .map_err(|why| QuicError::Connect { what: "taking the previous rank's pipe, in this process".into(), why })
}

/// The next rank's pipe, when it lives in this process (either driver).
pub(crate) async fn pipe_to_next(local: &InProcess, ring: &RingConfig) -> Result<PipeWriter, QuicError> {
    local
        .links
        .send_to_next(ring)
        .await
        .map_err(|why| QuicError::Connect { what: "handing the next rank its pipe, in this process".into(), why })
}

/// The endpoint a socket side uses: opened unless both neighbours are in this process.
fn opened(ep: &Option<Endpoint>) -> Result<&Endpoint, QuicError> {
    ep.as_ref().ok_or_else(|| QuicError::Config("no endpoint for a neighbour over the network".into()))
}

/// A side's QUIC connections (none for a pipe).
fn connections<P, S>(side: &Either<P, Vec<(Connection, S)>>) -> Vec<Connection> {
    match side {
        Either::Pipe(_) => Vec::new(),
        Either::Net(v) => v.iter().map(|(c, _)| c.clone()).collect(),
    }
}

/// Accepts the previous rank's stripes, each greeted with the hello it must send.
async fn accept_stripes(ep: &Endpoint, cfg: &QuicConfig) -> Result<Vec<(Connection, RecvStream)>, QuicError> {
    let stripes = cfg.tuning.stripes;
    let (prev, _) = crate::schedule::ring_neighbors(cfg.ring.rank, cfg.ring.world);
    let mut want_hello = hello(&cfg.ring, stripes, 0);
    want_hello[4..8].copy_from_slice(&(prev as u32).to_le_bytes());
    let mut got: Vec<Option<(Connection, RecvStream)>> = (0..stripes).map(|_| None).collect();
    // Each incoming connection is greeted in a task of its own, so one that stalls delays no
    // one; `max_incoming` above bounds how many wait to be accepted at all.
    let mut greeting = tokio::task::JoinSet::new();
    while got.iter().any(Option::is_none) {
        tokio::select! {
            incoming = ep.accept() => {
                let incoming = incoming.ok_or_else(|| QuicError::Connect { what: "accepting".into(), why: "endpoint closed".into() })?;
                // A peer without a CA-signed certificate fails inside the TLS handshake; one
                // that stalls gets a few seconds.
                let peer = incoming.remote_address();
                let refused = |why: &str| if let Some(r) = &cfg.on_refusal { r.report(peer, why) };
                if greeting.len() >= MAX_INCOMING {
                    incoming.refuse();
                    refused("too many connections waiting to be greeted");
                    continue;
                }
                let on_refusal = cfg.on_refusal.clone();
                greeting.spawn(async move {
                    let greeted = tokio::time::timeout(Duration::from_secs(5), async move {
                        let conn = incoming.await.map_err(|e| format!("TLS handshake failed: {e}"))?;
                        let mut rx = conn.accept_uni().await.map_err(|e| format!("no hello stream: {e}"))?;
                        let mut h = [0u8; 20];
                        rx.read_exact(&mut h).await.map_err(|e| format!("no hello: {e}"))?;
                        // Everything but the stripe index must be what the previous rank sends.
                        if h[..19] != want_hello[..19] {
                            return Err("a hello for another ring, rank, generation or frame size".to_string());
                        }
                        Ok((h[19] as usize, conn, rx))
                    })
                    .await
                    .unwrap_or_else(|_| Err("no hello within 5 s".into()));
                    if let (Err(why), Some(r)) = (&greeted, &on_refusal) {
                        r.report(peer, why);
                    }
                    greeted.ok()
                });
            }
            Some(done) = greeting.join_next(), if !greeting.is_empty() => {
                // A stripe the previous rank connects again replaces one whose connection
                // died (its first try may have timed out after it had moved on); a live one
                // stays.
                if let Ok(Some((stripe, conn, rx))) = done
                    && let Some(slot) = got.get_mut(stripe)
                    && slot.as_ref().is_none_or(|(c, _)| c.close_reason().is_some())
                {
                    *slot = Some((conn, rx));
                }
            }
        }
    }
    greeting.abort_all();
    Ok(got.into_iter().flatten().collect::<Vec<_>>())
}

/// Connects to the next rank once per stripe, retrying until it listens or the timeout passes.
async fn connect_stripes(ep: &Endpoint, cfg: &QuicConfig) -> Result<Vec<(Connection, SendStream)>, QuicError> {
    let stripes = cfg.tuning.stripes;
    let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
    let mut out = Vec::with_capacity(stripes);
    while out.len() < stripes {
        let stripe = out.len();
        let attempt = async {
            let conn = ep.connect(cfg.next, PEER_NAME).map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())?;
            let mut tx = conn.open_uni().await.map_err(|e| e.to_string())?;
            tx.write_all(&hello(&cfg.ring, stripes, stripe)).await.map_err(|e| e.to_string())?;
            Ok::<_, String>((conn, tx))
        };
        match attempt.await {
            Ok(c) => out.push(c),
            Err(why) if tokio::time::Instant::now() + Duration::from_millis(100) >= deadline => {
                return Err(QuicError::Connect { what: format!("connecting to the next rank at {}", cfg.next), why });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await, // not up yet
        }
    }
    Ok(out)
}

/// The inbound stream, keeping its connection and endpoint alive.
pub struct QuicRecv {
    stream: RecvStream,
    _conn: Connection,
    _endpoint: Endpoint,
}

/// Read as quinn holds the data (see [`crate::chunk_frames`]): no copy into a buffer of ours.
impl ChunkSource for QuicRecv {
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, String> {
        Ok(self.stream.read_chunk(usize::MAX, true).await.map_err(|e| e.to_string())?.map(|c| c.bytes))
    }
}

type Stopped = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// How long a closing rank waits for the next rank to acknowledge its last frames. The next rank
/// reads continuously, so this is normally milliseconds; the bound only matters when it is gone.
pub(crate) const CLOSE_ACK_WAIT: Duration = Duration::from_secs(2);

/// The outbound stream. Shutting it down finishes the stream and then waits (at most
/// [`CLOSE_ACK_WAIT`]) until the next rank has acknowledged all of it: closing earlier would drop
/// frames still in flight.
pub struct QuicSend {
    stream: SendStream,
    stopped: Option<Stopped>,
    _conn: Connection,
    _endpoint: Endpoint,
}

/// The most one write hands quinn. quinn copies each write into a buffer of its own of that
/// size; smaller pieces stay cache-sized and recycle through the allocator. Measured on loopback
/// (4 ranks, 64 MiB, alternating runs): 64 KiB pieces 0.35-0.41 GB/s busbw, whole 1 MiB chunks
/// 0.32-0.33.
const WRITE_PIECE: usize = 64 << 10;

/// quinn keeps the buffers `write_chunks` is given (it slices packets out of them and drops them
/// once acknowledged), so a staged sum goes out with no copy into quinn's own buffers: that copy
/// was 11 % of a loopback all-reduce's CPU (docs/BENCHMARKS.md, "CPU per byte").
impl crate::driver::FrameSink for QuicSend {
    fn takes_owned(&self) -> bool {
        true
    }

    async fn write_owned(&mut self, header: &[u8], payload: Vec<f32>) -> std::io::Result<()> {
        let mut chunks = vec![bytes::Bytes::copy_from_slice(header)];
        cut_into_pieces(le_payload(payload), &mut chunks);
        self.stream.write_all_chunks(&mut chunks).await.map_err(std::io::Error::other)
    }

    /// An all-gather value sent on in the pieces it arrived in (slices of quinn's receive
    /// buffers, which stay alive until these are acknowledged).
    async fn write_pieces(&mut self, header: &[u8], pieces: Vec<bytes::Bytes>) -> std::io::Result<()> {
        let mut chunks = vec![bytes::Bytes::copy_from_slice(header)];
        pieces.into_iter().for_each(|p| cut_into_pieces(p, &mut chunks));
        self.stream.write_all_chunks(&mut chunks).await.map_err(std::io::Error::other)
    }
}

/// `bytes` as slices of at most [`WRITE_PIECE`] bytes (no copy), appended to `out`.
fn cut_into_pieces(mut bytes: bytes::Bytes, out: &mut Vec<bytes::Bytes>) {
    while bytes.len() > WRITE_PIECE {
        out.push(bytes.split_to(WRITE_PIECE));
    }
    out.push(bytes);
}

/// `values` as little-endian bytes quinn can own: the vector itself on little-endian machines.
pub(crate) fn le_payload(values: Vec<f32>) -> bytes::Bytes {
    #[cfg(target_endian = "little")]
    {
        /// Owns the values and shows them as their bytes.
        struct LeValues(Vec<f32>);
        impl AsRef<[u8]> for LeValues {
            fn as_ref(&self) -> &[u8] {
                // SAFETY: f32 has no padding and u8 no alignment; the length is the values' size.
                unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), std::mem::size_of_val(&self.0[..])) }
            }
        }
        bytes::Bytes::from_owner(LeValues(values))
    }
    #[cfg(not(target_endian = "little"))]
    {
        bytes::Bytes::from(values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
    }
}

impl AsyncWrite for QuicSend {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let piece = &buf[..buf.len().min(WRITE_PIECE)];
        AsyncWrite::poll_write(Pin::new(&mut self.stream), cx, piece)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.stream), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.stopped.is_none() {
            let _ = self.stream.finish();
            let stopped = self.stream.stopped();
            let fut: Stopped = Box::pin(async move {
                let _ = tokio::time::timeout(CLOSE_ACK_WAIT, stopped).await;
            });
            self.stopped = Some(fut);
        }
        ready!(self.stopped.as_mut().expect("set above").as_mut().poll(cx));
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GSO batch never exceeds what one UDP send carries, at any MTU; loopback's 65000-byte
    /// datagrams go one per call.
    #[test]
    fn gso_batches_stay_within_one_udp_send() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _guard = rt.enter();
        let runtime = quinn::default_runtime().unwrap();
        for mtu in [1200u16, 1452, 6500, 8952, 65000] {
            let sock = runtime.wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
            let kernel = sock.max_transmit_segments();
            let capped = CappedGso::new(sock, mtu);
            let n = quinn::AsyncUdpSocket::max_transmit_segments(&capped);
            // At 65000 this leaves exactly one segment.
            assert!(n >= 1 && n <= kernel && n * mtu as usize <= MAX_GSO_BYTES, "mtu {mtu}: {n} segments (kernel {kernel})");
        }
    }
}
