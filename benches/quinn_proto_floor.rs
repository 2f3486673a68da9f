//! What quinn-proto itself costs per byte, with no sockets, no kernel and no async runtime: two
//! `quinn_proto::Endpoint`s in one thread, configured exactly as a ring's QUIC link
//! (`ringsam_collective::quic::quinn_configs`), hand each other their datagrams in memory while
//! one bulk stream crosses from client to server.
//!
//! This is the floor for any driver built on quinn-proto: the AEAD, stream data copied into
//! packets, and per-packet bookkeeping (acks, loss tracking, flow control), sender and receiver
//! together. quinn's async layer, the copy of each received datagram out of the socket's batch
//! buffer, tokio's hand-offs and the kernel come on top in a real ring. The datagrams move between
//! the endpoints without a copy (the transmit buffer becomes the received `BytesMut`), and the
//! receiver takes the stream's chunks without copying them, as the ring does. Time is this
//! thread's CPU time over the second of two transfers (the first lets MTU discovery and the
//! congestion window settle); when an iteration moves nothing the thread sleeps until the next
//! timer, so waiting is not counted.
//!
//! Run: `cargo bench --bench quinn_proto_floor [-- --mib 256]`. Figures: docs/BENCHMARKS.md,
//! "What any QUIC ring pays".

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{ConnectionHandle, DatagramEvent, Dir, Endpoint, Event, StreamEvent, StreamId};
use ringsam_collective::quic::{Cipher, CryptoLib, QuicConfig, QuicTuning, quinn_configs};

const PIECE: usize = 64 << 10;

/// One endpoint and its one connection.
struct Peer {
    ep: Endpoint,
    addr: SocketAddr,
    conn: Option<(ConnectionHandle, quinn_proto::Connection)>,
}

fn ring_link_config(mtu: u16, crypto: CryptoLib, dir: &std::path::Path) -> QuicConfig {
    ringsam_collective::certs::write_dev_certs(dir, 1).expect("dev certs");
    let read = |f: &str| ringsam_collective::certs::read_certs(&dir.join(f)).expect(f);
    QuicConfig {
        ring: ringsam_collective::RingConfig::new(0, 2),
        listen: "127.0.0.1:1".parse().unwrap(),
        next: "127.0.0.1:2".parse().unwrap(),
        ca: read("ca.pem").remove(0),
        cert_chain: read("node-0.pem"),
        key: ringsam_collective::certs::read_key(&dir.join("node-0.key")).expect("key"),
        connect_timeout: Duration::from_secs(10),
        tuning: QuicTuning { max_mtu: Some(mtu), crypto, ..QuicTuning::default() },
        on_refusal: None,
    }
}

/// Everything `from`'s connection has to send, handed to `to`'s endpoint, in batches of at most
/// `batch` datagrams (the ring's `CappedGso`: one UDP send's worth). Returns whether any moved.
fn deliver(from: &mut Peer, to: &mut Peer, now: Instant, batch: usize, scratch: &mut Vec<u8>) -> bool {
    let Some((_, conn)) = from.conn.as_mut() else { return false };
    let mut moved = false;
    loop {
        let mut buf = Vec::new();
        let Some(t) = conn.poll_transmit(now, batch, &mut buf) else { break };
        moved = true;
        let mut data = BytesMut::from(Bytes::from(buf));
        data.truncate(t.size);
        let stride = t.segment_size.unwrap_or(t.size);
        while !data.is_empty() {
            let datagram = data.split_to(stride.min(data.len()));
            scratch.clear();
            match to.ep.handle(now, from.addr, None, None, datagram, scratch) {
                Some(DatagramEvent::NewConnection(incoming)) => {
                    to.conn = Some(to.ep.accept(incoming, now, scratch, None).expect("accept"));
                }
                Some(DatagramEvent::ConnectionEvent(_, ev)) => to.conn.as_mut().expect("connected").1.handle_event(ev),
                Some(DatagramEvent::Response(_)) | None => {}
            }
        }
    }
    moved
}

/// Timers and the endpoint's bookkeeping for `p`'s connection.
fn service(p: &mut Peer, now: Instant) {
    let Some((h, conn)) = p.conn.as_mut() else { return };
    if conn.poll_timeout().is_some_and(|t| t <= now) {
        conn.handle_timeout(now);
    }
    while let Some(ev) = conn.poll_endpoint_events() {
        if let Some(back) = p.ep.handle_event(*h, ev) {
            conn.handle_event(back);
        }
    }
}

/// Sleeps (which costs no CPU) until the earlier of the two connections' timers, when an
/// iteration moved nothing: pacing and delayed acks must not be counted as quinn-proto's work.
fn wait_for_timers(client: &mut Peer, server: &mut Peer) {
    let timers = [&mut client.conn, &mut server.conn].into_iter().filter_map(|c| c.as_mut().and_then(|(_, c)| c.poll_timeout()));
    if let Some(next) = timers.min() {
        std::thread::sleep(next.saturating_duration_since(Instant::now()).min(Duration::from_millis(5)));
    }
}

