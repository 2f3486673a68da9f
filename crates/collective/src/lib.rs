//! ringsam-collective: ring all-reduce of `f32` buffers between replicas.
//!
//! Layered like quinn: [`ring::Ring`] is a deterministic state machine that does no I/O and reads
//! no clock — callers feed it frames and the time, and drain the frames it wants sent, the
//! deadline it wants to be woken at, and its events. Transports ([`inproc`] channels, [`tcp`]
//! with an HMAC handshake, [`quic`] with mutual TLS against a cluster CA) are thin loops
//! around it. [`schedule`] is the pure arithmetic of which
//! segment goes where at each step.
//!
//! What it is not: it knows nothing of models or tensors; it reduces flat `f32` buffers.
#![warn(missing_docs)]

pub mod bench;
pub mod certs;
mod chunk_frames;
pub mod driver;
pub mod frame;
pub mod inproc;
pub mod link;
mod op_buffer;
pub mod plot;
pub mod quic;
pub mod ring;
pub mod schedule;
pub mod tcp;

pub use driver::{PendingAllreduce, RingHandle};
pub use frame::{FrameHeader, FrameKind};
pub use op_buffer::Loan;
pub use ring::{OpId, Rank, ReduceOp, Ring, RingConfig, RingError, RingEvent};
pub use schedule::{Group, Segments, group_of, ring_neighbors};
