//! [`AcceptorRecord`]: the part of a worker's state that must outlive its process.
//!
//! A worker that accepted a proposal has promised two things: not to accept another proposal of
//! that generation or below, and not to accept any proposal lacking a majority of what it
//! accepted (see the crate docs for why each matters). A restarted process that forgot them could
//! break them, so the record holds them, and the driver writes each record durably (write, fsync,
//! rename) before it sends anything the state machine queued after it.
//!
//! # Memory
//! At most [`MAX_ACCEPTED`] accepted memberships plus one committed one; [`AcceptorRecord::decode`]
//! reads at most [`MAX_RECORD_BYTES`].

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::membership::{Membership, Slot};
use crate::message::{DecodeError, options};

/// Most uncommitted proposals (with distinct slot sets) one acceptor remembers.
pub const MAX_ACCEPTED: usize = 16;
/// The largest record [`AcceptorRecord::decode`] reads.
pub const MAX_RECORD_BYTES: u64 = 4 << 20;
/// Leads every record, so a file of something else is not read as one.
const RECORD_MAGIC: u32 = 0x5253_4d31;

/// What an acceptor has promised, to be written durably and handed back to
/// [`Rendezvous::restore`](crate::Rendezvous::restore) after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptorRecord {
    /// Whose record this is.
    pub slot: Slot,
    /// The process that wrote it; the next one counts on from here.
    pub incarnation: u64,
    /// The newest membership this worker knows was committed.
    pub committed: Option<Membership>,
    /// Every proposal accepted since `committed`'s generation, oldest first, each holding
    /// `slot`, generations strictly rising. The last is the promise.
    pub accepted: Vec<Membership>,
}

impl AcceptorRecord {
    /// The newest membership accepted (or, with none since, committed): no proposal at or below
    /// its generation will be accepted.
    pub fn promised(&self) -> Option<&Membership> {
        self.accepted.last().or(self.committed.as_ref())
    }

    /// The record's bytes, to be written to disk.
    pub fn encode(&self) -> Vec<u8> {
        bincode::DefaultOptions::new()
            .serialize(&(RECORD_MAGIC, self))
            .expect("bincode writes these types to a Vec without fail: no size limit, every length known")
    }

    /// The record in `bytes`, bounded and checked.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(DecodeError::Malformed(format!("{} bytes, more than a record's {MAX_RECORD_BYTES}", bytes.len())));
        }
        let (magic, record): (u32, AcceptorRecord) =
            options(MAX_RECORD_BYTES).deserialize(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if magic != RECORD_MAGIC {
            return Err(DecodeError::Invalid(format!("not an acceptor record (magic {magic:#x})")));
        }
        record.validate().map_err(DecodeError::Invalid)?;
        Ok(record)
    }

    /// Checks the invariants in the field docs.
    pub fn validate(&self) -> Result<(), String> {
        if self.accepted.len() > MAX_ACCEPTED {
            return Err(format!("{} accepted proposals, more than {MAX_ACCEPTED}", self.accepted.len()));
        }
        if let Some(c) = &self.committed {
            c.validate()?;
        }
        let mut floor = self.committed.as_ref().map_or(0, |c| c.generation);
        for a in &self.accepted {
            a.validate()?;
            if a.generation <= floor {
                return Err(format!("accepted generation {} is not above {floor}", a.generation));
            }
            if !a.contains(self.slot) {
                return Err(format!("accepted generation {} does not hold {}", a.generation, self.slot));
            }
            floor = a.generation;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(generation: u64, slots: &[u32]) -> Membership {
        Membership::new(generation, slots.iter().map(|&s| (Slot(s), 1)))
    }

    fn record() -> AcceptorRecord {
        AcceptorRecord {
            slot: Slot(1),
            incarnation: 4,
            committed: Some(of(3, &[0, 1, 2, 3])),
            accepted: vec![of(4, &[0, 1, 2]), of(6, &[1, 2, 3])],
        }
    }

    #[test]
    fn round_trip_and_promise() {
        let r = record();
        assert_eq!(AcceptorRecord::decode(&r.encode()), Ok(r.clone()));
        assert_eq!(r.promised().map(|m| m.generation), Some(6));
        let none = AcceptorRecord { slot: Slot(0), incarnation: 1, committed: None, accepted: Vec::new() };
        assert_eq!(AcceptorRecord::decode(&none.encode()), Ok(none.clone()));
        assert_eq!(none.promised(), None);
    }

    #[test]
    fn damaged_or_foreign_bytes_are_errors() {
        let bytes = record().encode();
        for cut in 0..bytes.len() {
            assert!(AcceptorRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let msg = crate::message::encode(&crate::message::Message::Heartbeat { generation: 3 });
        assert!(AcceptorRecord::decode(&msg).is_err());
        let mut wrong_magic = bytes.clone();
        wrong_magic[0] ^= 1;
        assert!(AcceptorRecord::decode(&wrong_magic).is_err());
    }

    #[test]
    fn inconsistent_records_are_refused() {
        let mut r = record();
        r.accepted.swap(0, 1);
        assert!(r.validate().is_err(), "generations must rise");
        let mut r = record();
        r.accepted[0] = of(2, &[0, 1, 2]);
        assert!(r.validate().is_err(), "accepted at or below the committed generation");
        let mut r = record();
        r.accepted[1] = of(6, &[0, 2, 3]);
        assert!(r.validate().is_err(), "an accepted proposal without this worker");
        let mut r = record();
        r.accepted = (4..4 + MAX_ACCEPTED as u64 + 1).map(|g| of(g, &[1])).collect();
        assert!(AcceptorRecord::decode(&r.encode()).is_err());
    }
}
