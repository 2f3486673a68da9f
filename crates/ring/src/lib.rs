//! ringsam-ring: the ring all-reduce protocol of `f32` buffers, as a deterministic state machine.
//!
//! This crate stands to the transports (`ringsam-collective`) as quinn-proto stands to quinn.
//! [`Ring`] does no I/O, spawns nothing and reads no clock: callers feed it frames and the time
//! (`handle_*`) and drain what it wants sent, the deadline it wants to be woken at and its events
//! (`poll_*`). [`schedule`] is the pure arithmetic of which segment goes where at each step;
//! [`frame`] the wire header, every length bounded before anything is allocated. Because nothing
//! here touches the outside world, the whole protocol is tested in a simulator
//! (`tests/ring_sim.rs`) that reorders, cuts and delays frames at random and compares results
//! bitwise.
//!
//! What it is not: a transport (no sockets, no TLS, no async runtime: see `ringsam-collective`),
//! and it knows nothing of models or tensors; it reduces flat `f32` buffers.
#![warn(missing_docs)]

pub mod frame;
mod op_buffer;
pub mod ring;
pub mod schedule;

pub use frame::{FrameHeader, FrameKind};
pub use op_buffer::{Loan, Values};
pub use ring::{OpId, Rank, ReduceOp, Ring, RingConfig, RingError, RingEvent};
pub use schedule::{Group, Segments, group_of, ring_neighbors};
