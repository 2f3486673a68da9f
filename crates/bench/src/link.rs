//! The line rate a path actually carries: one TCP stream, as much data as it takes for a few
//! seconds, timed by the receiver (`ringsam bench link`). The ring's busbw is reported as a
//! fraction of this, measured on the same link in the same run, because a nominal rate (a
//! shaper's setting, a NIC's label) is not what a single stream achieves.
//!
//! Protocol: the sender connects, writes for `seconds`, shuts its half down; the receiver counts
//! the bytes after the first read, from that read to end-of-stream and writes back 16 bytes (bytes received, then
//! nanoseconds, little-endian), which the sender reports. Nothing the peer sends is allocated
//! by size: the receiver reads into one fixed buffer.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// What one transfer achieved, as the receiver measured it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkReport {
    /// Bytes received.
    pub bytes: u64,
    /// First byte to end of stream.
    pub seconds: f64,
}

impl LinkReport {
    /// Throughput in Gbit/s (10⁹ bits).
    pub fn gbit_s(&self) -> f64 {
        if self.seconds > 0.0 { self.bytes as f64 * 8.0 / self.seconds / 1e9 } else { 0.0 }
    }

    /// Throughput in GB/s (10⁹ bytes), the unit of the all-reduce's busbw.
    pub fn gbyte_s(&self) -> f64 {
        self.gbit_s() / 8.0
    }
}

const BUF: usize = 1 << 20;

/// Receives one transfer on `listener` and answers with the measurement.
pub fn receive_one(listener: &TcpListener) -> std::io::Result<LinkReport> {
    let (mut conn, _) = listener.accept()?;
    // A sender that stalls is an error, not a hang.
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = vec![0u8; BUF];
    let mut bytes = 0u64;
    let mut start = None;
    loop {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        // The clock starts at the first byte; those bytes arrived before it started, so they do
        // not count (counting them would overstate the rate).
        if start.is_none() {
            start = Some(Instant::now());
        } else {
            bytes += n as u64;
        }
    }
    let seconds = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    let mut reply = [0u8; 16];
    reply[..8].copy_from_slice(&bytes.to_le_bytes());
    reply[8..].copy_from_slice(&((seconds * 1e9) as u64).to_le_bytes());
    conn.write_all(&reply)?;
    Ok(LinkReport { bytes, seconds })
}

/// Sends to `addr` for `seconds` (connecting until `connect_timeout`) and returns the
/// receiver's measurement.
pub fn send_for(addr: SocketAddr, seconds: f64, connect_timeout: Duration) -> std::io::Result<LinkReport> {
    let deadline = Instant::now() + connect_timeout;
    let mut conn = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)), // the receiver is not up yet
        }
    };
    let buf = vec![0x5au8; BUF];
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < seconds {
        conn.write_all(&buf)?;
    }
    conn.shutdown(Shutdown::Write)?;
    let mut reply = [0u8; 16];
    conn.read_exact(&mut reply)?;
    let bytes = u64::from_le_bytes(reply[..8].try_into().expect("8 bytes"));
    let nanos = u64::from_le_bytes(reply[8..].try_into().expect("8 bytes"));
    Ok(LinkReport { bytes, seconds: nanos as f64 / 1e9 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_transfer_is_measured_by_the_receiver() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let rx = std::thread::spawn(move || receive_one(&listener).unwrap());
        let sent = send_for(addr, 0.2, Duration::from_secs(5)).unwrap();
        let got = rx.join().unwrap();
        assert_eq!(sent.bytes, got.bytes);
        assert!(got.bytes > 0 && sent.gbit_s() > 0.0);
    }
}
