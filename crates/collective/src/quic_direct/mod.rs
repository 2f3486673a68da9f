//! The ring over QUIC without quinn's async layer (`--quic_driver direct`): each rank runs two
//! link threads, one per neighbour, and each owns a quinn-proto endpoint, its UDP socket and its
//! one connection. They hand the ring's driver ([`crate::driver`]) whole frames' chunks through
//! a queue each way, where quinn's async layer hands each datagram from the endpoint task to the
//! connection task, copies it out of the socket's batch buffer, and wakes a task for it.
//!
//! Why: measured on loopback, quinn-proto itself (AEAD, packetising, acknowledgements) costs
//! 0.4–0.5 ns per byte per hop at 65000-byte datagrams, while the ring over quinn paid about
//! twice TCP's CPU per byte on the VM of that measurement; the difference was quinn's async
//! layer (docs/BENCHMARKS.md, "What any QUIC ring pays"). Where per-datagram work dominates
//! (Ethernet's MTU) this driver moves 1.3–1.6× quinn's busbw ("The direct QUIC driver"). Two
//! threads instead of one also put a rank's encryption (outbound) and decryption (inbound) on
//! different cores.
//!
//! Same wire, same trust as [`crate::quic`]: mutual TLS 1.3 against the cluster CA, the same
//! hello, the same frames, so either driver's rank can be the other's neighbour. One connection
//! per neighbour (no stripes: the two threads already spread the crypto). Linux only (eventfd,
//! ppoll).

mod bell;
mod inbound;
mod node;
mod outbound;
mod queues;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::Ring;
use crate::chunk_frames::ChunkFrames;
use crate::driver::{self, ByteFrames, RingHandle};
use crate::either_link::Either;
use crate::local_link::{InProcess, PipeReader, PipeWriter};
use crate::quic::{QuicConfig, QuicError, QuicLinks, QuinnConfigs, bind_udp, hello, pipe_from_prev, pipe_to_next, quinn_configs};
use bell::Bell;
use node::Node;
use queues::{DirectRecv, DirectSend, Incoming, Outgoing};

/// Statistics of a link thread's connection, refreshed by the thread.
pub(crate) type SharedStats = Arc<Mutex<Option<quinn_proto::ConnectionStats>>>;

/// Datagrams one `recvmmsg` may return on the inbound link (the data) and the outbound one (its
/// acknowledgements); each slot holds a 128 KiB arena.
const INBOUND_SLOTS: usize = 16;
const OUTBOUND_SLOTS: usize = 4;

type Inbound = Either<ByteFrames<PipeReader>, ChunkFrames<DirectRecv>>;
type Outbound = Either<PipeWriter, DirectSend>;

/// [`crate::quic::connect_beside`] with link threads; a ring of more than one rank.
pub(crate) async fn connect_beside(cfg: QuicConfig, local: Option<&InProcess>) -> Result<(RingHandle, Option<QuicLinks>), QuicError> {
    if cfg.tuning.stripes != 1 {
        return Err(QuicError::Config(
            "the direct QUIC driver runs one connection per neighbour: --quic_stripes 1, or --quic_driver quinn".into(),
        ));
    }
    let ring = Ring::new(cfg.ring);
    let (pipe_in, pipe_out) = (local.filter(|l| l.prev), local.filter(|l| l.next));
    let q = quinn_configs(&cfg)?;
    let accept = async {
        match pipe_in {
            Some(l) => pipe_from_prev(l, &cfg.ring).await.map(|p| Either::Pipe(ByteFrames(p))),
            None => start_inbound(&cfg, &q).await.map(|r| Either::Net(ChunkFrames::new(r))),
        }
    };
    let connect = async {
        match pipe_out {
            Some(l) => pipe_to_next(l, &cfg.ring).await.map(|p| (Either::Pipe(p), None)),
            None => start_outbound(&cfg, &q).await.map(|(s, stats)| (Either::Net(s), Some(stats))),
        }
    };
    let (inbound, (outbound, stats)): (Inbound, (Outbound, Option<SharedStats>)) =
        tokio::time::timeout(cfg.connect_timeout, async { tokio::try_join!(accept, connect) })
            .await
            .map_err(|_| QuicError::Timeout(cfg.connect_timeout))??;
    let links = QuicLinks { outbound: stats.into_iter().map(crate::quic::LinkStats::Direct).collect() };
    Ok((driver::spawn(ring, Some((vec![inbound], vec![outbound]))), Some(links)))
}

