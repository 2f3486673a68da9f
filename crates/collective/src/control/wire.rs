//! [`Wire`]: one membership message per UDP datagram, authenticated and fresh.
//!
//! A datagram is, integers big-endian:
//!
//! ```text
//! magic u32 "RSMC" | version u8 | from u32 | to u32 | boot u64 | seq u64 | len u32 |
//! payload (len bytes, ringsam_membership::encode) | tag [u8; 32]
//! ```
//!
//! `tag` is HMAC-SHA256 under the cluster secret over a domain label and every byte before the
//! tag. The label keeps a control datagram from ever being valid as anything else keyed by the
//! same secret (the TCP handshake's proofs), and the other way round.
//!
//! [`Wire::open`] checks, in this order and before it allocates anything: the length (a header
//! and a tag fit, `len` matches the datagram exactly), magic and version, that the datagram is
//! for this slot and from another slot of the job, the tag (in constant time), freshness, and
//! only then decodes the payload (which bounds and validates it again). No input panics.
//!
//! Freshness: per sender, the newest `(boot, seq)` accepted; a datagram not strictly above it
//! (lexicographically) is dropped. `boot` is the sending process's start time, so a restarted
//! peer's first datagram is above everything its previous process sent; `seq` counts the
//! datagrams of one process. Thus a recorded heartbeat replayed later cannot keep a dead peer
//! alive, and a late datagram of a dead process cannot speak for its successor. The price: a
//! datagram the network reordered behind a newer one from the same sender is dropped, which the
//! protocol treats like any lost datagram.

use hmac::{Hmac, Mac};
use ringsam_membership::{Message, Slot, decode};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The largest UDP payload IPv4 carries: [`Wire::seal`] refuses more, [`Wire::open`] drops more.
pub(crate) const MAX_DATAGRAM: usize = 65_507;
/// "RSMC": ringsam membership control.
const MAGIC: u32 = u32::from_be_bytes(*b"RSMC");
const VERSION: u8 = 1;
/// magic, version, from, to, boot, seq, len.
pub(crate) const HEADER_LEN: usize = 4 + 1 + 4 + 4 + 8 + 8 + 4;
/// An HMAC-SHA256 tag.
pub(crate) const TAG_LEN: usize = 32;
/// The largest payload a datagram carries.
pub(crate) const MAX_PAYLOAD: usize = MAX_DATAGRAM - HEADER_LEN - TAG_LEN;
/// Mixed into every tag first (see the module docs).
const DOMAIN: &[u8] = b"ringsam-control-v1 ";

/// Why [`Wire::open`] dropped a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// Shorter than a header and a tag.
    Short,
    /// Longer than [`MAX_DATAGRAM`].
    TooLong,
    /// Not a control datagram.
    Magic,
    /// A control datagram of another version.
    Version,
    /// Addressed to another slot.
    NotForUs,
    /// From this slot itself, or from a slot beyond the job.
    Sender,
    /// The payload length disagrees with the datagram's.
    Length,
    /// The tag does not verify: damaged, forged, or keyed by another secret.
    Tag,
    /// Not newer than the newest datagram accepted from that sender.
    Replay,
    /// Authentic, but the payload is not a valid message.
    Malformed,
}

/// The fixed-size fields before the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Header {
    magic: u32,
    version: u8,
    from: u32,
    to: u32,
    boot: u64,
    seq: u64,
    len: u32,
}

impl Header {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.magic.to_be_bytes());
        out.push(self.version);
        out.extend_from_slice(&self.from.to_be_bytes());
        out.extend_from_slice(&self.to.to_be_bytes());
        out.extend_from_slice(&self.boot.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
    }

    /// The header at the start of `bytes`; `None` if they are too short.
    fn read(bytes: &[u8]) -> Option<Header> {
        let mut r = Reader(bytes);
        Some(Header {
            magic: u32::from_be_bytes(r.take::<4>()?),
            version: u8::from_be_bytes(r.take::<1>()?),
            from: u32::from_be_bytes(r.take::<4>()?),
            to: u32::from_be_bytes(r.take::<4>()?),
            boot: u64::from_be_bytes(r.take::<8>()?),
            seq: u64::from_be_bytes(r.take::<8>()?),
            len: u32::from_be_bytes(r.take::<4>()?),
        })
    }
}

/// Reads fixed-size fields off the front of a slice, never past its end.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
}

