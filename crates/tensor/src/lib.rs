//! ringsam-tensor: devices, tensors and the CPU kernels of ringsam's CNN engine.
//!
//! What it is: the bottom of the engine. A [`Tensor`] is a row-major shape plus `f32` storage on a
//! [`Device`]; kernels are free functions named `<op>_forward` / `<op>_backward` that take their
//! outputs first, then inputs, then a small `Copy` shape struct. The fast kernels whose arithmetic
//! is not obvious (convolution, GEMM) have an obvious `_ref` twin beside them, kept as the
//! reference the tests compare against; the others are checked against finite differences.
//!
//! What it is not: there is no autograd tape and no operator overloading. Layers (in `ringsam-nn`)
//! call these kernels explicitly in forward order and in reverse for the backward pass.
//!
//! # Activation layout
//! Image activations are stored **(C, N, H, W)** ("CNHW"), not NCHW. Why: with the channel outermost
//! a convolution is exactly one GEMM `(K × RSC) · (RSC × NPQ)` whose result is already in CNHW, and
//! batch norm reduces over a contiguous run of `N·H·W` values per channel. NCHW would need a
//! transpose after every convolution. [`Tensor::from_nchw`] and [`Tensor::to_nchw`] convert at the
//! edges (data loading, fixtures).
//!
//! # Threads
//! One rayon pool owns the cores ([`threads::configure`]). Kernels parallelise either inside GEMM or
//! over channels, never both at once: a kernel that calls [`gemm()`] does so from the calling
//! thread, not from inside a parallel iterator, so there is no nested parallelism.
#![warn(missing_docs)]

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod depthwise;
pub mod device;
mod device_shapes;
pub mod elementwise;
pub mod error;
mod exp;
pub mod gemm;
pub mod im2col;
pub mod loss;
pub mod pad;
pub mod planes;
pub mod pool;
pub mod profile;
pub mod simd;
mod spare;
pub mod tensor;
pub mod threads;

pub use device::Device;
pub use error::TensorError;
pub use gemm::{MatMut, MatRef, gemm, gemm_ref};
pub use tensor::Tensor;

/// Checks that a buffer has the length a kernel expects, naming the operation and the buffer.
///
/// Kernels call this on every argument before touching memory, so a caller's mistake becomes a
/// [`TensorError::Shape`] rather than an index panic deep inside a loop.
pub(crate) fn check_len(op: &'static str, what: &'static str, got: usize, expected: usize) -> Result<(), TensorError> {
    if got != expected {
        return Err(TensorError::Len { op, what, expected, got });
    }
    Ok(())
}
