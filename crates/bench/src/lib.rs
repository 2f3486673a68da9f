//! ringsam-bench: the measurements behind `ringsam bench`, as library code the binary calls.
//!
//! [`step`] times SGD and SAM training steps; [`allreduce`] times the ring in the style of
//! nccl-tests, and [`allreduce_ranks`] runs it as one rank of a ring or starts every rank on this
//! machine; [`plot`] draws its figure; [`cipher`] times the AEAD that QUIC seals every packet
//! with; [`link`] measures the line rate a path carries, which the
//! ring's bandwidth is compared with; [`loader`] times the ImageNet loader pool; [`recovery`]
//! times an elastic job's recovery after a loss; [`kernels`] gives the GPU kernels' self-test its
//! CPU reference; [`engine`] holds whole models and the SAM step on a device to the CPU's. Figures measured
//! with these live in docs/BENCHMARKS.md, never in code.
#![warn(missing_docs)]

pub mod allreduce;
pub mod allreduce_ranks;
pub mod cipher;
pub mod engine;
pub mod kernels;
pub mod link;
pub mod loader;
pub mod plot;
pub mod recovery;
pub mod step;
