//! One quinn-proto endpoint, its UDP socket and its connections, driven by a link thread: what
//! quinn's async `Endpoint` and `Connection` tasks do, in one loop and without their hand-offs.
//! Received datagrams go to quinn-proto in the buffers the kernel filled (no copy); transmits go
//! out with segmentation offload (GSO) in batches of at most one UDP send.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use quinn_proto::{Connection, ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig, ServerConfig, Transmit};
use quinn_udp::{RecvMeta, UdpSocketState};

use crate::quic::MAX_INCOMING;
use crate::transport::Refusals;

/// The room a receive slot must have: the largest UDP payload, or a GRO batch of smaller ones.
const MAX_RECEIVE: usize = 64 << 10;

/// Each receive slot's arena: datagrams are cut from its front as they arrive, densely, and a
/// fresh arena replaces it once less than [`MAX_RECEIVE`] is left (so it takes two 65000-byte
/// datagrams, or ninety 1452-byte ones). Densely, because quinn-proto keeps slices of received
/// datagrams (stream data the ring reads in place), and a slice keeps its whole buffer alive:
/// one 64 KiB buffer per 1452-byte datagram would pin 45 times the data, and zeroing it cost
/// more than receiving it. A kept piece of at least `chunk_frames::MIN_KEPT` (16 KiB) pins at
/// most 8 times its size. Used-up arenas are kept ([`Arenas`]) and taken again once quinn-proto
/// and the ring have dropped every slice of them.
const ARENA: usize = 2 * MAX_RECEIVE;

/// Used-up arenas kept, oldest first, waiting for their slices to be dropped: 32 MiB. All-gather
/// pieces the ring sends on keep their arenas until the next rank acknowledges them, so the
/// windows' worth in flight (connection window, both queues) is about 160 arenas; with 64 kept,
/// most were dropped still held and every new arena was zeroed (memset 2.1 % of a loopback
/// all-reduce's samples; 0.06 % with 256).
const RETIRED: usize = 256;

/// Where receive slots get their arenas.
#[derive(Default)]
struct Arenas {
    retired: std::collections::VecDeque<BytesMut>,
}

impl Arenas {
    /// A whole arena: one of the oldest few retired ones that nothing holds a slice of any more,
    /// else a new one. An arena still held (a piece the ring keeps to send on) goes to the back,
    /// so it does not stop the ones behind it from being reused.
    fn take(&mut self) -> BytesMut {
        for _ in 0..self.retired.len().min(4) {
            let mut a = self.retired.pop_front().expect("counted above");
            if a.try_reclaim(ARENA) {
                // SAFETY: `a` is the sole owner of an allocation made by `BytesMut::zeroed(ARENA)`
                // (only such arenas are retired) and reclaimed from its start; every one of those
                // ARENA bytes was initialized then, and since only overwritten.
                unsafe { a.set_len(ARENA) };
                return a;
            }
            self.retired.push_back(a);
        }
        BytesMut::zeroed(ARENA)
    }

    /// Keeps a used-up arena (`a` is what is left of it: less than a datagram) for reuse.
    fn retire(&mut self, mut a: BytesMut) {
        a.clear();
        if self.retired.len() == RETIRED {
            self.retired.pop_front();
        }
        self.retired.push_back(a);
    }
}

/// A link thread's endpoint.
pub(crate) struct Node {
    pub(crate) ep: Endpoint,
    pub(crate) conns: HashMap<ConnectionHandle, Connection>,
    pub(crate) socket: std::net::UdpSocket,
    udp: UdpSocketState,
    /// Receive slots, one per datagram (or GRO batch) a `recvmmsg` call may return.
    bufs: Vec<BytesMut>,
    arenas: Arenas,
    meta: Vec<RecvMeta>,
    tx: Vec<u8>,
    scratch: Vec<u8>,
    /// The most datagrams one GSO send may carry at this MTU bound (quinn-udp's own limit, which
    /// drops to 1 when the device refuses offload, is applied at each send).
    gso_cap: usize,
    /// A transmit the socket had no room for, sent before anything else.
    pub(crate) blocked: Option<(Vec<u8>, Transmit)>,
    /// Connections accepted and not yet greeted, counted by the caller. (Once the ring forms the
    /// caller removes the server configuration, and quinn-proto answers strangers' Initials
    /// statelessly, as quinn's driver does: nothing is accepted, and nothing reported.)
    pub(crate) waiting: usize,
    /// Connections accepted since the caller last looked.
    pub(crate) accepted: Vec<ConnectionHandle>,
    refusals: Option<Refusals>,
}

