//! Stand-alone element-wise activations (ReLU after batch norm is fused into [`super::BatchNorm`]).

use ringsam_kernels::activation as device;
use ringsam_tensor::Tensor;
use ringsam_tensor::activation::{relu_backward, relu_forward, sigmoid_backward, sigmoid_forward, silu_backward, silu_forward};

use super::{Buffers, Layer, expect_same};
use crate::device::OnDevice;
use crate::error::KernelContext;
use crate::{NnError, Pass};

/// Which activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationKind {
    /// max(x, 0)
    Relu,
    /// x·σ(x) (swish)
    Silu,
    /// σ(x)
    Sigmoid,
}

/// An activation layer of any shape.
#[derive(Debug)]
pub struct Activation {
    name: String,
    kind: ActivationKind,
    buffers: Buffers,
}

impl Activation {
    /// A parameter-free activation.
    pub fn new(name: &str, kind: ActivationKind) -> Self {
        Activation { name: name.to_string(), kind, buffers: Buffers::default() }
    }
}

impl ActivationKind {
    /// The same activation among the device's kernels.
    fn for_device(self) -> device::Activation {
        match self {
            ActivationKind::Relu => device::Activation::Relu,
            ActivationKind::Silu => device::Activation::Silu,
            ActivationKind::Sigmoid => device::Activation::Sigmoid,
        }
    }
}

impl Layer for Activation {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_device(&self) -> bool {
        true
    }

    fn forward(&mut self, _params: &Tensor, _state: &mut Tensor, x: &Tensor, _pass: &Pass) -> Result<(), NnError> {
        if let Some(dev) = OnDevice::of(&self.name, x) {
            let (out, inp) = (dev.place(&mut self.buffers.out, x.shape(), x)?, dev.buf(x)?);
            return dev.run(|l| device::forward(l, self.kind.for_device(), out, inp));
        }
        self.buffers.out.resize(x.shape());
        let (o, i) = (self.buffers.out.as_mut_slice(), x.as_slice());
        match self.kind {
            ActivationKind::Relu => relu_forward(o, i),
            ActivationKind::Silu => silu_forward(o, i),
            ActivationKind::Sigmoid => sigmoid_forward(o, i),
        }
        .in_layer(&self.name)
    }

    fn backward(&mut self, _params: &Tensor, _grads: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        expect_same(&self.name, dout, &self.buffers.out)?;
        if let Some(dev) = OnDevice::of(&self.name, x) {
            // What the CPU keeps for each: the output for ReLU and sigmoid, the input for SiLU.
            let kept = if self.kind == ActivationKind::Silu { dev.buf(x)? } else { dev.buf(&self.buffers.out)? };
            let (dinp, dy) = (dev.place(&mut self.buffers.dinp, x.shape(), x)?, dev.buf(dout)?);
            return dev.run(|l| device::backward(l, self.kind.for_device(), dinp, dy, kept));
        }
        self.buffers.dinp.resize(x.shape());
        let (d, g) = (self.buffers.dinp.as_mut_slice(), dout.as_slice());
        match self.kind {
            ActivationKind::Relu => relu_backward(d, g, self.buffers.out.as_slice()),
            ActivationKind::Silu => silu_backward(d, g, x.as_slice()),
            ActivationKind::Sigmoid => sigmoid_backward(d, g, self.buffers.out.as_slice()),
        }
        .in_layer(&self.name)
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}
