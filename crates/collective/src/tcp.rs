//! The TCP driver: the ring over tokio TCP streams, authenticated by a shared cluster secret.
//!
//! Each rank listens on its own address, accepts one connection from the previous rank (frames
//! flow in) and connects to the next rank (frames flow out); a neighbour in the same process is
//! met over a pipe instead ([`crate::local_link`]), and a rank whose previous rank is one listens
//! on nothing. Before any frame, each connection runs
//! a mutual HMAC-SHA256 challenge-response ([`handshake`]): both sides prove they hold the secret,
//! each proof is bound to a nonce the *other* side just drew, so a recorded handshake cannot be
//! replayed, and the ranks, generation, ring id and maximum frame size are checked to match. The
//! connecting side proves first: a stranger who connects to a rank's port receives only a random
//! nonce, nothing keyed by the secret it could test guesses against offline. (Someone has to go
//! first; the connecting side reached an address it chose, the listening side takes anyone.)
//! Secrets must carry at least 128 bits ([`check_secret`]).
//! No secret, no ring. A connection that fails the handshake is dropped and the listener keeps
//! waiting for the real peer until the connect timeout.
//!
//! Trust model: the handshake authenticates who connected; the frames that follow are neither
//! encrypted nor MACed, so TCP rings are for networks where the path itself is trusted (a
//! cluster's private network). Use QUIC (TLS 1.3) where it is not.
//!
//! Once both connections are authenticated, [`crate::driver`] runs the ring over them.

use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::driver::{self, RingHandle};
use crate::either_link::Either;
use crate::local_link::{InProcess, PipeReader, PipeWriter};
use crate::{Ring, RingConfig};

type HmacSha256 = Hmac<Sha256>;

/// How a rank joins a TCP ring.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Ring parameters (rank, world, chunk, generation, timeouts).
    pub ring: RingConfig,
    /// Address this rank listens on.
    pub listen: SocketAddr,
    /// Address of the next rank.
    pub next: SocketAddr,
    /// The cluster secret (at least 16 bytes).
    pub secret: Vec<u8>,
    /// How long to keep trying to form the ring.
    pub connect_timeout: Duration,
    /// Where refused connections are reported (none: they are dropped silently).
    pub on_refusal: Option<crate::transport::Refusals>,
}

/// Why a TCP ring could not be formed.
#[derive(Debug, thiserror::Error)]
pub enum TcpError {
    /// Socket trouble.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The peer failed authentication or disagrees on the ring's parameters.
    #[error("handshake with {peer}: {why}")]
    Handshake {
        /// Peer address.
        peer: String,
        /// What failed.
        why: String,
    },
    /// The ring did not form in time.
    #[error("ring not formed within {0:?}: {1}")]
    Timeout(Duration, String),
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
}

/// Forms the ring: listen, accept the previous rank, connect to the next, authenticate both.
pub async fn connect(cfg: TcpConfig) -> Result<RingHandle, TcpError> {
    connect_beside(cfg, None).await
}

/// [`connect`], meeting the neighbours that live in this process over pipes
/// ([`crate::local_link`]); nothing listens when the previous rank is one of them.
pub async fn connect_beside(cfg: TcpConfig, local: Option<&InProcess>) -> Result<RingHandle, TcpError> {
    let listener = if cfg.ring.world == 1 || local.is_some_and(|l| l.prev) {
        None
    } else {
        Some(TcpListener::bind(cfg.listen).await.map_err(|source| TcpError::Io { what: format!("listening on {}", cfg.listen), source })?)
    };
    form(cfg, listener, local).await
}

/// Like [`connect`] on a listener the caller already bound (tests bind port 0).
pub async fn connect_with_listener(cfg: TcpConfig, listener: TcpListener) -> Result<RingHandle, TcpError> {
    form(cfg, Some(listener), None).await
}

/// Either kind of inbound stream, and of outbound.
type Inbound = Either<PipeReader, tokio::net::tcp::OwnedReadHalf>;
type Outbound = Either<PipeWriter, tokio::net::tcp::OwnedWriteHalf>;

