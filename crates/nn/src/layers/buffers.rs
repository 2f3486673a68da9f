//! The two activation buffers every layer keeps: its output and its input gradient.

use ringsam_tensor::Tensor;

/// A layer's output, saved by `forward` for the next layer and for its own `backward`, and its
/// input gradient, written by `backward`. A layer embeds one and returns it from
/// [`super::Layer::buffers`]; the trait's `output`, `dinput` and `release_dinput` read it from
/// there, so no layer writes those three again. The fields are public so one kernel call can
/// write one buffer while it reads the other.
#[derive(Debug)]
pub struct Buffers {
    /// The last forward's output.
    pub out: Tensor,
    /// The last backward's input gradient (empty once released).
    pub dinp: Tensor,
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers { out: Tensor::empty(), dinp: Tensor::empty() }
    }
}

impl Buffers {
    /// The last forward's output.
    pub fn output(&self) -> &Tensor {
        &self.out
    }

    /// The last backward's input gradient.
    pub fn dinput(&self) -> &Tensor {
        &self.dinp
    }

    /// Frees the input gradient (see [`super::Layer::release_dinput`]).
    pub fn release_dinput(&mut self) {
        self.dinp.release();
    }
}