fn thread_err(e: std::io::Error) -> QuicError {
    QuicError::Config(format!("starting a QUIC link thread: {e}"))
}

/// Listens for the previous rank on a thread of its own; returns once it has greeted it.
async fn start_inbound(cfg: &QuicConfig, q: &QuinnConfigs) -> Result<DirectRecv, QuicError> {
    let socket = bind_udp(cfg.listen, cfg.tuning.udp_buffer)?;
    let node = Node::new(socket, q.endpoint.clone(), Some(q.server.clone()), q.mtu_bound, INBOUND_SLOTS, cfg.on_refusal.clone())
        .map_err(|e| QuicError::Connect { what: format!("opening UDP {}", cfg.listen), why: e.to_string() })?;
    let inc = Incoming::new(Arc::new(Bell::new().map_err(thread_err)?));
    // Made before the wait: if formation is given up, dropping it stops the thread.
    let recv = DirectRecv::new(inc.clone());
    let (formed, is_formed) = oneshot::channel();
    let (prev, _) = crate::schedule::ring_neighbors(cfg.ring.rank, cfg.ring.world);
    let mut want_hello = hello(&cfg.ring, 1, 0);
    want_hello[4..8].copy_from_slice(&(prev as u32).to_le_bytes());
    let link = inbound::Inbound { node, want_hello, inc, formed: Some(formed) };
    std::thread::Builder::new().name(format!("quic-in-{}", cfg.ring.rank)).spawn(move || link.run()).map_err(thread_err)?;
    is_formed
        .await
        .map_err(|_| QuicError::Connect { what: "accepting the previous rank".into(), why: "the link thread stopped".into() })?;
    Ok(recv)
}