/// One worker's end of the control wire: seals what it sends, opens what it receives.
pub(crate) struct Wire {
    secret: Vec<u8>,
    me: Slot,
    slots: u32,
    /// This process's start, in nanoseconds since the UNIX epoch.
    boot: u64,
    /// The last sequence number sealed (the first datagram carries 1).
    seq: u64,
    /// Per sender slot: the newest `(boot, seq)` accepted.
    newest: Vec<Option<(u64, u64)>>,
}

impl Wire {
    /// The wire of slot `me` in a job of `slots` slots, for a process started at `boot`.
    pub(crate) fn new(secret: &[u8], me: Slot, slots: u32, boot: u64) -> Self {
        Wire { secret: secret.to_vec(), me, slots, boot, seq: 0, newest: vec![None; slots as usize] }
    }

    /// Writes the datagram carrying `payload` to slot `to` into `out` (cleared first). Refuses a
    /// payload over [`MAX_PAYLOAD`], returning its length.
    pub(crate) fn seal(&mut self, to: Slot, payload: &[u8], out: &mut Vec<u8>) -> Result<(), usize> {
        if payload.len() > MAX_PAYLOAD {
            return Err(payload.len());
        }
        self.seq += 1;
        let header = Header {
            magic: MAGIC,
            version: VERSION,
            from: self.me.0,
            to: to.0,
            boot: self.boot,
            seq: self.seq,
            len: payload.len() as u32, // at most MAX_PAYLOAD: fits
        };
        out.clear();
        header.write(out);
        out.extend_from_slice(payload);
        let tag = self.mac(out).finalize().into_bytes();
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// The sender and message of a received datagram, or why it was dropped (the checks and their
    /// order are in the module docs). A datagram that passes the tag and freshness checks moves
    /// that sender's freshness mark even if its payload then fails to decode.
    pub(crate) fn open(&mut self, bytes: &[u8]) -> Result<(Slot, Message), DropReason> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(DropReason::TooLong);
        }
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(DropReason::Short);
        }
        let Some(h) = Header::read(bytes) else { return Err(DropReason::Short) };
        if h.magic != MAGIC {
            return Err(DropReason::Magic);
        }
        if h.version != VERSION {
            return Err(DropReason::Version);
        }
        if h.to != self.me.0 {
            return Err(DropReason::NotForUs);
        }
        if h.from >= self.slots || h.from == self.me.0 {
            return Err(DropReason::Sender);
        }
        let len = h.len as usize;
        if len > MAX_PAYLOAD || HEADER_LEN + len + TAG_LEN != bytes.len() {
            return Err(DropReason::Length);
        }
        let Some((signed, tag)) = bytes.split_at_checked(HEADER_LEN + len) else { return Err(DropReason::Length) };
        if self.mac(signed).verify_slice(tag).is_err() {
            return Err(DropReason::Tag);
        }
        let Some(newest) = self.newest.get_mut(h.from as usize) else { return Err(DropReason::Sender) };
        let stamp = (h.boot, h.seq);
        let last: Option<(u64, u64)> = *newest;
        if last.is_some_and(|last| stamp <= last) {
            return Err(DropReason::Replay);
        }
        *newest = Some(stamp);
        let Some(payload) = signed.get(HEADER_LEN..) else { return Err(DropReason::Length) };
        let msg = decode(payload).map_err(|_| DropReason::Malformed)?;
        Ok((Slot(h.from), msg))
    }

    /// The MAC state after the domain label and `signed`.
    fn mac(&self, signed: &[u8]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        m.update(DOMAIN);
        m.update(signed);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsam_membership::{Membership, encode};

    const SECRET: &[u8] = b"00112233445566778899aabbccddeeff";

    fn join() -> Message {
        Message::Join {
            replicas: 1,
            incarnation: 3,
            state: None,
            committed: Some(Membership::new(2, [(Slot(0), 1), (Slot(1), 1), (Slot(2), 1)])),
            accepted: Vec::new(),
        }
    }

    fn sealed(sender: &mut Wire, to: Slot, msg: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        sender.seal(to, &encode(msg), &mut out).unwrap();
        out
    }

    /// Slot 0 sending to slot 1, in a job of three slots.
    fn pair() -> (Wire, Wire) {
        (Wire::new(SECRET, Slot(0), 3, 1_000), Wire::new(SECRET, Slot(1), 3, 2_000))
    }

    #[test]
    fn seal_then_open_round_trips() {
        let (mut a, mut b) = pair();
        for msg in [join(), Message::Heartbeat { generation: 2 }, Message::Accept { generation: 3 }] {
            let bytes = sealed(&mut a, Slot(1), &msg);
            assert_eq!(bytes.len(), HEADER_LEN + encode(&msg).len() + TAG_LEN);
            assert_eq!(b.open(&bytes), Ok((Slot(0), msg)));
        }
    }

    #[test]
    fn every_flipped_bit_is_dropped() {
        let (mut a, mut b) = pair();
        let bytes = sealed(&mut a, Slot(1), &join());
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[i] ^= 1 << bit;
                assert!(b.open(&damaged).is_err(), "bit {bit} of byte {i} of {}", bytes.len());
            }
        }
        // None of that moved the freshness mark: the intact datagram still opens.
        assert_eq!(b.open(&bytes), Ok((Slot(0), join())));
    }

    #[test]
    fn another_secret_is_dropped() {
        let (_, mut b) = pair();
        let mut stranger = Wire::new(b"ffeeddccbbaa99887766554433221100", Slot(0), 3, 1_000);
        assert_eq!(b.open(&sealed(&mut stranger, Slot(1), &join())), Err(DropReason::Tag));
    }

    #[test]
    fn a_replay_or_a_reordered_datagram_is_dropped() {
        let (mut a, mut b) = pair();
        let first = sealed(&mut a, Slot(1), &Message::Heartbeat { generation: 4 });
        let second = sealed(&mut a, Slot(1), &Message::Heartbeat { generation: 4 });
        assert!(b.open(&first).is_ok());
        assert_eq!(b.open(&first), Err(DropReason::Replay));
        assert!(b.open(&second).is_ok());
        assert_eq!(b.open(&second), Err(DropReason::Replay));
        let third = sealed(&mut a, Slot(1), &Message::Heartbeat { generation: 4 });
        let fourth = sealed(&mut a, Slot(1), &Message::Heartbeat { generation: 4 });
        assert!(b.open(&fourth).is_ok());
        assert_eq!(b.open(&third), Err(DropReason::Replay), "overtaken by a newer one");
    }

    #[test]
    fn an_older_boot_is_dropped_and_a_newer_one_accepted() {
        let (mut a, mut b) = pair();
        for _ in 0..5 {
            assert!(b.open(&sealed(&mut a, Slot(1), &join())).is_ok());
        }
        // A previous process of slot 0: its sequence numbers are higher, its boot is older.
        let mut dead = Wire::new(SECRET, Slot(0), 3, 500);
        dead.seq = 1_000;
        assert_eq!(b.open(&sealed(&mut dead, Slot(1), &join())), Err(DropReason::Replay));
        // Its successor starts counting from 1 again, at a later boot.
        let mut next = Wire::new(SECRET, Slot(0), 3, 3_000);
        assert!(b.open(&sealed(&mut next, Slot(1), &join())).is_ok());
        assert_eq!(b.open(&sealed(&mut a, Slot(1), &join())), Err(DropReason::Replay), "the old process is dead");
    }

    #[test]
    fn truncated_or_padded_datagrams_are_dropped() {
        let (mut a, mut b) = pair();
        let bytes = sealed(&mut a, Slot(1), &join());
        for cut in 0..bytes.len() {
            assert!(b.open(&bytes[..cut]).is_err(), "cut at {cut} of {}", bytes.len());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(b.open(&longer), Err(DropReason::Length));
        assert_eq!(b.open(&vec![0u8; MAX_DATAGRAM + 1]), Err(DropReason::TooLong));
        assert_eq!(b.open(&bytes), Ok((Slot(0), join())));
    }

    #[test]
    fn wrong_addresses_are_dropped() {
        let (mut a, mut b) = pair();
        assert_eq!(b.open(&sealed(&mut a, Slot(2), &join())), Err(DropReason::NotForUs));
        let mut myself = Wire::new(SECRET, Slot(1), 3, 1_000);
        assert_eq!(b.open(&sealed(&mut myself, Slot(1), &join())), Err(DropReason::Sender));
        let mut outsider = Wire::new(SECRET, Slot(7), 8, 1_000);
        assert_eq!(b.open(&sealed(&mut outsider, Slot(1), &join())), Err(DropReason::Sender));
    }

    #[test]
    fn an_authentic_bad_payload_is_malformed_and_an_oversized_one_is_not_sealed() {
        let (mut a, mut b) = pair();
        let mut out = Vec::new();
        a.seal(Slot(1), &[200], &mut out).unwrap();
        assert_eq!(b.open(&out), Err(DropReason::Malformed));
        assert_eq!(a.seal(Slot(1), &vec![0u8; MAX_PAYLOAD + 1], &mut out), Err(MAX_PAYLOAD + 1));
        a.seal(Slot(1), &vec![0u8; MAX_PAYLOAD], &mut out).unwrap();
        assert_eq!(out.len(), MAX_DATAGRAM);
    }
}
