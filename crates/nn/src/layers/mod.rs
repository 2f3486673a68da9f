//! Layers: explicit forward and backward, saved activations in buffers each layer owns.
//!
//! Conventions shared by every layer:
//! - image activations are `(C, N, H, W)` (see `ringsam-tensor`), features `(C, N)`, logits `(N, K)`;
//! - `forward` checks the input's shape against the layer's configuration and names the layer in
//!   the error; buffers are resized on the first call and reused afterwards;
//! - `backward(params, grads, x, dout)` takes the same input `x` the forward saw (the caller still
//!   owns it), adds parameter gradients into `grads` and writes the input gradient into the
//!   layer's `dinput()`;
//! - the output and the input gradient live in the layer's [`Buffers`], from which [`Layer`]
//!   provides `output()`, `dinput()` and `release_dinput()`.

use ringsam_tensor::Tensor;

use crate::{NnError, Pass};

mod activation;
mod batchnorm;
mod buffers;
mod conv;
mod drop_connect;
mod dropout;
mod linear;
mod pool;
mod shake;
mod shortcut;
mod squeeze_excite;
mod subsample;

pub use activation::{Activation, ActivationKind};
pub use batchnorm::{BatchNorm, BatchNormConfig};
pub use buffers::Buffers;
pub use conv::{Conv2d, Conv2dConfig, Padding};
pub use drop_connect::DropConnect;
pub use dropout::{Dropout, draw_mask};
pub use linear::{Linear, add_bias_gradient, broadcast_bias};
pub use pool::{AvgPool2d, GlobalAvgPool, MaxPool2d};
pub use shake::{ShakeDrop, ShakeShake, mix_examples, scale_examples};
pub use shortcut::PoolPadShortcut;
pub use squeeze_excite::SqueezeExcite;
pub use subsample::ShiftSubsample;

/// The interface every single-input layer implements (residual adds are plain function calls in
/// the models). It exists so the gradient checker can test every layer the same way, and so a
/// model can chain layers, and its residual blocks (layers made of layers), without knowing
/// their types.
pub trait Layer {
    /// The layer's Flax path.
    fn name(&self) -> &str;
    /// Computes `output()` from `x`. `state` is the model's state buffer (batch-norm statistics).
    fn forward(&mut self, params: &Tensor, state: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<(), NnError>;
    /// Given `dout = ∂L/∂output`, adds `∂L/∂params` into `grads` and writes `∂L/∂x` into `dinput()`.
    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError>;
    /// The layer's output and input-gradient buffers, which the methods below read.
    fn buffers(&self) -> &Buffers;
    /// The same buffers, to free the input gradient.
    fn buffers_mut(&mut self) -> &mut Buffers;
    /// The last forward's output.
    fn output(&self) -> &Tensor {
        self.buffers().output()
    }
    /// The last backward's input gradient.
    fn dinput(&self) -> &Tensor {
        self.buffers().dinput()
    }
    /// Frees the input-gradient buffer once the layer below has consumed it, so backward through
    /// a deep network holds one block's gradients at a time rather than every layer's (PyramidNet-272
    /// otherwise keeps ~0.3 GB of them per image). The next backward allocates it again.
    fn release_dinput(&mut self) {
        self.buffers_mut().release_dinput()
    }
    /// Whether the layer runs where its input is when that is a device (see `crate::device`).
    /// Layers without a device path say no, and a chain refuses to give them a device tensor,
    /// naming the layer, rather than let their CPU path meet device memory.
    fn on_device(&self) -> bool {
        false
    }
    /// Multiply-adds of the last forward, for GFLOP/s reports: layers that multiply by weights
    /// (convolutions, dense, squeeze-excitation) count them; the rest report 0.
    fn last_macs(&self) -> usize {
        0
    }
}

/// Shape error for `layer` that got `x` but wanted `expected`.
pub(crate) fn shape_error(layer: &str, expected: String, x: &Tensor) -> NnError {
    NnError::Shape { layer: layer.to_string(), expected, got: x.shape().to_vec() }
}

/// `x` as `(C, N, H, W)` with `C == channels`, or a shape error naming the layer.
pub(crate) fn expect_image(layer: &str, x: &Tensor, channels: usize) -> Result<[usize; 4], NnError> {
    match *x.shape() {
        [c, n, h, w] if c == channels && n > 0 && h > 0 && w > 0 => Ok([c, n, h, w]),
        _ => Err(shape_error(layer, format!("({channels}, N, H, W)"), x)),
    }
}

/// The values of `t` (parameters, gradients or statistics) for a layer's CPU path, or an error
/// naming the layer when `t` is on a device.
pub(crate) fn host<'a>(layer: &str, t: &'a Tensor) -> Result<&'a [f32], NnError> {
    t.host_slice("the CPU path").map_err(|source| NnError::Kernel { layer: layer.to_string(), source })
}

/// [`host`], mutably.
pub(crate) fn host_mut<'a>(layer: &str, t: &'a mut Tensor) -> Result<&'a mut [f32], NnError> {
    t.host_slice_mut("the CPU path").map_err(|source| NnError::Kernel { layer: layer.to_string(), source })
}

/// Checks that `dout` has the shape of the layer's output.
pub(crate) fn expect_same(layer: &str, dout: &Tensor, out: &Tensor) -> Result<(), NnError> {
    if dout.shape() != out.shape() {
        return Err(NnError::Shape {
            layer: format!("{layer} (backward)"),
            expected: format!("{:?}", out.shape()),
            got: dout.shape().to_vec(),
        });
    }
    Ok(())
}

/// Stable 64-bit key of a layer name, used to derive its random stream (FNV-1a).
pub(crate) fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}
