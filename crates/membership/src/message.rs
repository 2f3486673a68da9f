//! [`Message`]: what workers say to each other, and its bytes ([`encode`], [`decode`]).
//!
//! The wire is bincode 1.3 with its `DefaultOptions` (little endian, varint integers). A peer can
//! send anything, so [`decode`] bounds the bytes it reads ([`MAX_MESSAGE_BYTES`]) before serde
//! allocates anything, refuses trailing bytes, and then checks the content
//! ([`Message::validate`]): every membership valid, every list bounded. Only then does a message
//! reach the state machine.
//!
//! # Memory
//! A message is at most [`MAX_MESSAGE_BYTES`]; the largest we build is a Join advertising
//! 1 + [`MAX_ACCEPTED`] memberships of [`MAX_SLOTS`](crate::MAX_SLOTS) members (about 160 KiB at
//! 9 bytes a member), so every message we send can be received.

use bincode::Options;
use serde::{Deserialize, Serialize};

use crate::membership::{MAX_GENERATION, MAX_REPLICAS, Membership, Slot, StateTag};
use crate::record::MAX_ACCEPTED;

/// The largest message [`decode`] reads.
pub const MAX_MESSAGE_BYTES: u64 = 256 * 1024;

/// Why bytes are not a message (or not a record).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not bincode of the expected type: truncated, too long, trailing bytes, an unknown variant.
    #[error("malformed bytes: {0}")]
    Malformed(String),
    /// Well-formed bytes whose content breaks an invariant (unsorted members, a bad count).
    #[error("invalid content: {0}")]
    Invalid(String),
}

/// Where the members of a new generation get the training state from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateSource {
    /// `from` holds `tag` in memory, the newest state among the members: every member lacking
    /// exactly that state receives it streamed from `from`.
    Memory {
        /// The lowest slot holding `tag`.
        from: Slot,
        /// The state to resume from.
        tag: StateTag,
    },
    /// No member holds any state: all resume from the newest valid checkpoint.
    Disk,
}

/// Why an acceptor refused a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RejectReason {
    /// Its generation is not above what the acceptor already promised or committed.
    Stale,
    /// The acceptor is not in it.
    NotMember,
    /// It lacks a majority of a membership the acceptor accepted or saw committed.
    NoQuorum,
    /// The acceptor remembers [`MAX_ACCEPTED`] uncommitted proposals already and takes no other
    /// until it learns of a commit (see the crate docs).
    Full,
    /// It names the acceptor with other replicas than it has, or comes from a non-member.
    Invalid,
}

/// What workers say to each other. The driver sends each to the slot named by
/// [`Rendezvous::poll_transmit`](crate::Rendezvous::poll_transmit), resolving its address anew
/// each time (a restarted worker may have moved).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// "I am forming": sent to every slot each heartbeat while forming.
    Join {
        /// Ranks the sender owns.
        replicas: u32,
        /// Which process of the slot this is: higher after each restart, so Joins from a dead
        /// process that arrive late are told apart.
        incarnation: u64,
        /// The training state the sender holds in memory, if any.
        state: Option<StateTag>,
        /// The newest membership the sender knows was committed.
        committed: Option<Membership>,
        /// Every proposal the sender accepted since then, oldest first: a proposal must hold a
        /// majority of each, and of `committed`, for the sender to accept it.
        accepted: Vec<Membership>,
    },
    /// "I run this generation": sent to every other member each heartbeat while running.
    Heartbeat {
        /// The sender's running generation.
        generation: u64,
    },
    /// "Form this": from the leader to every other proposed member.
    Propose {
        /// The membership proposed; it holds the proposer.
        proposal: Membership,
        /// The newest membership the proposer knows was committed (acceptors learn from it).
        basis: Option<Membership>,
    },
    /// "I accept that generation" (sent once the promise is on disk).
    Accept {
        /// The accepted proposal's generation.
        generation: u64,
    },
    /// "I refuse that generation".
    Reject {
        /// The refused proposal's generation.
        generation: u64,
        /// The newest membership the rejecter accepted or saw committed, so the proposer's next
        /// generation is higher.
        newest: Option<Membership>,
        /// Why.
        reason: RejectReason,
    },
    /// "Every member accepted: run it": from the proposer to every other member.
    Commit {
        /// The membership that formed.
        membership: Membership,
        /// Where its members get the training state.
        source: StateSource,
    },
}

impl Message {
    /// Checks everything a peer could get wrong (see the module docs).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Message::Join { replicas, committed, accepted, .. } => {
                if *replicas == 0 || *replicas > MAX_REPLICAS {
                    return Err(format!("a Join for {replicas} ranks, not 1..={MAX_REPLICAS}"));
                }
                if accepted.len() > MAX_ACCEPTED {
                    return Err(format!("a Join advertising {} accepted proposals, more than {MAX_ACCEPTED}", accepted.len()));
                }
                committed.iter().chain(accepted).try_for_each(Membership::validate)
            }
            Message::Heartbeat { generation } | Message::Accept { generation } => check_generation(*generation),
            Message::Propose { proposal, basis } => {
                proposal.validate()?;
                basis.iter().try_for_each(Membership::validate)
            }
            Message::Reject { generation, newest, .. } => {
                check_generation(*generation)?;
                newest.iter().try_for_each(Membership::validate)
            }
            Message::Commit { membership, source } => {
                membership.validate()?;
                if let StateSource::Memory { from, .. } = source
                    && !membership.contains(*from)
                {
                    return Err(format!("a Commit streaming state from {from}, which is not a member"));
                }
                Ok(())
            }
        }
    }
}