/// Connects to the next rank on a thread of its own; returns once the stream is open.
async fn start_outbound(cfg: &QuicConfig, q: &QuinnConfigs) -> Result<(DirectSend, SharedStats), QuicError> {
    // Any free port of the listen address, as a client binds: the datagrams still leave from the
    // interface the peers know.
    let socket = bind_udp(SocketAddr::new(cfg.listen.ip(), 0), cfg.tuning.udp_buffer)?;
    let node = Node::new(socket, q.endpoint.clone(), None, q.mtu_bound, OUTBOUND_SLOTS, None)
        .map_err(|e| QuicError::Connect { what: format!("opening UDP on {}", cfg.listen.ip()), why: e.to_string() })?;
    let out = Outgoing::new(Arc::new(Bell::new().map_err(thread_err)?));
    let send = DirectSend { out: out.clone() };
    let stats = SharedStats::default();
    let (formed, is_formed) = oneshot::channel();
    let link = outbound::Outbound {
        node,
        client: q.client.clone(),
        next: cfg.next,
        hello: hello(&cfg.ring, 1, 0),
        out,
        formed: Some(formed),
        deadline: Instant::now() + cfg.connect_timeout,
        stats: stats.clone(),
    };
    std::thread::Builder::new().name(format!("quic-out-{}", cfg.ring.rank)).spawn(move || link.run()).map_err(thread_err)?;
    match is_formed.await {
        Ok(Ok(())) => Ok((send, stats)),
        Ok(Err(why)) => Err(QuicError::Connect { what: format!("connecting to the next rank at {}", cfg.next), why }),
        Err(_) => {
            Err(QuicError::Connect { what: format!("connecting to the next rank at {}", cfg.next), why: "the link thread stopped".into() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RingConfig;
    use crate::certs::ClusterCa;
    use crate::chunk_frames::ChunkSource;
    use crate::quic::{QuicDriver, QuicTuning};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;

    /// The stream and connection windows of [`config`].
    const WINDOW: usize = 16 << 20;
    /// What the previous rank sends: over the inbound queue's limit, so the thread stops reading;
    /// within the credit the sender has then (the limit, plus the window less the eighth of it
    /// quinn-proto may still owe as an update), so the whole stream is sent and acknowledged.
    const SENT: usize = 20 << 20;
    const _: () = assert!(queues::INBOUND_LIMIT < SENT && SENT <= queues::INBOUND_LIMIT + WINDOW - WINDOW / 8);

    /// Rank `rank`'s config in a ring of two on loopback, with [`WINDOW`]s.
    fn config(rank: usize, addrs: &[SocketAddr], ca: &ClusterCa) -> QuicConfig {
        let (cert, key) = ca.node(&format!("node-{rank}")).unwrap();
        QuicConfig {
            ring: RingConfig::new(rank, 2),
            listen: addrs[rank],
            next: addrs[1 - rank],
            ca: ca.cert_der(),
            cert_chain: vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            key: PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            connect_timeout: Duration::from_secs(10),
            tuning: QuicTuning {
                stream_window: WINDOW as u32,
                conn_window: WINDOW as u32,
                driver: QuicDriver::Direct,
                ..Default::default()
            },
            on_refusal: None,
        }
    }

    /// The previous rank sends more than the inbound queue holds, finishes its stream and closes
    /// its connection while this rank's reader takes nothing: the inbound thread stops reading at
    /// the limit, quinn-proto holds the rest (acknowledged, so the sender's close completes), and
    /// once the connection is gone the thread must read that rest before it goes with the
    /// connection. Every byte arrives, in order, then a clean end.
    #[test]
    fn bytes_held_while_throttled_survive_the_previous_ranks_close() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let ca = ClusterCa::generate().unwrap();
            // Both held while their ports are read, so the two cannot be the same port.
            let held: Vec<std::net::UdpSocket> = (0..2).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
            let addrs: Vec<SocketAddr> = held.iter().map(|s| s.local_addr().unwrap()).collect();
            drop(held);
            let (prev, this) = (config(0, &addrs, &ca), config(1, &addrs, &ca));
            let (q_prev, q_this) = (quinn_configs(&prev).unwrap(), quinn_configs(&this).unwrap());
            let (mut recv, (mut send, _)) = tokio::try_join!(start_inbound(&this, &q_this), start_outbound(&prev, &q_prev)).unwrap();

            let sent: Vec<u8> = (0..SENT).map(|i| (i % 251) as u8).collect();
            for piece in sent.chunks(1 << 20) {
                send.write_all(piece).await.unwrap();
            }
            // Returns once the next rank's quinn-proto acknowledged every byte, and the thread then
            // closes the connection; or after CLOSE_ACK_WAIT (2 s) without that, closing anyway. On
            // a machine too loaded to move 20 MiB in 2 s the reads below then fail with "the
            // previous rank's connection was lost": the wait, not the code under test.
            send.shutdown().await.unwrap();
            drop(send);
            // The thread hands over the rest and the stream's end with no reader taking any.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !recv.inc.ended() {
                assert!(std::time::Instant::now() < deadline, "the stream's end never came: what quinn-proto held was left unread");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }

            let mut got = Vec::with_capacity(sent.len());
            while let Some(chunk) = recv.next_chunk().await.unwrap() {
                got.extend_from_slice(&chunk);
            }
            assert_eq!(got.len(), sent.len());
            assert!(got == sent, "the bytes arrived changed or out of order");
        });
    }
}