async fn form(cfg: TcpConfig, listener: Option<TcpListener>, local: Option<&InProcess>) -> Result<RingHandle, TcpError> {
    check_secret(&cfg.secret).map_err(TcpError::Config)?;
    let ring = Ring::new(cfg.ring);
    if cfg.ring.world == 1 {
        return Ok(driver::spawn::<driver::ByteFrames<Inbound>, Outbound>(ring, None));
    }
    let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
    let accept = async {
        if let Some(l) = local.filter(|l| l.prev) {
            let pipe = l.links.receive_from_prev(&cfg.ring).await;
            return pipe.map(Either::Pipe).map_err(|why| TcpError::Handshake { peer: "the previous rank, in this process".into(), why });
        }
        let listener = listener.as_ref().ok_or_else(|| TcpError::Config("no listener for the previous rank".into()))?;
        Ok(Either::Net(accept_prev(listener, &cfg).await?.into_split().0))
    };
    let connect = async {
        match local.filter(|l| l.next) {
            Some(l) => l
                .links
                .send_to_next(&cfg.ring)
                .await
                .map(Either::Pipe)
                .map_err(|why| TcpError::Handshake { peer: "the next rank, in this process".into(), why }),
            None => Ok(Either::Net(connect_next(&cfg, deadline).await?.into_split().1)),
        }
    };
    let (inbound, outbound): (Inbound, Outbound) =
        tokio::time::timeout_at(deadline, async { tokio::try_join!(accept, connect) }).await.map_err(|_| {
            let prev = if local.is_some_and(|l| l.prev) { "in this process".to_string() } else { format!("listening on {}", cfg.listen) };
            let next = if local.is_some_and(|l| l.next) { "in this process".to_string() } else { cfg.next.to_string() };
            TcpError::Timeout(
                cfg.connect_timeout,
                format!("rank {} could not meet both neighbours (previous: {prev}; next: {next})", cfg.ring.rank),
            )
        })??;
    Ok(driver::spawn(ring, Some((vec![driver::ByteFrames(inbound)], vec![outbound]))))
}

/// Handshakes a listening rank runs at once. Each connection gets its own task, so a stranger
/// who connects and says nothing delays no one; past this many, a new connection ends the oldest
/// pending one (the real previous rank is a new connection, and retries anyway).
pub const MAX_PENDING_HANDSHAKES: usize = 32;

/// How long a connection may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

async fn accept_prev(listener: &TcpListener, cfg: &TcpConfig) -> Result<TcpStream, TcpError> {
    let mut pending = tokio::task::JoinSet::new();
    let mut order = std::collections::VecDeque::new(); // oldest first
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (mut s, peer) = accepted.map_err(|source| TcpError::Io { what: "accepting the previous rank".into(), source })?;
                let _ = s.set_nodelay(true);
                if pending.len() >= MAX_PENDING_HANDSHAKES
                    && let Some(oldest) = order.pop_front()
                {
                    tokio::task::AbortHandle::abort(&oldest);
                }
                let cfg = cfg.clone();
                order.push_back(pending.spawn(async move {
                    let why = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake::server(&mut s, &cfg)).await {
                        Ok(Ok(())) => return Some(s),
                        // A stranger or a misconfigured peer must not stop the real one joining.
                        Ok(Err(TcpError::Handshake { why, .. })) => why,
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
                    };
                    if let Some(r) = &cfg.on_refusal {
                        r.report(peer, &why);
                    }
                    None
                }));
                order.retain(|h: &tokio::task::AbortHandle| !h.is_finished());
            }
            Some(done) = pending.join_next(), if !pending.is_empty() => {
                if let Ok(Some(s)) = done {
                    pending.abort_all();
                    return Ok(s);
                }
            }
        }
    }
}