fn check_generation(generation: u64) -> Result<(), String> {
    if generation > MAX_GENERATION {
        return Err(format!("generation {generation} beyond {MAX_GENERATION}"));
    }
    Ok(())
}

/// bincode's `DefaultOptions` reading at most `limit` bytes, refusing trailing bytes.
pub(crate) fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new().with_limit(limit).reject_trailing_bytes()
}

/// The bytes of `msg`.
pub fn encode(msg: &Message) -> Vec<u8> {
    bincode::DefaultOptions::new()
        .serialize(msg)
        .expect("bincode writes these types to a Vec without fail: no size limit, every length known")
}

/// The message in `bytes`, bounded and checked (see the module docs).
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    if bytes.len() as u64 > MAX_MESSAGE_BYTES {
        return Err(DecodeError::Malformed(format!("{} bytes, more than a message's {MAX_MESSAGE_BYTES}", bytes.len())));
    }
    let msg: Message = options(MAX_MESSAGE_BYTES).deserialize(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    msg.validate().map_err(DecodeError::Invalid)?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(generation: u64, slots: &[u32]) -> Membership {
        Membership::new(generation, slots.iter().map(|&s| (Slot(s), 1)))
    }

    fn every_kind() -> Vec<Message> {
        let tag = StateTag { generation: 3, step: 1234 };
        vec![
            Message::Join {
                replicas: 1,
                incarnation: 7,
                state: Some(tag),
                committed: Some(of(3, &[0, 1, 2])),
                accepted: vec![of(4, &[0, 1]), of(6, &[0, 1, 3])],
            },
            Message::Join { replicas: 2, incarnation: 1, state: None, committed: None, accepted: Vec::new() },
            Message::Heartbeat { generation: 9 },
            Message::Propose { proposal: of(10, &[0, 1, 2, 300]), basis: Some(of(9, &[0, 1, 2])) },
            Message::Propose { proposal: of(1, &[0]), basis: None },
            Message::Accept { generation: 10 },
            Message::Reject { generation: 10, newest: Some(of(11, &[1, 2])), reason: RejectReason::Stale },
            Message::Reject { generation: 10, newest: None, reason: RejectReason::NoQuorum },
            Message::Commit { membership: of(10, &[0, 1, 2]), source: StateSource::Memory { from: Slot(1), tag } },
            Message::Commit { membership: of(10, &[0, 1, 2]), source: StateSource::Disk },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for msg in every_kind() {
            let bytes = encode(&msg);
            assert_eq!(decode(&bytes).as_ref(), Ok(&msg));
        }
    }

    #[test]
    fn truncated_and_trailing_bytes_are_errors() {
        for msg in every_kind() {
            let bytes = encode(&msg);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "{msg:?} cut at {cut} of {}", bytes.len());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(matches!(decode(&longer), Err(DecodeError::Malformed(_))), "{msg:?} with a trailing byte");
        }
    }

    #[test]
    fn oversized_bytes_and_lengths_are_errors_not_allocations() {
        assert!(decode(&vec![0u8; MAX_MESSAGE_BYTES as usize + 1]).is_err());
        // A Propose (variant 2) at generation 1 whose member list claims 2^40 entries (varint tag
        // 253: a u64 follows), then one member: refused when the bytes run out, without
        // reserving 2^40 members (serde preallocates at most 1 MiB of a claimed length).
        let mut bytes = vec![2u8, 1, 253];
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        bytes.extend_from_slice(&[0, 1, 0]);
        assert!(matches!(decode(&bytes), Err(DecodeError::Malformed(_))));
        // An unknown variant.
        assert!(decode(&[200]).is_err());
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 56) as u8
                })
                .collect();
            if let Ok(msg) = decode(&bytes) {
                msg.validate().unwrap();
            }
        }
    }

    #[test]
    fn content_is_checked_after_decoding() {
        let mut unsorted = of(5, &[0, 1, 2]);
        unsorted.members.swap(0, 2);
        let bytes = encode(&Message::Propose { proposal: unsorted, basis: None });
        assert!(matches!(decode(&bytes), Err(DecodeError::Invalid(_))));
        let mut duplicate = of(5, &[0, 1]);
        duplicate.members[1].slot = Slot(0);
        duplicate.members[1].first_rank = 1;
        let bytes = encode(&Message::Commit { membership: duplicate, source: StateSource::Disk });
        assert!(matches!(decode(&bytes), Err(DecodeError::Invalid(_))));
        let stranger = Message::Commit {
            membership: of(5, &[0, 1]),
            source: StateSource::Memory { from: Slot(9), tag: StateTag { generation: 1, step: 1 } },
        };
        assert!(matches!(decode(&encode(&stranger)), Err(DecodeError::Invalid(_))));
        let crowded =
            Message::Join { replicas: 1, incarnation: 1, state: None, committed: None, accepted: vec![of(1, &[0]); MAX_ACCEPTED + 1] };
        assert!(matches!(decode(&encode(&crowded)), Err(DecodeError::Invalid(_))));
        let huge = Message::Join { replicas: MAX_REPLICAS + 1, incarnation: 1, state: None, committed: None, accepted: Vec::new() };
        assert!(matches!(decode(&encode(&huge)), Err(DecodeError::Invalid(_))));
    }
}
