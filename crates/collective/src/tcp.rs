//! The TCP driver: the ring over tokio TCP streams, authenticated by a shared cluster secret.
//!
//! Each rank listens on its own address, accepts one connection from the previous rank (frames
//! flow in) and connects to the next rank (frames flow out). Before any frame, each connection runs
//! a mutual HMAC-SHA256 challenge-response ([`handshake`]): both sides prove they hold the secret,
//! each proof is bound to a nonce the *other* side just drew, so a recorded handshake cannot be
//! replayed, and the ranks, generation, ring id and maximum frame size are checked to match.
//! No secret, no ring. A connection that fails the handshake is dropped and the listener keeps
//! waiting for the real peer until the connect timeout.
//!
//! The driver is three tokio tasks per rank: a reader (decodes and bounds headers, reads payloads,
//! forwards frames), a writer (writes frames in order), and the loop that owns the [`Ring`] —
//! shaped like quinn's `ConnectionDriver`: feed inbound frames, start requested operations, drain
//! sends to the writer, arm one timer, forward events to waiting callers. The writer's queue is
//! unbounded on purpose: what the ring queues is bounded by the operations in flight, and a bounded
//! queue here could deadlock a ring whose every rank waits to write.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::frame::{FrameHeader, HEADER_LEN};
use crate::{OpId, ReduceOp, Ring, RingConfig, RingError, RingEvent};

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

enum Request {
    Op {
        op: OpId,
        data: Vec<f32>,
        reduce: ReduceOp,
        reply: oneshot::Sender<Result<Vec<f32>, RingError>>,
    },
    /// Flush every queued frame to the socket, then stop.
    Close(oneshot::Sender<()>),
}

/// One rank's handle on a formed TCP ring.
pub struct TcpRing {
    requests: mpsc::UnboundedSender<Request>,
    next_op: u64,
}

impl TcpRing {
    /// Forms the ring: listen, accept the previous rank, connect to the next, authenticate both.
    pub async fn connect(cfg: TcpConfig) -> Result<TcpRing, TcpError> {
        if cfg.secret.len() < 16 {
            return Err(TcpError::Config("the cluster secret must be at least 16 bytes (RINGSAM_CLUSTER_SECRET / --secret-file)".into()));
        }
        let ring = Ring::new(cfg.ring);
        let (requests, reqs_rx) = mpsc::unbounded_channel();
        if cfg.ring.world == 1 {
            tokio::spawn(drive(ring, None, reqs_rx));
            return Ok(TcpRing { requests, next_op: 0 });
        }
        let listener =
            TcpListener::bind(cfg.listen).await.map_err(|source| TcpError::Io { what: format!("listening on {}", cfg.listen), source })?;
        Self::connect_with_listener(cfg, listener).await
    }

    /// Like [`TcpRing::connect`] on a listener the caller already bound (tests bind port 0).
    pub async fn connect_with_listener(cfg: TcpConfig, listener: TcpListener) -> Result<TcpRing, TcpError> {
        if cfg.secret.len() < 16 {
            return Err(TcpError::Config("the cluster secret must be at least 16 bytes (RINGSAM_CLUSTER_SECRET / --secret-file)".into()));
        }
        let ring = Ring::new(cfg.ring);
        let (requests, reqs_rx) = mpsc::unbounded_channel();
        let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
        let accept = accept_prev(&listener, &cfg);
        let connect = connect_next(&cfg, deadline);
        let (inbound, outbound) =
            tokio::time::timeout_at(deadline, async { tokio::try_join!(accept, connect) }).await.map_err(|_| {
                TcpError::Timeout(
                    cfg.connect_timeout,
                    format!("rank {} could not authenticate both neighbours (next: {})", cfg.ring.rank, cfg.next),
                )
            })??;
        tokio::spawn(drive(ring, Some((inbound, outbound)), reqs_rx));
        Ok(TcpRing { requests, next_op: 0 })
    }

