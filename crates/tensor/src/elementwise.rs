//! Element-wise arithmetic on flat buffers: add, scale, axpy.

use crate::TensorError;
use crate::activation::{map2 as elementwise_map, map3 as elementwise_zip};

/// `out = a + b`.
pub fn add_forward(out: &mut [f32], a: &[f32], b: &[f32]) -> Result<(), TensorError> {
    crate::profile::timed("add (residual sums)", 0.0, || elementwise_zip("add_forward", out, a, b, |x, y| x + y))
}

/// `out = alpha · a`.
pub fn scale(out: &mut [f32], a: &[f32], alpha: f32) -> Result<(), TensorError> {
    elementwise_map("scale", out, a, |x| alpha * x)
}

/// `y += alpha · x`.
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) -> Result<(), TensorError> {
    crate::check_len("axpy", "x", x.len(), y.len())?;
    y.iter_mut().zip(x).for_each(|(y, &x)| *y += alpha * x);
    Ok(())
}

/// `y += x`.
pub fn add_inplace(y: &mut [f32], x: &[f32]) -> Result<(), TensorError> {
    axpy(y, 1.0, x)
}
