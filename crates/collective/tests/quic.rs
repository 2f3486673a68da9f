//! The QUIC driver on loopback: correctness, and certificates from the wrong CA rejected.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use ringsam_collective::certs::ClusterCa;
use ringsam_collective::quic::{QuicConfig, connect};
use ringsam_collective::{ReduceOp, RingConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn free_udp_addrs(n: usize) -> Vec<SocketAddr> {
    let socks: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    socks.iter().map(|s| s.local_addr().unwrap()).collect()
}

fn cfg(rank: usize, world: usize, addrs: &[SocketAddr], ca: &ClusterCa, signer: &ClusterCa, timeout: Duration) -> QuicConfig {
    let (cert, key) = signer.node(&format!("node-{rank}")).unwrap();
    QuicConfig {
        ring: RingConfig { chunk: 4096, peer_timeout: timeout, ..RingConfig::new(rank, world) },
        listen: addrs[rank],
        next: addrs[(rank + 1) % world],
        ca: ca.cert_der(),
        cert_chain: vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
        key: PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        connect_timeout: timeout,
        tuning: ringsam_collective::quic::QuicTuning { stream_window: 16 << 20, ..Default::default() },
        on_refusal: None,
    }
}

/// Where a rank's refusals go, and the list they are written to (the reasons, in order).
fn refusal_log() -> (std::sync::Arc<std::sync::Mutex<Vec<String>>>, ringsam_collective::transport::Refusals) {
    let heard: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let sink = heard.clone();
    (heard, ringsam_collective::transport::Refusals(std::sync::Arc::new(move |_, why| sink.lock().unwrap().push(why.into()))))
}

/// Forms a ring from one config per rank, all connecting at once.
async fn form(cfgs: Vec<QuicConfig>) -> Vec<ringsam_collective::RingHandle> {
    let joins: Vec<_> = cfgs.into_iter().map(|c| tokio::spawn(connect(c))).collect();
    let mut rings = Vec::new();
    for j in joins {
        rings.push(j.await.unwrap().unwrap());
    }
    rings
}

/// Also: ranks whose TLS runs on different libraries and offers different ciphers first, and
/// whose connections different drivers run, still form one ring (each link negotiates a suite
/// both sides have; the wire is the same for both drivers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ranks_all_reduce_over_quic_with_mutual_tls() {
    use ringsam_collective::quic::{Cipher, CryptoLib, QuicDriver};
    let ca = ClusterCa::generate().unwrap();
    let world = 3;
    let addrs = free_udp_addrs(world);
    let mixed = |r: usize| {
        let mut c = cfg(r, world, &addrs, &ca, &ca, Duration::from_secs(10));
        (c.tuning.crypto, c.tuning.cipher) =
            [(CryptoLib::AwsLc, Cipher::Aes128Gcm), (CryptoLib::Ring, Cipher::Chacha20Poly1305), (CryptoLib::AwsLc, Cipher::Aes256Gcm)][r];
        if r == 1 {
            c.tuning.driver = QuicDriver::Quinn;
        }
        c
    };
    let rings = form((0..world).map(mixed).collect()).await;
    sum_on_every_rank(rings, 50, |i| [1, 4095, 4096, 100_000][i % 4]).await;
}