    /// All-reduces `data`; every rank must call this in the same order.
    pub async fn allreduce(&mut self, data: Vec<f32>, reduce: ReduceOp) -> Result<Vec<f32>, RingError> {
        let op = OpId(self.next_op);
        self.next_op += 1;
        let (reply, rx) = oneshot::channel();
        let gone = || RingError::Usage("the ring's driver has stopped".into());
        self.requests.send(Request::Op { op, data, reduce, reply }).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Closes this rank's side cleanly: frames already queued for the next rank are written
    /// first. Call it before exiting, or the next rank may miss the last frames it needs (a
    /// finished operation can still have frames on their way out).
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn accept_prev(listener: &TcpListener, cfg: &TcpConfig) -> Result<TcpStream, TcpError> {
    loop {
        let (mut s, addr) =
            listener.accept().await.map_err(|source| TcpError::Io { what: "accepting the previous rank".into(), source })?;
        let _ = s.set_nodelay(true);
        match tokio::time::timeout(Duration::from_secs(5), handshake::server(&mut s, cfg)).await {
            Ok(Ok(())) => return Ok(s),
            // A stranger or a misconfigured peer must not stop the real one from joining.
            Ok(Err(_)) | Err(_) => drop((s, addr)),
        }
    }
}

async fn connect_next(cfg: &TcpConfig, deadline: tokio::time::Instant) -> Result<TcpStream, TcpError> {
    loop {
        match TcpStream::connect(cfg.next).await {
            Ok(mut s) => {
                let _ = s.set_nodelay(true);
                handshake::client(&mut s, cfg).await?;
                return Ok(s);
            }
            Err(e) if tokio::time::Instant::now() + Duration::from_millis(50) < deadline => {
                let _ = e; // the next rank is not listening yet
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(source) => return Err(TcpError::Io { what: format!("connecting to the next rank at {}", cfg.next), source }),
        }
    }
}

enum Inbound {
    Frame(FrameHeader, Vec<u8>),
    Closed(String),
}

/// The loop that owns the ring (see the module docs).
async fn drive(mut ring: Ring, links: Option<(TcpStream, TcpStream)>, mut reqs: mpsc::UnboundedReceiver<Request>) {
    let (prev, next) = ring.neighbors();
    let (frames_tx, mut frames_rx) = mpsc::unbounded_channel::<Inbound>();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (werr_tx, mut werr_rx) = mpsc::unbounded_channel::<String>();
    // Buffers travel back to where they are filled, so steady state allocates nothing per frame.
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Vec<u8>>(); // writer → loop
    let (used_tx, mut used_rx) = mpsc::unbounded_channel::<Vec<u8>>(); // loop → reader
    let mut writer = None;
    if let Some((inbound, outbound)) = links {
        let max = ring.config().max_payload();
        let (mut rd, _) = inbound.into_split();
        let (_, mut wr) = outbound.into_split();
        tokio::spawn(async move {
            let mut hdr = [0u8; HEADER_LEN];
            loop {
                let why = match rd.read_exact(&mut hdr).await {
                    Err(e) => e.to_string(),
                    Ok(_) => match FrameHeader::decode(&hdr, max) {
                        Err(e) => e.to_string(),
                        Ok(h) => {
                            let mut payload = used_rx.try_recv().unwrap_or_default();
                            payload.clear();
                            payload.resize(h.len as usize, 0); // bounded by `max` above
                            match rd.read_exact(&mut payload).await {
                                Ok(_) => {
                                    if frames_tx.send(Inbound::Frame(h, payload)).is_err() {
                                        return;
                                    }
                                    continue;
                                }
                                Err(e) => e.to_string(),
                            }
                        }
                    },
                };
                let _ = frames_tx.send(Inbound::Closed(why));
                return;
            }
        });
        writer = Some(tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if let Err(e) = wr.write_all(&frame).await {
                    let _ = werr_tx.send(e.to_string());
                    return;
                }
                let _ = sent_tx.send(frame);
            }
            let _ = wr.shutdown().await; // every frame is out: tell the next rank we are done
        }));
    }
    let mut waiters: HashMap<OpId, oneshot::Sender<Result<Vec<f32>, RingError>>> = HashMap::new();
    let mut inbound_open = true;
    let mut buf = Vec::new();
    loop {
        while ring.poll_send(&mut buf).is_some() {
            let _ = out_tx.send(std::mem::replace(&mut buf, sent_rx.try_recv().unwrap_or_default()));
        }
        while let Some(e) = ring.poll_event() {
            match e {
                RingEvent::OpDone(op) => {
                    if let (Some(w), Some(r)) = (waiters.remove(&op), ring.take_result(op)) {
                        let _ = w.send(Ok(r));
                    }
                }
                RingEvent::OpFailed(op, err) => {
                    if let Some(w) = waiters.remove(&op) {
                        let _ = w.send(Err(err));
                    }
                }
                RingEvent::PeerLost(_) => {}
            }
        }
        let deadline = ring.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            req = reqs.recv() => match req {
                Some(Request::Op { op, data, reduce, reply }) => match ring.start(Instant::now(), op, data, reduce) {
                    Ok(()) => { waiters.insert(op, reply); }
                    Err(e) => { let _ = reply.send(Err(e)); }
                },
                Some(Request::Close(done)) => {
                    drop(out_tx); // the writer drains what is queued, then shuts the socket down
                    if let Some(w) = writer.take() {
                        let _ = w.await;
                    }
                    let _ = done.send(());
                    return;
                }
                None => return, // every handle is gone
            },
            f = frames_rx.recv(), if inbound_open => match f {
                Some(Inbound::Frame(h, p)) => {
                    let _ = ring.handle_frame(Instant::now(), h, &p);
                    let _ = used_tx.send(p);
                }
                Some(Inbound::Closed(why)) => { inbound_open = false; ring.handle_link_down(prev, &why); }
                None => { inbound_open = false; ring.handle_link_down(prev, "reader stopped"); }
            },
            Some(why) = werr_rx.recv() => ring.handle_link_down(next, &why),
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                ring.handle_timeout(Instant::now());
            }
        }
    }
}

