//! Rings whose ranks are split between "processes" (each group sharing one `LocalLinks`): pipes
//! between ranks of a group, sockets between groups, exact results either way.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use ringsam_collective::local_link::{InProcess, LocalLinks};
use ringsam_collective::quic::QuicTuning;
use ringsam_collective::transport::{Link, Transport, form_ring};
use ringsam_collective::{ReduceOp, RingConfig, RingHandle};

/// Free loopback ports, for TCP and UDP alike.
fn free_addrs(n: usize) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    while out.len() < n {
        let a = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        if UdpSocket::bind(a).is_ok() && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// An address no rank could listen on or connect to (TEST-NET-1).
const NOWHERE: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)), 9);

/// An address on this host nobody can connect to (port 0), from which a rank that only
/// connects out (QUIC) can still send.
const NO_PORT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Forms a ring of `process_of.len()` ranks, rank r living in "process" `process_of[r]`. A rank
/// whose previous rank shares its process is given an address nobody can connect to: the ring
/// forms only if that link is a pipe.
async fn form(transport: &Transport, process_of: &[usize], timeout: Duration) -> Vec<RingHandle> {
    let world = process_of.len();
    let mut addrs = free_addrs(world);
    for r in 0..world {
        if process_of[(r + world - 1) % world] == process_of[r] {
            addrs[r] = NO_PORT;
        }
    }
    let processes = process_of.iter().max().map_or(0, |&p| p + 1);
    let links: Vec<Arc<LocalLinks>> = (0..processes).map(|_| LocalLinks::new()).collect();
    let joins: Vec<_> = (0..world)
        .map(|r| {
            let (prev, next) = ((r + world - 1) % world, (r + 1) % world);
            let here = |o: usize| process_of[o] == process_of[r];
            let in_process = Some(InProcess { links: links[process_of[r]].clone(), prev: here(prev), next: here(next) });
            let link = Link { listen: addrs[r], next: addrs[next], connect_timeout: timeout, on_refusal: None, in_process };
            let ring = RingConfig { chunk: 1000, peer_timeout: timeout, ..RingConfig::new(r, world) };
            let transport = transport.clone();
            tokio::spawn(async move { form_ring(&transport, ring, link).await })
        })
        .collect();
    let mut rings = Vec::new();
    for (r, j) in joins.into_iter().enumerate() {
        rings.push(j.await.unwrap().unwrap_or_else(|e| panic!("rank {r}: {e}")).0);
    }
    rings
}

/// Every rank all-reduces a run of mixed sizes; each result must be exact.
async fn all_reduce_mixed_sizes(rings: Vec<RingHandle>) {
    let world = rings.len();
    let total: usize = (1..=world).sum();
    let sizes = [0usize, 1, 999, 1000, 1001, 50_000];
    let tasks: Vec<_> = rings
        .into_iter()
        .enumerate()
        .map(|(r, mut ring)| {
            tokio::spawn(async move {
                for i in 0..60 {
                    let len = sizes[i % sizes.len()];
                    let data: Vec<f32> = (0..len).map(|j| ((r + 1) * (j % 7)) as f32).collect();
                    let out = ring.allreduce(data, ReduceOp::Sum).await.unwrap_or_else(|e| panic!("rank {r} op {i}: {e}"));
                    assert!(out.iter().enumerate().all(|(j, &v)| v == (total * (j % 7)) as f32), "rank {r} op {i}");
                }
                ring.close().await;
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn tcp() -> Transport {
    Transport::Tcp { secret: b"0123456789abcdef-test-secret".to_vec() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_and_tcp_links_in_one_ring() {
    // 0 → 1 pipe, 1 → 2 TCP, 2 → 3 → 4 pipes, 4 → 0 TCP.
    all_reduce_mixed_sizes(form(&tcp(), &[0, 0, 1, 1, 1], Duration::from_secs(10)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_all_in_one_process_opens_no_socket() {
    let world = 3;
    let links = LocalLinks::new();
    let joins: Vec<_> = (0..world)
        .map(|r| {
            let in_process = Some(InProcess { links: links.clone(), prev: true, next: true });
            let link = Link { listen: NOWHERE, next: NOWHERE, connect_timeout: Duration::from_secs(5), on_refusal: None, in_process };
            tokio::spawn(async move { form_ring(&tcp(), RingConfig { chunk: 1000, ..RingConfig::new(r, world) }, link).await })
        })
        .collect();
    let mut rings = Vec::new();
    for j in joins {
        rings.push(j.await.unwrap().expect("formed without binding 192.0.2.1").0);
    }
    all_reduce_mixed_sizes(rings).await;
}

/// Both QUIC drivers: quinn's with stripes, the direct one (which has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipes_and_quic_links_in_one_ring() {
    use ringsam_collective::quic::QuicDriver;
    let dir = tempfile::tempdir().unwrap();
    ringsam_collective::certs::write_dev_certs(dir.path(), 1).unwrap();
    let drivers: &[(QuicDriver, usize)] =
        if cfg!(target_os = "linux") { &[(QuicDriver::Quinn, 2), (QuicDriver::Direct, 1)] } else { &[(QuicDriver::Quinn, 2)] };
    for &(driver, stripes) in drivers {
        let quic = Transport::Quic {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("node-0.pem"),
            key: dir.path().join("node-0.key"),
            tuning: QuicTuning { stripes, driver, ..Default::default() },
        };
        // 0 → 1 → 2 pipes, 2 → 3 QUIC, 3 → 0 QUIC: a pipe on one side, QUIC on the other.
        all_reduce_mixed_sizes(form(&quic, &[0, 0, 0, 1], Duration::from_secs(10)).await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rank_gone_from_the_process_fails_its_neighbours_at_once() {
    // A peer timeout far longer than the wait allowed: the neighbours must learn from the pipes
    // closing (rank 0 reads an end of stream, rank 1 writes into a broken pipe), not from silence.
    let mut rings = form(&tcp(), &[0, 0, 0], Duration::from_secs(60)).await;
    drop(rings.pop());
    let t0 = std::time::Instant::now();
    let tasks: Vec<_> =
        rings.into_iter().map(|mut ring| tokio::spawn(async move { ring.allreduce(vec![1.0; 5000], ReduceOp::Sum).await })).collect();
    for (r, t) in tasks.into_iter().enumerate() {
        let out = tokio::time::timeout(Duration::from_secs(10), t).await;
        assert!(matches!(out, Ok(Ok(Err(_)))), "rank {r}: {out:?}");
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "took {:?}", t0.elapsed());
}