/// Every rank all-reduces `ops` operations at once, operation `i` of `len(i)` values, rank `r`
/// giving `(r + 1) * (j % 5 + i)` at index `j`; each result is checked exactly, then each rank
/// closes.
async fn sum_on_every_rank(rings: Vec<ringsam_collective::RingHandle>, ops: usize, len: fn(usize) -> usize) {
    let world = rings.len();
    let tasks: Vec<_> = rings
        .into_iter()
        .enumerate()
        .map(|(r, mut ring)| {
            tokio::spawn(async move {
                for i in 0..ops {
                    let data = (0..len(i)).map(|j| ((r + 1) * (j % 5 + i)) as f32).collect();
                    let out = ring.allreduce(data, ReduceOp::Sum).await.unwrap();
                    let ranks = world * (world + 1) / 2;
                    assert!(out.iter().enumerate().all(|(j, &v)| v == (ranks * (j % 5 + i)) as f32), "rank {r} op {i}");
                }
                ring.close().await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Chunks striped over several connections per neighbour: exact results with many operations
/// in flight at once (the case where a stripe could let an all-gather value overtake its
/// reduce-scatter sum if the striping rule were wrong), and a mismatched stripe count refused.
/// Stripes are quinn's (the direct driver refuses them: its two threads already split a rank's
/// crypto).
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn striped_links_give_exact_results_with_operations_in_flight() {
    use ringsam_collective::quic::QuicDriver;
    let ca = ClusterCa::generate().unwrap();
    let world = 3;
    let addrs = free_udp_addrs(world);
    let striped = |r: usize| {
        let mut c = cfg(r, world, &addrs, &ca, &ca, Duration::from_secs(10));
        c.tuning.stripes = 3;
        c.tuning.driver = QuicDriver::Quinn;
        c
    };
    let rings = form((0..world).map(striped).collect()).await;
    let tasks: Vec<_> = rings
        .into_iter()
        .enumerate()
        .map(|(r, mut ring)| {
            tokio::spawn(async move {
                for round in 0..6 {
                    let lens = [100_000usize, 1, 4096, 50_001, 7, 12_289, 100_000, 3];
                    let pending: Vec<_> = lens
                        .iter()
                        .enumerate()
                        .map(|(k, &len)| {
                            let data = (0..len).map(|j| ((r + 1) * ((j + k + round) % 7)) as f32).collect();
                            ring.submit(data, ReduceOp::Sum).unwrap()
                        })
                        .collect();
                    for (k, (p, &len)) in pending.into_iter().zip(&lens).enumerate() {
                        let out = p.result().await.unwrap();
                        assert_eq!(out.len(), len);
                        assert!(
                            out.iter().enumerate().all(|(j, &v)| v == (6 * ((j + k + round) % 7)) as f32),
                            "rank {r} round {round} op {k}"
                        );
                    }
                }
                ring.close().await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }

    // Ranks that disagree on the stripe count never form a ring.
    let addrs = free_udp_addrs(2);
    let t = Duration::from_millis(1500);
    let mut two = cfg(0, 2, &addrs, &ca, &ca, t);
    two.tuning.stripes = 2;
    two.tuning.driver = QuicDriver::Quinn;
    let a = tokio::spawn(connect(two));
    let b = tokio::spawn(connect(cfg(1, 2, &addrs, &ca, &ca, t)));
    assert!(a.await.unwrap().is_err() && b.await.unwrap().is_err(), "stripe counts 2 and 1 must not form a ring");

    // The direct driver (Linux only) says so instead of forming a ring without stripes.
    if cfg!(target_os = "linux") {
        let mut direct = cfg(0, 2, &free_udp_addrs(2), &ca, &ca, t);
        (direct.tuning.stripes, direct.tuning.driver) = (2, QuicDriver::Direct);
        let err = connect(direct).await.err().expect("stripes refused").to_string();
        assert!(err.contains("--quic_stripes 1"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_cannot_join() {
    let ca = ClusterCa::generate().unwrap();
    let stranger_ca = ClusterCa::generate().unwrap();
    let addrs = free_udp_addrs(2);
    let t = Duration::from_millis(1500);
    let good = tokio::spawn(connect(cfg(0, 2, &addrs, &ca, &ca, t)));
    // Rank 1 trusts our CA but holds a certificate signed by a different one.
    let bad = tokio::spawn(connect(cfg(1, 2, &addrs, &ca, &stranger_ca, t)));
    assert!(good.await.unwrap().is_err(), "the ring must not form with an impostor");
    assert!(bad.await.unwrap().is_err());
}

/// Issue 18: after formation the endpoint kept accepting (70 000 distinct Initials took a rank
/// from 15 MB to 248 MB). A formed rank now accepts no one: even a rank with a certificate from
/// the same CA, trying to join as rank 0, is refused and times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_formed_ring_accepts_no_one_else() {
    let ca = ClusterCa::generate().unwrap();
    let addrs = free_udp_addrs(3);
    let rings = form((0..2).map(|r| cfg(r, 2, &addrs[..2], &ca, &ca, Duration::from_secs(10))).collect()).await;
    // A third party with valid credentials: listens on its own port, connects to rank 1 as if
    // it were rank 0.
    let intruder_addrs = [addrs[2], addrs[1]];
    let intruder = connect(cfg(0, 2, &intruder_addrs, &ca, &ca, Duration::from_secs(2))).await;
    assert!(intruder.is_err(), "a formed ring let a new rank 0 in");
    // The ring itself is unaffected.
    let mut rings = rings.into_iter();
    let (mut r0, mut r1) = (rings.next().unwrap(), rings.next().unwrap());
    let (a, b) = tokio::join!(r0.allreduce(vec![1.0; 10], ReduceOp::Sum), r1.allreduce(vec![2.0; 10], ReduceOp::Sum));
    assert_eq!((a.unwrap(), b.unwrap()), (vec![3.0; 10], vec![3.0; 10]));
}

/// Issue 18: a forming rank must bound what strangers' connections cost. 100 connections that
/// complete TLS (the worst case: CA-signed) and then stall, never sending a hello, reach a rank
/// waiting for its previous rank: at most `MAX_INCOMING` are greeted at once, the rest are
/// refused (each refusal reported), and the real rank 0 still joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_bounded_by_count() {
    use std::sync::Arc;
    let ca = ClusterCa::generate().unwrap();
    let addrs = free_udp_addrs(2);
    let (heard, refusals) = refusal_log();
    let rank1 = QuicConfig { on_refusal: Some(refusals), ..cfg(1, 2, &addrs, &ca, &ca, Duration::from_secs(30)) };
    let rank1 = tokio::spawn(connect(rank1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Strangers (with valid credentials, the worst case) start handshakes and vanish.
    let (cert, key) = ca.node("stranger").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    tls.alpn_protocols = vec![b"ringsam/1".to_vec()];
    let client_cfg = quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap()));
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let connecting = ep.connect_with(client_cfg.clone(), addrs[1], "ringsam-peer").unwrap();
        stalled.push((ep, connecting)); // kept alive, driven by their endpoints, never greeting
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused_for_count = heard.lock().unwrap().iter().filter(|w| w.contains("too many connections waiting")).count();
    assert!(refused_for_count >= 100 - ringsam_collective::quic::MAX_INCOMING - 10, "only {refused_for_count} refused for the bound");
    drop(stalled);
    // The real rank 0 still joins once the abandoned greetings time out.
    let rank0 = connect(cfg(0, 2, &addrs, &ca, &ca, Duration::from_secs(30))).await.unwrap();
    let mut rank1 = rank1.await.unwrap().unwrap();
    let mut rank0 = rank0;
    let (a, b) = tokio::join!(rank0.allreduce(vec![1.0; 10], ReduceOp::Sum), rank1.allreduce(vec![2.0; 10], ReduceOp::Sum));
    assert_eq!((a.unwrap(), b.unwrap()), (vec![3.0; 10], vec![3.0; 10]));
}

/// A next rank that starts late: the earlier rank's unanswered connection attempts are replaced,
/// and the replaced ones' closes reach the late rank once it listens. That is not a refusal: the
/// ring forms with none reported (the direct driver reported them until a review caught it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_next_rank_forms_the_ring_with_nothing_refused() {
    let ca = ClusterCa::generate().unwrap();
    let addrs = free_udp_addrs(2);
    let (heard, refusals) = refusal_log();
    let early = tokio::spawn(connect(cfg(0, 2, &addrs, &ca, &ca, Duration::from_secs(20))));
    // Rank 0 tries at 0, 0.2 and 0.6 s and replaces the last at 1.4 s: that close, and the
    // attempt after it, reach rank 1, which listens from 0.65 s.
    tokio::time::sleep(Duration::from_millis(650)).await;
    let rank1 = QuicConfig { on_refusal: Some(refusals), ..cfg(1, 2, &addrs, &ca, &ca, Duration::from_secs(20)) };
    let mut r1 = connect(rank1).await.unwrap();
    let mut r0 = early.await.unwrap().unwrap();
    let (a, b) = tokio::join!(r0.allreduce(vec![1.0; 10], ReduceOp::Sum), r1.allreduce(vec![2.0; 10], ReduceOp::Sum));
    assert_eq!((a.unwrap(), b.unwrap()), (vec![3.0; 10], vec![3.0; 10]));
    assert!(heard.lock().unwrap().is_empty(), "refusals reported: {:?}", heard.lock().unwrap());
}

/// The measurement build's unsealed packets (`--features unsealed-quic-bench`): a ring forms
/// with one rank on each driver, and gives exact results over thousands of 1452-byte packets
/// each way, past the point (10 to 1000 packets) where quinn-proto makes its first key update.
#[cfg(feature = "unsealed-quic-bench")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsealed_ring_gives_exact_results_through_a_key_update() {
    use ringsam_collective::quic::{Cipher, QuicDriver};
    let ca = ClusterCa::generate().unwrap();
    let world = 2;
    let addrs = free_udp_addrs(world);
    let unsealed = |r: usize| {
        let mut c = cfg(r, world, &addrs, &ca, &ca, Duration::from_secs(10));
        c.tuning.cipher = Cipher::parse("unsealed-benchmark-only").unwrap();
        c.tuning.max_mtu = Some(1452);
        c.tuning.driver = [QuicDriver::Direct, QuicDriver::Quinn][r];
        c
    };
    let rings = form((0..world).map(unsealed).collect()).await;
    sum_on_every_rank(rings, 8, |_| 100_000).await;
}