impl Node {
    /// A node on `socket` (already bound, buffers sized), listening with `server`.
    pub(crate) fn new(
        socket: std::net::UdpSocket,
        endpoint: EndpointConfig,
        server: Option<ServerConfig>,
        mtu_bound: u16,
        recv_slots: usize,
        refusals: Option<Refusals>,
    ) -> std::io::Result<Node> {
        socket.set_nonblocking(true)?;
        let udp = UdpSocketState::new((&socket).into())?;
        let batch = quinn_udp::BATCH_SIZE.min(recv_slots).max(1);
        // Path MTU discovery only where the socket forbids fragmentation (as quinn decides).
        let mtud = !udp.may_fragment();
        Ok(Node {
            ep: Endpoint::new(Arc::new(endpoint), server.map(Arc::new), mtud, None),
            conns: HashMap::new(),
            socket,
            udp,
            bufs: (0..batch).map(|_| BytesMut::zeroed(ARENA)).collect(),
            arenas: Arenas::default(),
            meta: vec![RecvMeta::default(); batch],
            tx: Vec::new(),
            scratch: Vec::new(),
            gso_cap: crate::quic::max_gso_segments(mtu_bound),
            blocked: None,
            waiting: 0,
            accepted: Vec::new(),
            refusals,
        })
    }

    pub(crate) fn refused(&self, peer: SocketAddr, why: &str) {
        if let Some(r) = &self.refusals {
            r.report(peer, why);
        }
    }