/// Sends `total` bytes client → server on one stream; returns (CPU seconds, final MTU).
fn transfer(client: &mut Peer, server: &mut Peer, total: usize, payload: &Bytes, batch: usize) -> (f64, u16) {
    let t0 = ringsam_bench::allreduce::thread_cpu_seconds();
    let (mut sent, mut received, mut send_id, mut recv_id): (usize, usize, Option<StreamId>, Option<StreamId>) = (0, 0, None, None);
    let mut scratch = Vec::new();
    let mut connected = client.conn.as_ref().is_some_and(|(_, c)| !c.is_handshaking());
    let deadline = Instant::now() + Duration::from_secs(120);
    while received < total {
        let now = Instant::now();
        assert!(now < deadline, "stalled: {received} of {total} bytes after 120 s (connected: {connected})");
        let mut moved = deliver(client, server, now, batch, &mut scratch);
        moved |= deliver(server, client, now, batch, &mut scratch);
        service(client, now);
        service(server, now);
        let c = &mut client.conn.as_mut().unwrap().1;
        while let Some(ev) = c.poll() {
            if let Event::Connected = ev {
                connected = true;
            }
        }
        if connected && send_id.is_none() {
            send_id = c.streams().open(Dir::Uni);
        }
        if let Some(id) = send_id {
            while sent < total {
                let off = sent % payload.len();
                let n = PIECE.min(total - sent).min(payload.len() - off);
                match c.send_stream(id).write_chunks(&mut [payload.slice(off..off + n)]) {
                    Ok(w) if w.bytes > 0 => {
                        sent += w.bytes;
                        moved = true;
                    }
                    _ => break,
                }
            }
        }
        let Some((_, s)) = server.conn.as_mut() else { continue };
        let before = received;
        while let Some(ev) = s.poll() {
            if let Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) = ev {
                recv_id = s.streams().accept(Dir::Uni);
            }
        }
        if let Some(id) = recv_id {
            let mut stream = s.recv_stream(id);
            if let Ok(mut chunks) = stream.read(true) {
                while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
                    received += chunk.bytes.len();
                }
                let _ = chunks.finalize();
            }
        }
        if !moved && received == before {
            wait_for_timers(client, server);
        }
    }
    let mtu = client.conn.as_ref().unwrap().1.stats().path.current_mtu;
    if let Some(id) = send_id {
        let _ = client.conn.as_mut().unwrap().1.send_stream(id).finish();
    }
    (ringsam_bench::allreduce::thread_cpu_seconds() - t0, mtu)
}

fn run(mtu: u16, crypto: CryptoLib, total: usize) -> (f64, u16) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = ring_link_config(mtu, crypto, dir.path());
    let q = quinn_configs(&cfg).expect("quinn configs");
    let ep_cfg = Arc::new(q.endpoint);
    let mut server = Peer { ep: Endpoint::new(ep_cfg.clone(), Some(Arc::new(q.server)), true, None), addr: cfg.listen, conn: None };
    let mut client = Peer { ep: Endpoint::new(ep_cfg, None, true, None), addr: cfg.next, conn: None };
    let conn = client.ep.connect(Instant::now(), q.client, server.addr, ringsam_collective::certs::PEER_NAME).expect("connect");
    client.conn = Some(conn);
    let payload: Bytes = (0..32usize << 20).map(|i| ((i * 13) >> 4) as u8).collect::<Vec<u8>>().into();
    let batch = (65000 / mtu as usize).max(1);
    transfer(&mut client, &mut server, total, &payload, batch);
    transfer(&mut client, &mut server, total, &payload, batch)
}

fn main() {
    // As the ringsam binary does (`keep_freed_memory`): freed datagram buffers stay in the heap
    // instead of being returned to the OS and faulted back in.
    // SAFETY: mallopt only changes glibc's allocator thresholds, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
    let args: Vec<String> = std::env::args().collect();
    let mib = match args.iter().position(|a| a == "--mib").map(|i| args.get(i + 1).map(|v| v.parse::<usize>())) {
        None => 256,
        Some(Some(Ok(n))) if (1..=4096).contains(&n) => n,
        Some(_) => {
            eprintln!("--mib N: expected a whole number of MiB from 1 to 4096");
            std::process::exit(2);
        }
    };
    let total = mib << 20;
    println!("# quinn-proto alone, one thread, sender and receiver: {mib} MiB per transfer, the second of two timed");
    println!("# ns per byte: sealed, sent, received and opened once; AEAD: `bench cipher`'s seal + open at that packet size");
    println!("{:>10} {:>10} {:>8} {:>12} {:>8} {:>8}", "library", "mtu bound", "mtu", "ns per byte", "AEAD", "rest");
    for mtu in [65000u16, 1452] {
        for crypto in [CryptoLib::Ring, CryptoLib::AwsLc] {
            let (cpu, got_mtu) = run(mtu, crypto, total);
            let ns = cpu * 1e9 / total as f64;
            let sealed = ringsam_bench::cipher::sealed_bytes(got_mtu as usize);
            let aead = ringsam_bench::cipher::measure(crypto, Cipher::Aes128Gcm, sealed, 64 << 20).expect("AEAD").ns_per_byte();
            println!("{:>10} {:>10} {:>8} {:>12.3} {:>8.3} {:>8.3}", crypto.name(), mtu, got_mtu, ns, aead, ns - aead);
        }
    }
}
