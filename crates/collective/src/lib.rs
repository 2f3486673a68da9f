//! ringsam-collective: the ring all-reduce's transports, between replicas.
//!
//! Layered like quinn: the protocol is `ringsam-ring`'s [`Ring`], a deterministic state machine
//! that does no I/O and reads no clock (re-exported here with its types). This crate holds the
//! thin loops that drive it over real links: [`inproc`] channels, [`tcp`] with an HMAC
//! handshake, [`quic`] with mutual TLS against a cluster CA ([`certs`]), all through one
//! [`driver`], which also takes in-memory pipes between ranks of one process ([`local_link`]).
//! It also drives `ringsam-membership`'s rendezvous over authenticated UDP ([`control`]): who is
//! in the job, and at which generation.
//!
//! What it is not: it knows nothing of models or tensors; it moves flat `f32` buffers.
#![warn(missing_docs)]

pub mod certs;
mod chunk_frames;
pub mod control;
pub mod driver;
mod either_link;
pub mod inproc;
pub mod k8s_secret;
pub mod local_link;
pub mod local_ranks;
pub mod quic;
pub mod quic_crypto;
#[cfg(target_os = "linux")]
mod quic_direct;
#[cfg(feature = "unsealed-quic-bench")]
mod quic_unsealed;
pub mod tcp;
pub mod transport;

pub use driver::{PendingAllreduce, RingAborter, RingHandle};
pub use ringsam_ring::{
    FrameHeader, FrameKind, Group, Loan, OpId, Rank, ReduceOp, Ring, RingConfig, RingError, RingEvent, Segments, Values, frame, group_of,
    ring, ring_neighbors, schedule,
};