async fn connect_next(cfg: &TcpConfig, deadline: tokio::time::Instant) -> Result<TcpStream, TcpError> {
    loop {
        match TcpStream::connect(cfg.next).await {
            Ok(mut s) => {
                let _ = s.set_nodelay(true);
                match handshake::client(&mut s, cfg).await {
                    Ok(()) => return Ok(s),
                    // The next rank may have hung up on us (say it was not listening for us yet,
                    // or a stranger holds its port): retry until the deadline, then report why.
                    Err(e) if tokio::time::Instant::now() + Duration::from_millis(100) < deadline => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) if tokio::time::Instant::now() + Duration::from_millis(50) < deadline => {
                let _ = e; // the next rank is not listening yet
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(source) => return Err(TcpError::Io { what: format!("connecting to the next rank at {}", cfg.next), source }),
        }
    }
}

/// Secrets shorter than this many bits of (estimated) entropy are refused.
pub const MIN_SECRET_BITS: f64 = 128.0;

/// Refuses a secret with less than [`MIN_SECRET_BITS`]: its length times the bits per character
/// of the smallest alphabet it is written in (hex 4, base64 6, other printable text ~6.6 —
/// generous for a passphrase, so 22 random base64 or 32 hex characters are the floor).
pub fn check_secret(secret: &[u8]) -> Result<(), String> {
    let b64 = |c: &u8| c.is_ascii_alphanumeric() || b"+/=-_".contains(c);
    let bits_per_char = if secret.iter().all(u8::is_ascii_hexdigit) {
        4.0
    } else if secret.iter().all(b64) {
        6.0
    } else {
        95f64.log2()
    };
    let bits = secret.len() as f64 * bits_per_char;
    if bits < MIN_SECRET_BITS {
        return Err(format!(
            "the cluster secret carries about {bits:.0} bits, fewer than {MIN_SECRET_BITS}: use at least 32 hex or 22 base64 characters (`ringsam certs --secret` prints one)"
        ));
    }
    Ok(())
}

/// A random cluster secret: 256 bits as 64 hex digits.
pub fn fresh_secret() -> std::io::Result<String> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| std::io::Error::other(format!("drawing a cluster secret: {e}")))?;
    Ok(secret.iter().map(|b| format!("{b:02x}")).collect())
}

/// The mutual challenge-response run on every connection before frames flow:
/// 1. client → server: hello (magic, version, rank, generation, ring id, frame size, client
///    nonce); the server checks the fields;
/// 2. server → client: challenge (magic, server nonce) — nothing keyed by the secret;
/// 3. client → server: `HMAC(secret, "client" ‖ hello ‖ server nonce)`; the server verifies it;
/// 4. server → client: `HMAC(secret, "server" ‖ hello ‖ server nonce)`, bound to the client's
///    nonce through the hello; the client verifies it.
pub mod handshake {
    use super::*;

    const HELLO_MAGIC: &[u8; 8] = b"RSAMHELO";
    const CHALLENGE_MAGIC: &[u8; 8] = b"RSAMCHAL";
    const VERSION: u32 = 2;
    /// Bytes of the client's hello.
    pub const HELLO_LEN: usize = 8 + 4 + 4 + 4 + 2 + 2 + 4 + 32;
    /// Bytes of the server's challenge.
    pub const CHALLENGE_LEN: usize = 8 + 32;

    fn hello(cfg: &TcpConfig, nonce: &[u8; 32]) -> [u8; HELLO_LEN] {
        let mut h = [0u8; HELLO_LEN];
        h[..8].copy_from_slice(HELLO_MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(cfg.ring.rank as u32).to_le_bytes());
        h[16..20].copy_from_slice(&cfg.ring.generation.to_le_bytes());
        h[20..22].copy_from_slice(&cfg.ring.ring_id.to_le_bytes());
        h[24..28].copy_from_slice(&cfg.ring.max_payload().to_le_bytes());
        h[28..60].copy_from_slice(nonce);
        h
    }

