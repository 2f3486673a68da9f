//! A chain of layers run forward in order and backward in reverse: a network's stem, its head,
//! or its body of residual blocks (a residual block is a layer made of layers).
//!
//! The chain's backward also places the reports of [`crate::Model::backward_notify`], so that no
//! model writes them by hand, and they fall as backward runs from the head to the stem:
//! - a *sequential* chain (a stem, a head, a plain body) reports its first parameter's offset once
//!   backward has passed the first of its layers that declares parameters: the layers before that
//!   one hold none, so from then on every gradient of the chain, and of what follows it, is final;
//! - a chain of *blocks* reports after every block, and frees block `i + 1`'s input gradient once
//!   block `i` has consumed it — so a deep network holds one block's backward buffers at a time.

use ringsam_nn::{Layer, NnError, Pass};
use ringsam_tensor::{Tensor, TensorError};

use crate::layer_factory::LayerFactory;

/// How a chain reports its gradients and frees its buffers (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grouping {
    Sequential,
    Blocks,
}

/// See the module docs. Never empty.
pub(crate) struct Chain {
    layers: Vec<Box<dyn Layer + Send>>,
    /// `reports[i]`: the offset reported once layer `i`'s backward is done, if any.
    reports: Vec<Option<usize>>,
    grouping: Grouping,
}

/// Appends layers, made by the model's [`LayerFactory`], to a chain.
pub(crate) struct ChainBuilder<'f> {
    factory: &'f mut LayerFactory,
    start: usize, // the chain's first parameter offset
    chain: Chain,
}

impl Chain {
    /// A sequential chain of layers from `layers`.
    pub(crate) fn sequential(layers: &mut LayerFactory) -> ChainBuilder<'_> {
        Self::builder(layers, Grouping::Sequential)
    }

    /// A chain of residual blocks from `layers`.
    pub(crate) fn blocks(layers: &mut LayerFactory) -> ChainBuilder<'_> {
        Self::builder(layers, Grouping::Blocks)
    }

    fn builder(layers: &mut LayerFactory, grouping: Grouping) -> ChainBuilder<'_> {
        let start = layers.params_declared();
        ChainBuilder { factory: layers, start, chain: Chain { layers: Vec::new(), reports: Vec::new(), grouping } }
    }

    /// Runs every layer, each on the previous one's output; the first on `x`.
    pub(crate) fn forward(&mut self, params: &Tensor, state: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<(), NnError> {
        for i in 0..self.layers.len() {
            let (before, rest) = self.layers.split_at_mut(i);
            let input = before.last().map_or(x, |l| l.output());
            if input.gpu().is_some() && !rest[0].on_device() {
                let source = TensorError::CudaNotImplemented { op: "its device path" };
                return Err(NnError::Kernel { layer: rest[0].name().to_string(), source });
            }
            rest[0].forward(params, state, input, pass)?;
        }
        Ok(())
    }

    /// The last layer's output.
    pub(crate) fn output(&self) -> &Tensor {
        self.layers.last().expect("a chain is never empty").output()
    }

    /// Backward from `dout` (the gradient of `output()`) to the chain's input `x`, calling `ready`
    /// and freeing buffers as the module docs say.
    pub(crate) fn backward(
        &mut self,
        params: &Tensor,
        grads: &mut Tensor,
        x: &Tensor,
        dout: &Tensor,
        ready: &mut dyn FnMut(&mut Tensor, usize),
    ) -> Result<(), NnError> {
        for i in (0..self.layers.len()).rev() {
            let (before, from_here) = self.layers.split_at_mut(i);
            let (layer, after) = from_here.split_first_mut().expect("i < len");
            let input = before.last().map_or(x, |l| l.output());
            layer.backward(params, grads, input, after.first().map_or(dout, |l| l.dinput()))?;
            if self.grouping == Grouping::Blocks
                && let Some(next) = after.first_mut()
            {
                next.release_dinput();
            }
            if let Some(offset) = self.reports[i] {
                ready(grads, offset);
            }
        }
        Ok(())
    }

    /// The gradient reaching the chain's input (the first layer's input gradient).
    pub(crate) fn dinput(&self) -> &Tensor {
        self.layers.first().expect("a chain is never empty").dinput()
    }

    /// Multiply-adds of the last forward.
    pub(crate) fn macs(&self) -> usize {
        self.layers.iter().map(|l| l.last_macs()).sum()
    }

    /// Multiply-adds of the first layer's last forward.
    pub(crate) fn first_layer_macs(&self) -> usize {
        self.layers.first().map_or(0, |l| l.last_macs())
    }
}

impl ChainBuilder<'_> {
    /// Appends the layer `make` makes with the model's layer factory.
    pub(crate) fn then<L: Layer + Send + 'static>(mut self, make: impl FnOnce(&mut LayerFactory) -> L) -> Self {
        let from = self.factory.params_declared();
        let layer = make(&mut *self.factory);
        let declares_params = self.factory.params_declared() > from;
        let report = match self.chain.grouping {
            Grouping::Blocks => Some(from),
            Grouping::Sequential if declares_params && !self.reports_yet() => Some(self.start),
            Grouping::Sequential => None,
        };
        self.chain.layers.push(Box::new(layer));
        self.chain.reports.push(report);
        self
    }

    /// The finished chain. Panics when it has no layer.
    pub(crate) fn build(mut self) -> Chain {
        assert!(!self.chain.layers.is_empty(), "a chain needs at least one layer");
        // A chain without parameters still reports once, when its whole backward is done.
        if !self.reports_yet() {
            self.chain.reports[0] = Some(self.start);
        }
        self.chain
    }

    fn reports_yet(&self) -> bool {
        self.chain.reports.iter().any(Option::is_some)
    }
}

#[cfg(test)]
mod tests {
    use ringsam_nn::layers::Buffers;

    use super::*;

    /// A layer with no device path (every layer of the zoo has one now; a new one may not).
    #[derive(Default)]
    struct HostOnly(Buffers);

    impl Layer for HostOnly {
        fn name(&self) -> &str {
            "HostOnly_0"
        }
        fn forward(&mut self, _: &Tensor, _: &mut Tensor, _: &Tensor, _: &Pass) -> Result<(), NnError> {
            Ok(())
        }
        fn backward(&mut self, _: &Tensor, _: &mut Tensor, _: &Tensor, _: &Tensor) -> Result<(), NnError> {
            Ok(())
        }
        fn buffers(&self) -> &Buffers {
            &self.0
        }
        fn buffers_mut(&mut self) -> &mut Buffers {
            &mut self.0
        }
    }

    #[test]
    fn a_layer_without_a_device_path_is_refused_by_name_on_a_device() {
        let mut factory = LayerFactory::default();
        let mut chain = Chain::sequential(&mut factory).then(|_| HostOnly::default()).build();
        let gpu = ringsam_kernels_emu::emulated_gpu();
        let (p, mut s) = (Tensor::zeros_on(&[1], &gpu).unwrap(), Tensor::zeros_on(&[1], &gpu).unwrap());
        let x = Tensor::zeros_on(&[1, 1, 2, 2], &gpu).unwrap();
        let err = chain.forward(&p, &mut s, &x, &Pass::eval()).unwrap_err().to_string();
        assert!(err.contains("layer HostOnly_0") && err.contains("not implemented on CUDA yet"), "{err}");
        let host = Tensor::from_vec(&[1, 1, 2, 2], vec![0.0; 4]).unwrap();
        chain.forward(&Tensor::from(vec![0.0]), &mut Tensor::from(vec![0.0]), &host, &Pass::eval()).unwrap();
    }
}