    /// Reads the datagrams waiting on the socket into quinn-proto; whether any came. A batch
    /// that does not fill every buffer emptied the socket: asking again would be a system call
    /// that finds nothing (what arrives meanwhile waits for the next turn of the loop).
    pub(crate) fn receive(&mut self, now: Instant) -> std::io::Result<bool> {
        let mut any = false;
        loop {
            let n = {
                let mut slices: Vec<IoSliceMut<'_>> = self.bufs.iter_mut().map(|b| IoSliceMut::new(&mut b[..])).collect();
                match self.udp.recv((&self.socket).into(), &mut slices, &mut self.meta) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(any),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            any = true;
            for i in 0..n {
                let m = self.meta[i];
                // What the kernel filled goes to quinn-proto as it is (no copy).
                let len = m.len.min(self.bufs[i].len());
                let mut data = self.bufs[i].split_to(len);
                if self.bufs[i].len() < MAX_RECEIVE {
                    let fresh = self.arenas.take();
                    self.arenas.retire(std::mem::replace(&mut self.bufs[i], fresh));
                }
                let stride = m.stride.max(1);
                while !data.is_empty() {
                    let datagram = data.split_to(stride.min(data.len()));
                    self.dispatch(now, m.addr, m.dst_ip, m.ecn.map(proto_ecn), datagram);
                }
            }
            if n < self.bufs.len() {
                return Ok(true);
            }
        }
    }

    fn dispatch(
        &mut self,
        now: Instant,
        from: SocketAddr,
        dst: Option<std::net::IpAddr>,
        ecn: Option<quinn_proto::EcnCodepoint>,
        d: BytesMut,
    ) {
        self.scratch.clear();
        match self.ep.handle(now, from, dst, ecn, d, &mut self.scratch) {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(c) = self.conns.get_mut(&ch) {
                    c.handle_event(ev);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                let peer = incoming.remote_address();
                if self.waiting + self.accepted.len() >= MAX_INCOMING {
                    let t = self.ep.refuse(incoming, &mut self.scratch);
                    self.send_once(&t);
                    self.refused(peer, "too many connections waiting to be greeted");
                    return;
                }
                match self.ep.accept(incoming, now, &mut self.scratch, None) {
                    Ok((ch, conn)) => {
                        self.conns.insert(ch, conn);
                        self.accepted.push(ch);
                    }
                    Err(e) => {
                        if let Some(t) = e.response {
                            self.send_once(&t);
                        }
                        self.refused(peer, &format!("accepting: {}", e.cause));
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => self.send_once(&t),
            None => {}
        }
    }

    /// Sends a stateless response from `scratch` once: UDP may lose it anyway, and the peer retries.
    fn send_once(&mut self, t: &Transmit) {
        let _ = self.udp.send((&self.socket).into(), &udp_transmit(t, &self.scratch));
    }

    /// Timers due, and each connection's bookkeeping with the endpoint.
    pub(crate) fn service(&mut self, now: Instant) {
        for (ch, conn) in self.conns.iter_mut() {
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
            while let Some(ev) = conn.poll_endpoint_events() {
                if let Some(back) = self.ep.handle_event(*ch, ev) {
                    conn.handle_event(back);
                }
            }
        }
    }

    /// Forgets connections that are fully closed (their events were read by the caller).
    pub(crate) fn reap(&mut self) {
        self.conns.retain(|_, c| !c.is_drained());
    }

    /// Sends everything the connections have to send; whether anything went. Stops at a full
    /// socket, keeping the transmit for the next call.
    pub(crate) fn transmit(&mut self, now: Instant) -> bool {
        let Node { conns, udp, socket, tx, blocked, gso_cap, .. } = self;
        let max_segments = udp.max_gso_segments().min(*gso_cap).max(1);
        if let Some((buf, t)) = blocked.take()
            && !try_send(udp, socket, &buf, &t)
        {
            *blocked = Some((buf, t));
            return false;
        }
        let mut sent = false;
        for conn in conns.values_mut() {
            loop {
                tx.clear();
                let Some(t) = conn.poll_transmit(now, max_segments, tx) else { break };
                if !try_send(udp, socket, tx, &t) {
                    *blocked = Some((std::mem::take(tx), t));
                    return true;
                }
                sent = true;
            }
        }
        sent
    }

    /// Closes every connection and sends the closes once (best effort: the thread is leaving,
    /// and a peer that misses them learns from its idle timeout).
    pub(crate) fn close_all(&mut self, why: &'static [u8]) {
        let now = Instant::now();
        for conn in self.conns.values_mut() {
            conn.close(now, quinn_proto::VarInt::from_u32(0), bytes::Bytes::from_static(why));
        }
        self.transmit(now);
    }

    /// The earliest connection timer.
    pub(crate) fn next_timer(&mut self) -> Option<Instant> {
        self.conns.values_mut().filter_map(|c| c.poll_timeout()).min()
    }
}

/// Sends `t` from `buf`; false when the socket is full (any other error is quinn-udp's to log:
/// UDP is lossy and QUIC retransmits).
fn try_send(udp: &UdpSocketState, socket: &std::net::UdpSocket, buf: &[u8], t: &Transmit) -> bool {
    !matches!(udp.send(socket.into(), &udp_transmit(t, buf)), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

fn udp_transmit<'a>(t: &Transmit, buf: &'a [u8]) -> quinn_udp::Transmit<'a> {
    quinn_udp::Transmit {
        destination: t.destination,
        ecn: t.ecn.map(udp_ecn),
        contents: &buf[..t.size],
        segment_size: t.segment_size,
        src_ip: t.src_ip,
    }
}

fn proto_ecn(e: quinn_udp::EcnCodepoint) -> quinn_proto::EcnCodepoint {
    match e {
        quinn_udp::EcnCodepoint::Ect0 => quinn_proto::EcnCodepoint::Ect0,
        quinn_udp::EcnCodepoint::Ect1 => quinn_proto::EcnCodepoint::Ect1,
        quinn_udp::EcnCodepoint::Ce => quinn_proto::EcnCodepoint::Ce,
    }
}

fn udp_ecn(e: quinn_proto::EcnCodepoint) -> quinn_udp::EcnCodepoint {
    match e {
        quinn_proto::EcnCodepoint::Ect0 => quinn_udp::EcnCodepoint::Ect0,
        quinn_proto::EcnCodepoint::Ect1 => quinn_udp::EcnCodepoint::Ect1,
        quinn_proto::EcnCodepoint::Ce => quinn_udp::EcnCodepoint::Ce,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An arena comes back whole once every slice cut from it is dropped, and not before.
    #[test]
    fn a_used_up_arena_is_reused_once_its_slices_are_dropped() {
        let mut arenas = Arenas::default();
        let mut a = arenas.take();
        let start = a.as_ptr();
        a[..4].copy_from_slice(b"data");
        let held = a.split_to(ARENA - 1000).freeze();
        arenas.retire(a);
        let other = arenas.take();
        assert_ne!(other.as_ptr(), start, "an arena still holding a slice was handed out");
        arenas.retire(other);
        drop(held);
        // The first retired arena is free now; the second still is too (nothing holds it).
        let again = arenas.take();
        assert_eq!((again.as_ptr(), again.len()), (start, ARENA));
        assert_eq!(&again[..4], b"data", "reused as it was, not zeroed again");

        // One still held at the front does not keep a free one behind it from being reused.
        let (mut x, mut y) = (arenas.take(), arenas.take());
        let kept = x.split_to(100).freeze();
        let y_start = y.as_ptr();
        y.clear();
        arenas.retire(x);
        arenas.retire(y);
        assert_eq!(arenas.take().as_ptr(), y_start);
        drop(kept);
    }
}