    /// The proof a `role` sends: keyed by the secret, over both nonces (the client's is in `hello`).
    fn mac(secret: &[u8], role: &[u8], hello: &[u8], server_nonce: &[u8]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        m.update(b"ringsam-tcp-v2 ");
        m.update(role);
        m.update(hello);
        m.update(server_nonce);
        m
    }

    fn nonce() -> [u8; 32] {
        let mut n = [0u8; 32];
        getrandom::getrandom(&mut n).expect("the OS random source is available");
        n
    }

    fn err(s: &TcpStream, why: impl Into<String>) -> TcpError {
        TcpError::Handshake { peer: s.peer_addr().map_or("?".into(), |a| a.to_string()), why: why.into() }
    }

    fn io(s: &TcpStream, e: std::io::Error) -> TcpError {
        err(s, format!("connection failed during the handshake: {e}"))
    }

    /// The connecting side (this rank → its next): proves first, then checks the server's proof.
    pub async fn client(s: &mut TcpStream, cfg: &TcpConfig) -> Result<(), TcpError> {
        let hello = hello(cfg, &nonce());
        s.write_all(&hello).await.map_err(|e| io(s, e))?;
        let mut chal = [0u8; CHALLENGE_LEN];
        s.read_exact(&mut chal).await.map_err(|e| io(s, e))?;
        if &chal[..8] != CHALLENGE_MAGIC {
            return Err(err(s, "the peer is not a ringsam rank of this version (bad challenge)"));
        }
        let server_nonce = &chal[8..40];
        let proof = mac(&cfg.secret, b"client", &hello, server_nonce).finalize().into_bytes();
        s.write_all(&proof).await.map_err(|e| io(s, e))?;
        let mut server_proof = [0u8; 32];
        s.read_exact(&mut server_proof)
            .await
            .map_err(|_| err(s, "the peer rejected our handshake (wrong secret, rank, generation or frame size)"))?;
        mac(&cfg.secret, b"server", &hello, server_nonce)
            .verify_slice(&server_proof)
            .map_err(|_| err(s, "the peer does not hold the cluster secret"))
    }

    /// The accepting side (the previous rank → this rank): checks the hello, sends a nonce,
    /// verifies the client's proof, and only then proves itself.
    pub async fn server(s: &mut TcpStream, cfg: &TcpConfig) -> Result<(), TcpError> {
        let mut hello = [0u8; HELLO_LEN];
        s.read_exact(&mut hello).await.map_err(|e| io(s, e))?;
        if &hello[..8] != HELLO_MAGIC {
            return Err(err(s, "not a ringsam hello"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(hello[i..i + 4].try_into().expect("4 bytes"));
        let (prev, _) = crate::schedule::ring_neighbors(cfg.ring.rank, cfg.ring.world);
        let checks = [
            (u32_at(8) == VERSION, "protocol version"),
            (u32_at(12) as usize == prev, "rank (not our previous rank)"),
            (u32_at(16) == cfg.ring.generation, "generation"),
            (u16::from_le_bytes([hello[20], hello[21]]) == cfg.ring.ring_id, "ring id"),
            (u32_at(24) == cfg.ring.max_payload(), "maximum frame size (chunk)"),
        ];
        if let Some((_, what)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(err(s, format!("mismatched {what}")));
        }
        let server_nonce = nonce();
        let mut chal = [0u8; CHALLENGE_LEN];
        chal[..8].copy_from_slice(CHALLENGE_MAGIC);
        chal[8..40].copy_from_slice(&server_nonce);
        s.write_all(&chal).await.map_err(|e| io(s, e))?;
        let mut proof = [0u8; 32];
        s.read_exact(&mut proof).await.map_err(|e| io(s, e))?;
        mac(&cfg.secret, b"client", &hello, &server_nonce)
            .verify_slice(&proof)
            .map_err(|_| err(s, "the peer does not hold the cluster secret (or replayed an old handshake)"))?;
        let server_proof = mac(&cfg.secret, b"server", &hello, &server_nonce).finalize().into_bytes();
        s.write_all(&server_proof).await.map_err(|e| io(s, e))
    }
}
