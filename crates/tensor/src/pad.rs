//! Zero-padding of the channel axis, the WRN and PyramidNet shortcut when a block widens.
//!
//! In the `(C, N, H, W)` layout each channel is one contiguous run, so padding `C_in` channels to
//! `C_out` is a copy of the first `C_in·M` values and a fill of the rest; its backward keeps the
//! first `C_in·M` values of the gradient. New channels go after the old ones, as `jnp.pad` with
//! `(0, C_out − C_in)` on the last axis does in the reference.

use crate::{TensorError, check_len};

/// `out (C_out, M)` = `inp (C_in, M)` followed by zero channels.
pub fn channel_pad_forward(out: &mut [f32], inp: &[f32], c_in: usize, c_out: usize, m: usize) -> Result<(), TensorError> {
    crate::profile::timed("channel pad forward", 0.0, || {
        if c_out < c_in {
            return Err(TensorError::Shape { op: "channel_pad_forward", msg: format!("cannot pad {c_in} channels down to {c_out}") });
        }
        check_len("channel_pad_forward", "input", inp.len(), c_in * m)?;
        check_len("channel_pad_forward", "output", out.len(), c_out * m)?;
        out[..c_in * m].copy_from_slice(inp);
        out[c_in * m..].fill(0.0);
        Ok(())
    })
}

/// Backward of [`channel_pad_forward`]: `dinp` (overwritten) is the first `C_in` channels of `dout`.
pub fn channel_pad_backward(dinp: &mut [f32], dout: &[f32], c_in: usize, c_out: usize, m: usize) -> Result<(), TensorError> {
    crate::profile::timed("channel pad backward", 0.0, || {
        check_len("channel_pad_backward", "input gradient", dinp.len(), c_in * m)?;
        check_len("channel_pad_backward", "output gradient", dout.len(), c_out * m)?;
        dinp.copy_from_slice(&dout[..c_in * m]);
        Ok(())
    })
}