/// The mutual challenge-response run on every connection before frames flow.
pub mod handshake {
    use super::*;

    const HELLO_MAGIC: &[u8; 8] = b"RSAMHELO";
    const CHALLENGE_MAGIC: &[u8; 8] = b"RSAMCHAL";
    const VERSION: u32 = 1;
    /// Bytes of the client's hello.
    pub const HELLO_LEN: usize = 8 + 4 + 4 + 4 + 2 + 2 + 4 + 32;

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

    fn mac(secret: &[u8], role: &[u8], hello: &[u8], server_nonce: &[u8]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        m.update(b"ringsam-tcp-v1 ");
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

    /// The connecting side (this rank → its next).
    pub async fn client(s: &mut TcpStream, cfg: &TcpConfig) -> Result<(), TcpError> {
        let hello = hello(cfg, &nonce());
        s.write_all(&hello).await.map_err(|e| io(s, e))?;
        let mut chal = [0u8; 72];
        s.read_exact(&mut chal).await.map_err(|e| io(s, e))?;
        if &chal[..8] != CHALLENGE_MAGIC {
            return Err(err(s, "the peer is not a ringsam rank (bad challenge)"));
        }
        let server_nonce = &chal[8..40];
        mac(&cfg.secret, b"server", &hello, server_nonce)
            .verify_slice(&chal[40..72])
            .map_err(|_| err(s, "the peer does not hold the cluster secret"))?;
        let proof = mac(&cfg.secret, b"client", &hello, server_nonce).finalize().into_bytes();
        s.write_all(&proof).await.map_err(|e| io(s, e))?;
        let mut ok = [0u8; 1];
        s.read_exact(&mut ok)
            .await
            .map_err(|_| err(s, "the peer rejected our handshake (wrong secret, rank, generation or frame size)"))?;
        if ok[0] != 1 {
            return Err(err(s, "the peer rejected our handshake"));
        }
        Ok(())
    }

    /// The accepting side (the previous rank → this rank).
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
        let mut chal = [0u8; 72];
        chal[..8].copy_from_slice(CHALLENGE_MAGIC);
        chal[8..40].copy_from_slice(&server_nonce);
        chal[40..72].copy_from_slice(&mac(&cfg.secret, b"server", &hello, &server_nonce).finalize().into_bytes());
        s.write_all(&chal).await.map_err(|e| io(s, e))?;
        let mut proof = [0u8; 32];
        s.read_exact(&mut proof).await.map_err(|e| io(s, e))?;
        mac(&cfg.secret, b"client", &hello, &server_nonce)
            .verify_slice(&proof)
            .map_err(|_| err(s, "the peer does not hold the cluster secret (or replayed an old handshake)"))?;
        s.write_all(&[1]).await.map_err(|e| io(s, e))?;
        Ok(())
    }
}
