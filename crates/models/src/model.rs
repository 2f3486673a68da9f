//! The interface every model implements.

use ringsam_nn::{NnError, ParamLayout, Pass, StateLayout};
use ringsam_tensor::Tensor;

/// What a model is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// Classifier outputs.
    pub num_classes: usize,
    /// Image channels (3 for RGB, 1 for Fashion-MNIST and digits).
    pub in_channels: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig { num_classes: 10, in_channels: 3 }
    }
}

/// A classifier over `(C, N, H, W)` images producing `(N, num_classes)` logits.
///
/// Parameters and state live outside the model, in buffers laid out by [`Model::layout`] and
/// [`Model::state_layout`]: the model holds only ids and its activation buffers. That is what lets
/// SAM run pass 2 on a second parameter buffer (`w + e`) without touching `w`.
pub trait Model: Send {
    /// Registry name.
    fn name(&self) -> &str;
    /// Trainable parameters, in declaration (= buffer) order.
    fn layout(&self) -> &ParamLayout;
    /// Batch-norm running statistics.
    fn state_layout(&self) -> &StateLayout;
    /// The build configuration.
    fn config(&self) -> ModelConfig;
    /// Fills parameters and state with the reference's initialisation (see [`crate::init`]).
    fn init(&self, params: &mut [f32], state: &mut [f32], seed: u64);
    /// Runs the network on `x (C, N, H, W)`; returns logits `(N, num_classes)`.
    fn forward(&mut self, params: &Tensor, state: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<&Tensor, NnError>;
    /// Backward from `dlogits (N, num_classes)`: adds parameter gradients into `grads`. Must follow
    /// a `forward` on the same `params` and `x`.
    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dlogits: &Tensor) -> Result<(), NnError>;
    /// [`Model::backward`], calling `ready(grads, offset)` each time every gradient at index
    /// `>= offset` is final. Backward walks the layers from last to first and the buffer lies in
    /// declaration order, so `offset` only falls; a data-parallel caller sends those gradients to
    /// the ring while the rest of backward runs (DDP's bucket hooks). The last call has offset 0.
    /// The default reports everything at once, after the whole backward.
    fn backward_notify(
        &mut self,
        params: &Tensor,
        grads: &mut Tensor,
        x: &Tensor,
        dlogits: &Tensor,
        ready: &mut dyn FnMut(&mut Tensor, usize),
    ) -> Result<(), NnError> {
        self.backward(params, grads, x, dlogits)?;
        ready(grads, 0);
        Ok(())
    }
    /// Multiply-adds of the last forward pass (for GFLOP/s reports): convolutions and dense layers.
    fn last_forward_macs(&self) -> usize;
    /// Multiply-adds of the backward pass matching the last forward: data and weight gradients of
    /// every convolution and dense layer (the first layer computes no data gradient).
    fn last_backward_macs(&self) -> usize;
}

/// The check every forward starts with: buffers of the layouts' sizes.
pub(crate) fn check_buffers(layout: &ParamLayout, state_layout: &StateLayout, params: usize, state: usize) -> Result<(), NnError> {
    if params != layout.total() {
        return Err(NnError::ParamLen { expected: layout.total(), got: params });
    }
    if state != state_layout.total() {
        return Err(NnError::ParamLen { expected: state_layout.total(), got: state });
    }
    Ok(())
}

/// The checks every backward starts with: parameters of the layout's size, gradients of theirs.
pub(crate) fn check_backward_buffers(
    layout: &ParamLayout,
    state_layout: &StateLayout,
    params: &Tensor,
    grads: &Tensor,
) -> Result<(), NnError> {
    check_buffers(layout, state_layout, params.len(), state_layout.total())?;
    if grads.len() != params.len() {
        return Err(NnError::ParamLen { expected: params.len(), got: grads.len() });
    }
    Ok(())
}
