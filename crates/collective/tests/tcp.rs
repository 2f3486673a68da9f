//! The TCP driver on loopback: correctness, authentication, bad input, a dead peer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringsam_collective::RingHandle;
use ringsam_collective::tcp::{TcpConfig, connect_with_listener, handshake};
use ringsam_collective::{ReduceOp, RingConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &[u8] = b"0123456789abcdef-test-secret";

async fn listeners(n: usize) -> (Vec<TcpListener>, Vec<SocketAddr>) {
    let mut ls = Vec::new();
    for _ in 0..n {
        ls.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs = ls.iter().map(|l| l.local_addr().unwrap()).collect();
    (ls, addrs)
}

fn cfg(rank: usize, world: usize, addrs: &[SocketAddr], secret: &[u8], timeout: Duration) -> TcpConfig {
    TcpConfig {
        ring: RingConfig { chunk: 1000, peer_timeout: timeout, ..RingConfig::new(rank, world) },
        listen: addrs[rank],
        next: addrs[(rank + 1) % world],
        secret: secret.to_vec(),
        connect_timeout: timeout,
        on_refusal: None,
    }
}

async fn form(world: usize, timeout: Duration) -> Vec<RingHandle> {
    let (ls, addrs) = listeners(world).await;
    let joins: Vec<_> =
        ls.into_iter().enumerate().map(|(r, l)| tokio::spawn(connect_with_listener(cfg(r, world, &addrs, SECRET, timeout), l))).collect();
    let mut rings = Vec::new();
    for j in joins {
        rings.push(j.await.unwrap().unwrap());
    }
    rings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_ranks_many_mixed_sizes_all_correct() {
    let world = 4;
    let rings = form(world, Duration::from_secs(10)).await;
    let sizes = [0usize, 1, 3, 999, 1000, 1001, 4096, 50_000];
    let tasks: Vec<_> = rings
        .into_iter()
        .enumerate()
        .map(|(r, mut ring)| {
            tokio::spawn(async move {
                for i in 0..200 {
                    let len = sizes[i % sizes.len()];
                    let data: Vec<f32> = (0..len).map(|j| ((r + 1) * (j % 7)) as f32).collect();
                    let out = ring.allreduce(data, ReduceOp::Sum).await.unwrap();
                    let want: Vec<f32> = (0..len).map(|j| (10 * (j % 7)) as f32).collect(); // Σ(r+1) = 10
                    assert_eq!(out, want, "rank {r} op {i}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_cannot_join() {
    let (mut ls, addrs) = listeners(2).await;
    let l1 = ls.pop().unwrap();
    let l0 = ls.pop().unwrap();
    let short = Duration::from_millis(1500);
    let good = tokio::spawn(connect_with_listener(cfg(0, 2, &addrs, SECRET, short), l0));
    let bad = tokio::spawn(connect_with_listener(cfg(1, 2, &addrs, b"another-secret-of-128-bits-or-more", short), l1));
    let bad = bad.await.unwrap();
    let good = good.await.unwrap();
    assert!(bad.is_err() && good.is_err());
    let msg = bad.err().unwrap().to_string();
    // Either side may notice first: the bad rank's proof fails and we hang up on it (it proves
    // first, so it learns only that it was rejected), its check of our proof fails, or we have
    // already given up and closed our listener when it retries.
    let expected =
        ["rejected our handshake", "does not hold the cluster secret", "not formed", "during the handshake", "connecting to the next rank"];
    assert!(expected.iter().any(|m| msg.contains(m)), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_handshake_is_rejected() {
    use hmac::{Hmac, Mac};
    // Server: rank 1 of 2, expecting rank 0.
    let (ls, addrs) = listeners(2).await;
    let server_cfg = cfg(1, 2, &addrs, SECRET, Duration::from_secs(5));
    let listener = ls.into_iter().nth(1).unwrap();
    let server = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..2 {
            let (mut s, _) = listener.accept().await.unwrap();
            results.push(handshake::server(&mut s, &server_cfg).await.is_ok());
        }
        results
    });
    // Session 1: a genuine rank 0 (written out by hand so the test can record its bytes).
    let mut hello = [0u8; handshake::HELLO_LEN];
    hello[..8].copy_from_slice(b"RSAMHELO");
    hello[8..12].copy_from_slice(&2u32.to_le_bytes()); // version; rank 0, generation 0, ring 0
    hello[24..28].copy_from_slice(&4000u32.to_le_bytes()); // 1000-value chunks
    hello[28..60].copy_from_slice(&[7u8; 32]);
    let mut s1 = TcpStream::connect(addrs[1]).await.unwrap();
    s1.write_all(&hello).await.unwrap();
    let mut chal = [0u8; handshake::CHALLENGE_LEN];
    s1.read_exact(&mut chal).await.unwrap();
    let proof_of = |role: &[u8], server_nonce: &[u8]| {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
        m.update(b"ringsam-tcp-v2 ");
        m.update(role);
        m.update(&hello);
        m.update(server_nonce);
        m.finalize().into_bytes()
    };
    let proof = proof_of(b"client", &chal[8..40]);
    s1.write_all(&proof).await.unwrap();
    let mut server_proof = [0u8; 32];
    s1.read_exact(&mut server_proof).await.unwrap();
    assert_eq!(server_proof[..], proof_of(b"server", &chal[8..40])[..], "the server proves itself only after we did");
    // Session 2: an eavesdropper replays exactly those bytes. The server drew a fresh nonce, so
    // the recorded proof no longer verifies and the connection is closed.
    let mut s2 = TcpStream::connect(addrs[1]).await.unwrap();
    s2.write_all(&hello).await.unwrap();
    s2.read_exact(&mut chal).await.unwrap();
    s2.write_all(&proof).await.unwrap();
    assert!(s2.read_exact(&mut server_proof).await.is_err(), "the server must close the connection");
    assert_eq!(server.await.unwrap(), vec![true, false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_huge_frames_fail_the_link_not_the_process() {
    // Rank 1 of 2 listens; we play rank 0 with the right secret, then send a frame claiming 4 GB.
    let (ls, addrs) = listeners(2).await;
    let mut it = ls.into_iter();
    let l0 = it.next().unwrap();
    let l1 = it.next().unwrap();
    let victim = tokio::spawn(connect_with_listener(cfg(1, 2, &addrs, SECRET, Duration::from_secs(5)), l1));
    // Garbage first: rejected, and the listener keeps waiting for the real peer.
    let mut junk = TcpStream::connect(addrs[1]).await.unwrap();
    junk.write_all(&[0xFF; 200]).await.unwrap();
    let mut to_victim = TcpStream::connect(addrs[1]).await.unwrap();
    handshake::client(&mut to_victim, &cfg(0, 2, &addrs, SECRET, Duration::from_secs(5))).await.unwrap();
    let (mut from_victim, _) = l0.accept().await.unwrap();
    handshake::server(&mut from_victim, &cfg(0, 2, &addrs, SECRET, Duration::from_secs(5))).await.unwrap();
    let mut ring = victim.await.unwrap().unwrap();
    let t0 = Instant::now();
    let op = tokio::spawn(async move { ring.allreduce(vec![1.0; 10], ReduceOp::Sum).await });
    let mut header = Vec::new();
    ringsam_collective::FrameHeader {
        kind: ringsam_collective::FrameKind::Data,
        ring: 0,
        generation: 0,
        step: 0,
        op: 0,
        chunk: 0,
        len: u32::MAX - 3,
    }
    .encode(&mut header);
    to_victim.write_all(&header).await.unwrap();
    let err = op.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("exceeds the negotiated maximum"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_dies_mid_operation_fails_the_others_within_the_timeout() {
    let world = 3;
    let mut rings = form(world, Duration::from_secs(2)).await;
    let dead = rings.pop().unwrap(); // rank 2 never calls allreduce, then disappears
    let t0 = Instant::now();
    let tasks: Vec<_> =
        rings.into_iter().map(|mut r| tokio::spawn(async move { r.allreduce(vec![1.0; 100_000], ReduceOp::Sum).await })).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(dead);
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
}

/// Issue 18: the accepting rank sent its MAC over a stranger's hello before the stranger proved
/// anything, so anyone who could connect could test guesses of the secret offline. Now a stranger
/// receives a random nonce and nothing keyed by the secret, then the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_receives_nothing_keyed_by_the_secret() {
    let (ls, addrs) = listeners(2).await;
    let server_cfg = cfg(1, 2, &addrs, SECRET, Duration::from_secs(5));
    let listener = ls.into_iter().nth(1).unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        handshake::server(&mut s, &server_cfg).await.is_ok()
    });
    let mut hello = [0u8; handshake::HELLO_LEN]; // a well-formed hello for rank 0 of 2
    hello[..8].copy_from_slice(b"RSAMHELO");
    hello[8..12].copy_from_slice(&2u32.to_le_bytes());
    hello[24..28].copy_from_slice(&4000u32.to_le_bytes());
    let mut s = TcpStream::connect(addrs[1]).await.unwrap();
    s.write_all(&hello).await.unwrap();
    s.write_all(&[0u8; 32]).await.unwrap(); // a guessed proof
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), handshake::CHALLENGE_LEN, "the magic and a nonce, nothing more");
    assert_eq!(&got[..8], b"RSAMCHAL");
    assert!(!server.await.unwrap());
}

/// Issue 18: secrets must carry at least 128 bits.
#[test]
fn short_secrets_are_refused_with_advice() {
    use ringsam_collective::tcp::check_secret;
    let err = check_secret(b"0123456789abcdef0123456789abcde").unwrap_err(); // 31 hex digits: 124 bits
    assert!(err.contains("124 bits") && err.contains("ringsam certs --secret"), "{err}");
    check_secret(b"0123456789abcdef0123456789abcdef").unwrap(); // 32 hex digits
    check_secret(b"AbCdEfGhIjKlMnOpQrStUv").unwrap(); // 22 base64 characters
    assert!(check_secret(b"AbCdEfGhIjKlMnOpQrStU").is_err());
}

/// Issue 18: the accept loop served one connection at a time with a 5 s handshake timeout, so six
/// idle connections to a waiting rank kept its real previous rank out past a 20 s timeout. Now
/// every connection is greeted in its own task (and past the bound, the oldest is dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_strangers_cannot_keep_the_real_peer_out() {
    let (ls, addrs) = listeners(2).await;
    let mut it = ls.into_iter();
    let (l0, l1) = (it.next().unwrap(), it.next().unwrap());
    let timeout = Duration::from_secs(8);
    let rank1 = tokio::spawn(connect_with_listener(cfg(1, 2, &addrs, SECRET, timeout), l1));
    // More idle connections than the handshake bound, all opened before the real rank 0.
    let mut idle = Vec::new();
    for _ in 0..ringsam_collective::tcp::MAX_PENDING_HANDSHAKES + 8 {
        idle.push(TcpStream::connect(addrs[1]).await.unwrap());
    }
    let t0 = Instant::now();
    let rank0 = tokio::spawn(connect_with_listener(cfg(0, 2, &addrs, SECRET, timeout), l0));
    let (mut r0, mut r1) = (rank0.await.unwrap().unwrap(), rank1.await.unwrap().unwrap());
    assert!(t0.elapsed() < Duration::from_secs(4), "formed only after {:?}", t0.elapsed());
    let (a, b) = tokio::join!(r0.allreduce(vec![1.0; 10], ReduceOp::Sum), r1.allreduce(vec![2.0; 10], ReduceOp::Sum));
    assert_eq!((a.unwrap(), b.unwrap()), (vec![3.0; 10], vec![3.0; 10]));
    drop(idle);
}

/// Issue 18: refusals were silent, and the later timeout said nothing of them. Each refused
/// connection is reported with the peer's address and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_reported_with_the_peer_and_why() {
    use std::sync::{Arc, Mutex};
    let (ls, addrs) = listeners(2).await;
    let mut it = ls.into_iter();
    let (l0, l1) = (it.next().unwrap(), it.next().unwrap());
    let heard: Arc<Mutex<Vec<(SocketAddr, String)>>> = Arc::default();
    let sink = heard.clone();
    let listening = TcpConfig {
        on_refusal: Some(ringsam_collective::transport::Refusals(Arc::new(move |peer, why| sink.lock().unwrap().push((peer, why.into()))))),
        ..cfg(1, 2, &addrs, SECRET, Duration::from_secs(8))
    };
    let rank1 = tokio::spawn(connect_with_listener(listening, l1));
    let mut junk = TcpStream::connect(addrs[1]).await.unwrap();
    junk.write_all(&[0xAB; handshake::HELLO_LEN]).await.unwrap();
    let junk_addr = junk.local_addr().unwrap();
    let mut wrong = TcpStream::connect(addrs[1]).await.unwrap();
    let wrong_addr = wrong.local_addr().unwrap();
    let _ = handshake::client(&mut wrong, &cfg(0, 2, &addrs, b"another-secret-of-128-bits-or-more", Duration::from_secs(5))).await;
    let (r0, r1) = tokio::join!(connect_with_listener(cfg(0, 2, &addrs, SECRET, Duration::from_secs(8)), l0), rank1);
    r0.unwrap();
    r1.unwrap().unwrap();
    let heard = heard.lock().unwrap().clone();
    assert!(heard.iter().any(|(p, why)| *p == junk_addr && why.contains("not a ringsam hello")), "{heard:?}");
    assert!(heard.iter().any(|(p, why)| *p == wrong_addr && why.contains("cluster secret")), "{heard:?}");
}
