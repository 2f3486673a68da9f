//! What the residual networks share: a chain of blocks run forward in order and backward in
//! reverse, and the `Model` methods that only forward to fields.
//!
//! The chain's backward also does two things every model needs: after block `i` it reports that
//! the gradients of block `i` and everything after it are final (the data-parallel bucket hook,
//! [`crate::Model::backward_notify`]), and it frees block `i + 1`'s input gradient, which block
//! `i` has just consumed — so a deep network holds one block's backward buffers at a time.

use ringsam_nn::{NnError, ParamLayout, Pass, StateLayout};
use ringsam_tensor::Tensor;

/// One residual block of a chain.
pub(crate) trait Block {
    fn forward(&mut self, params: &[f32], state: &mut [f32], x: &Tensor, pass: &Pass) -> Result<(), NnError>;
    /// Adds parameter gradients into `grads` and computes `dinput()`; may free its inner layers'
    /// gradients before returning (only `dinput()` is read afterwards).
    fn backward(&mut self, params: &[f32], grads: &mut [f32], x: &Tensor, dout: &Tensor) -> Result<(), NnError>;
    fn output(&self) -> &Tensor;
    fn dinput(&self) -> &Tensor;
    /// Frees `dinput()` (the block before has consumed it).
    fn release_dinput(&mut self);
    /// Multiply-adds of the last forward.
    fn macs(&self) -> usize;
}

/// Blocks in forward order, each with the offset of its first parameter.
pub(crate) struct BlockStack<B> {
    blocks: Vec<B>,
    starts: Vec<usize>,
}

impl<B: Block> BlockStack<B> {
    pub(crate) fn new() -> Self {
        BlockStack { blocks: Vec::new(), starts: Vec::new() }
    }

    /// Appends `block`, whose parameters start at `start` (the layout's size before building it).
    pub(crate) fn push(&mut self, start: usize, block: B) {
        self.starts.push(start);
        self.blocks.push(block);
    }

    /// Runs every block on `x`; returns the last output (`x` for an empty chain).
    pub(crate) fn forward<'a>(&'a mut self, params: &[f32], state: &mut [f32], x: &'a Tensor, pass: &Pass) -> Result<&'a Tensor, NnError> {
        for i in 0..self.blocks.len() {
            let (before, rest) = self.blocks.split_at_mut(i);
            let input = before.last().map_or(x, |b| b.output());
            rest[0].forward(params, state, input, pass)?;
        }
        Ok(self.output(x))
    }

    /// The last block's output (`x`, the chain's input, when empty).
    pub(crate) fn output<'a>(&'a self, x: &'a Tensor) -> &'a Tensor {
        self.blocks.last().map_or(x, |b| b.output())
    }

    /// Backward from `dout` (the gradient of the chain's output) to the chain's input `x`; see
    /// the module docs for `ready` and the freeing.
    pub(crate) fn backward(
        &mut self,
        params: &[f32],
        grads: &mut [f32],
        x: &Tensor,
        dout: &Tensor,
        ready: &mut dyn FnMut(&mut [f32], usize),
    ) -> Result<(), NnError> {
        for i in (0..self.blocks.len()).rev() {
            let (before, from_here) = self.blocks.split_at_mut(i);
            let (block, after) = from_here.split_first_mut().expect("i < len");
            let input = before.last().map_or(x, |b| b.output());
            block.backward(params, grads, input, after.first().map_or(dout, |b| b.dinput()))?;
            if let Some(next) = after.first_mut() {
                next.release_dinput();
            }
            ready(grads, self.starts[i]);
        }
        Ok(())
    }

    /// The gradient reaching the chain's input (`dout` itself for an empty chain).
    pub(crate) fn dinput<'a>(&'a self, dout: &'a Tensor) -> &'a Tensor {
        self.blocks.first().map_or(dout, |b| b.dinput())
    }

    pub(crate) fn macs(&self) -> usize {
        self.blocks.iter().map(Block::macs).sum()
    }
}

/// The checks every backward starts with: buffers of the layout's sizes.
pub(crate) fn check_backward_buffers(
    layout: &ParamLayout,
    state_layout: &StateLayout,
    params: &[f32],
    grads: &[f32],
) -> Result<(), NnError> {
    crate::wide_resnet::check_buffers(layout, state_layout, params.len(), state_layout.total())?;
    if grads.len() != params.len() {
        return Err(NnError::ParamLen { expected: params.len(), got: grads.len() });
    }
    Ok(())
}

/// The `Model` methods that only read fields `name`, `cfg`, `layout`, `state_layout`, plus
/// `backward` as `backward_notify` without a hook. (`init` differs by family: each model says.)
macro_rules! model_fields {
    () => {
        fn name(&self) -> &str {
            &self.name
        }
        fn layout(&self) -> &ringsam_nn::ParamLayout {
            &self.layout
        }
        fn state_layout(&self) -> &ringsam_nn::StateLayout {
            &self.state_layout
        }
        fn config(&self) -> crate::ModelConfig {
            self.cfg
        }
        fn backward(
            &mut self,
            params: &[f32],
            grads: &mut [f32],
            x: &ringsam_tensor::Tensor,
            dlogits: &ringsam_tensor::Tensor,
        ) -> Result<(), ringsam_nn::NnError> {
            self.backward_notify(params, grads, x, dlogits, &mut |_, _| {})
        }
    };
}
pub(crate) use model_fields;
