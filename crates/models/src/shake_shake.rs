//! Shake-Shake networks exactly as the reference defines them (google-research/sam
//! `sam_jax/models/wide_resnet_shakeshake.py`); `WideResnet28x6_ShakeShake` is the paper's
//! Shake-Shake 26 2x96d (4 blocks per group, width multiplier 6: depth 3·4·2 + 2 = 26).
//!
//! ```text
//! init_conv         3×3 conv, 16 channels, no bias
//! init_bn           BN, no ReLU
//! WideResnetShakeShakeGroup_{0,1,2}   b blocks, 16k / 32k / 64k channels, stride 1 / 2 / 2 (first block)
//! ReLU, global average pool, Dense_0 (with bias)   — no final BN
//! ```
//! A block: both branches start from ReLU(x) — `conv_{a,b}_1` (3×3, stride) → `bn_{a,b}_1` + ReLU
//! → `conv_{a,b}_2` (3×3) → `bn_{a,b}_2` — and are mixed by Shake-Shake; the shortcut (from x
//! itself, before the ReLU) is the identity when the width does not change, else `Shortcut_0`:
//! two half-width 1×1 convolutions (`conv_h1` on every s-th pixel, `conv_h2` on every s-th pixel
//! of the image shifted one pixel up and left), concatenated, then `bn_residual` (no ReLU). No
//! ReLU after the sum. BN momentum 0.9, eps 1e-5 (docs/SAM.md). Parameter paths follow
//! the Flax-linen names of the reference's modules, as WideResNet's do.

use ringsam_nn::layers::{
    Activation, ActivationKind, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, GlobalAvgPool, Linear, ShakeShake, ShiftSubsample,
};
use ringsam_nn::{Layer, NnError, ParamLayout, Pass, StateLayout, Workspace};
use ringsam_tensor::Tensor;
use ringsam_tensor::elementwise::add_forward;

use crate::residual_stack::{Block, BlockStack, check_backward_buffers, model_fields};
use crate::wide_resnet::check_buffers;
use crate::{Model, ModelConfig, ModelError};

fn kernel_err(layer: &str, source: ringsam_tensor::TensorError) -> NnError {
    NnError::Kernel { layer: layer.to_string(), source }
}

/// One branch: conv (stride) → BN+ReLU → conv → BN.
struct Branch {
    conv_1: Conv2d,
    bn_1: BatchNorm,
    conv_2: Conv2d,
    bn_2: BatchNorm,
}

impl Branch {
    #[allow(clippy::too_many_arguments)] // the layouts, the workspace, the block's name and tag, and its three sizes
    fn new(p: &mut ParamLayout, s: &mut StateLayout, ws: &Workspace, block: &str, tag: char, c_in: usize, c: usize, stride: usize) -> Self {
        Branch {
            conv_1: Conv2d::with_workspace(p, &format!("{block}/conv_{tag}_1"), Conv2dConfig::same(c_in, c, 3, stride), ws),
            bn_1: BatchNorm::new(p, s, &format!("{block}/bn_{tag}_1"), BatchNormConfig::cifar(c, true)),
            conv_2: Conv2d::with_workspace(p, &format!("{block}/conv_{tag}_2"), Conv2dConfig::same(c, c, 3, 1), ws),
            bn_2: BatchNorm::new(p, s, &format!("{block}/bn_{tag}_2"), BatchNormConfig::cifar(c, false)),
        }
    }

    fn forward(&mut self, params: &[f32], state: &mut [f32], x: &Tensor, pass: &Pass) -> Result<(), NnError> {
        self.conv_1.forward(params, state, x, pass)?;
        self.bn_1.forward(params, state, self.conv_1.output(), pass)?;
        self.conv_2.forward(params, state, self.bn_1.output(), pass)?;
        self.bn_2.forward(params, state, self.conv_2.output(), pass)
    }

    fn backward(&mut self, params: &[f32], grads: &mut [f32], x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        self.bn_2.backward(params, grads, self.conv_2.output(), dout)?;
        self.conv_2.backward(params, grads, self.bn_1.output(), self.bn_2.dinput())?;
        self.bn_1.backward(params, grads, self.conv_1.output(), self.conv_2.dinput())?;
        self.conv_1.backward(params, grads, x, self.bn_1.dinput())
    }

    fn output(&self) -> &Tensor {
        self.bn_2.output()
    }

    fn release(&mut self) {
        let layers: [&mut dyn Layer; 4] = [&mut self.conv_1, &mut self.bn_1, &mut self.conv_2, &mut self.bn_2];
        layers.into_iter().for_each(|l| l.release_dinput());
    }

    fn dinput(&self) -> &Tensor {
        self.conv_1.dinput()
    }

    fn macs(&self) -> usize {
        [&self.conv_1, &self.conv_2].iter().filter_map(|c| c.last_shape()).map(|s| s.macs()).sum()
    }
}

/// The projection shortcut `Shortcut_0` (see the module docs).
struct Shortcut {
    path_1: ShiftSubsample,
    conv_h1: Conv2d,
    path_2: ShiftSubsample,
    conv_h2: Conv2d,
    bn_residual: BatchNorm,
    merged: Tensor,     // (C, N, P, Q): conv_h1's output then conv_h2's, channels concatenated
    dhalf: [Tensor; 2], // bn_residual's input gradient, split back into the halves
    dinp: Tensor,
}

impl Shortcut {
    fn new(p: &mut ParamLayout, s: &mut StateLayout, ws: &Workspace, block: &str, c_in: usize, c: usize, stride: usize) -> Self {
        let name = format!("{block}/Shortcut_0");
        Shortcut {
            path_1: ShiftSubsample::new(&format!("{name}/path_1"), c_in, stride, 0),
            conv_h1: Conv2d::with_workspace(p, &format!("{name}/conv_h1"), Conv2dConfig::same(c_in, c / 2, 1, 1), ws),
            path_2: ShiftSubsample::new(&format!("{name}/path_2"), c_in, stride, 1),
            conv_h2: Conv2d::with_workspace(p, &format!("{name}/conv_h2"), Conv2dConfig::same(c_in, c - c / 2, 1, 1), ws),
            bn_residual: BatchNorm::new(p, s, &format!("{name}/bn_residual"), BatchNormConfig::cifar(c, false)),
            merged: Tensor::empty(),
            dhalf: [Tensor::empty(), Tensor::empty()],
            dinp: Tensor::empty(),
        }
    }

    fn forward(&mut self, params: &[f32], state: &mut [f32], x: &Tensor, pass: &Pass) -> Result<(), NnError> {
        self.path_1.forward(params, state, x, pass)?;
        self.conv_h1.forward(params, state, self.path_1.output(), pass)?;
        self.path_2.forward(params, state, x, pass)?;
        self.conv_h2.forward(params, state, self.path_2.output(), pass)?;
        // (C, N, H, W): concatenating channels is concatenating the buffers.
        let (h1, h2) = (self.conv_h1.output(), self.conv_h2.output());
        let s = h1.shape();
        self.merged.resize(&[s[0] + h2.shape()[0], s[1], s[2], s[3]]);
        let split = h1.len();
        self.merged.as_mut_slice()[..split].copy_from_slice(h1.as_slice());
        self.merged.as_mut_slice()[split..].copy_from_slice(h2.as_slice());
        self.bn_residual.forward(params, state, &self.merged, pass)
    }

    fn backward(&mut self, params: &[f32], grads: &mut [f32], x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        self.bn_residual.backward(params, grads, &self.merged, dout)?;
        let d = self.bn_residual.dinput();
        let split = self.conv_h1.output().len();
        for (half, (range, shape)) in
            self.dhalf.iter_mut().zip([(0..split, self.conv_h1.output().shape()), (split..d.len(), self.conv_h2.output().shape())])
        {
            half.resize(shape);
            half.as_mut_slice().copy_from_slice(&d.as_slice()[range]);
        }
        self.conv_h1.backward(params, grads, self.path_1.output(), &self.dhalf[0])?;
        self.path_1.backward(params, grads, x, self.conv_h1.dinput())?;
        self.conv_h2.backward(params, grads, self.path_2.output(), &self.dhalf[1])?;
        self.path_2.backward(params, grads, x, self.conv_h2.dinput())?;
        self.dinp.resize(x.shape());
        add_forward(self.dinp.as_mut_slice(), self.path_1.dinput().as_slice(), self.path_2.dinput().as_slice())
            .map_err(|e| kernel_err(self.conv_h1.name(), e))?;
        let layers: [&mut dyn Layer; 5] = [&mut self.path_1, &mut self.conv_h1, &mut self.path_2, &mut self.conv_h2, &mut self.bn_residual];
        layers.into_iter().for_each(|l| l.release_dinput());
        self.dhalf = [Tensor::empty(), Tensor::empty()];
        Ok(())
    }

    fn macs(&self) -> usize {
        [&self.conv_h1, &self.conv_h2].iter().filter_map(|c| c.last_shape()).map(|s| s.macs()).sum()
    }
}

/// `{group}/ShakeShakeBlock_{i}`.
struct ShakeShakeBlock {
    relu: Activation,
    a: Branch,
    b: Branch,
    shake: ShakeShake,
    shortcut: Option<Shortcut>, // None: identity
    out: Tensor,
    drelu: Tensor, // gradient reaching ReLU(x): both branches'
    dinp: Tensor,
}

impl ShakeShakeBlock {
    #[allow(clippy::too_many_arguments)]
    fn new(p: &mut ParamLayout, s: &mut StateLayout, ws: &Workspace, name: &str, c_in: usize, c: usize, stride: usize) -> Self {
        ShakeShakeBlock {
            relu: Activation::new(&format!("{name}/relu"), ActivationKind::Relu),
            a: Branch::new(p, s, ws, name, 'a', c_in, c, stride),
            b: Branch::new(p, s, ws, name, 'b', c_in, c, stride),
            shake: ShakeShake::new(&format!("{name}/shake_shake")),
            // Parameters in the reference's creation order: branch a, branch b, then the shortcut.
            shortcut: (c_in != c).then(|| Shortcut::new(p, s, ws, name, c_in, c, stride)),
            out: Tensor::empty(),
            drelu: Tensor::empty(),
            dinp: Tensor::empty(),
        }
    }
}

impl Block for ShakeShakeBlock {
    fn output(&self) -> &Tensor {
        &self.out
    }

    fn dinput(&self) -> &Tensor {
        &self.dinp
    }

    fn release_dinput(&mut self) {
        self.dinp = Tensor::empty();
    }

    fn forward(&mut self, params: &[f32], state: &mut [f32], x: &Tensor, pass: &Pass) -> Result<(), NnError> {
        self.relu.forward(params, state, x, pass)?;
        self.a.forward(params, state, self.relu.output(), pass)?;
        self.b.forward(params, state, self.relu.output(), pass)?;
        self.shake.forward(self.a.output(), self.b.output(), pass)?;
        let residual = match &mut self.shortcut {
            Some(sc) => {
                sc.forward(params, state, x, pass)?;
                sc.bn_residual.output()
            }
            None => x,
        };
        let mixed = self.shake.output();
        if mixed.shape() != residual.shape() {
            return Err(NnError::Shape {
                layer: self.shake.name().to_string(),
                expected: format!("{:?} (the shortcut's shape)", residual.shape()),
                got: mixed.shape().to_vec(),
            });
        }
        self.out.resize(mixed.shape());
        add_forward(self.out.as_mut_slice(), mixed.as_slice(), residual.as_slice()).map_err(|e| kernel_err(self.shake.name(), e))
    }

    /// Mirror of `forward`: the mix, branch b, branch a, the ReLU they share, then the shortcut.
    fn backward(&mut self, params: &[f32], grads: &mut [f32], x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        self.shake.backward(dout)?;
        self.b.backward(params, grads, self.relu.output(), self.shake.db())?;
        self.a.backward(params, grads, self.relu.output(), self.shake.da())?;
        self.drelu.resize(x.shape());
        add_forward(self.drelu.as_mut_slice(), self.a.dinput().as_slice(), self.b.dinput().as_slice())
            .map_err(|e| kernel_err(self.shake.name(), e))?;
        self.relu.backward(params, grads, x, &self.drelu)?;
        let dshort = match &mut self.shortcut {
            Some(sc) => {
                sc.backward(params, grads, x, dout)?;
                &sc.dinp
            }
            None => dout,
        };
        self.dinp.resize(x.shape());
        add_forward(self.dinp.as_mut_slice(), self.relu.dinput().as_slice(), dshort.as_slice())
            .map_err(|e| kernel_err(self.shake.name(), e))?;
        // Only the block's own input gradient is needed from here on.
        self.a.release();
        self.b.release();
        self.shake.release();
        self.relu.release_dinput();
        self.drelu = Tensor::empty();
        if let Some(sc) = &mut self.shortcut {
            sc.dinp = Tensor::empty();
        }
        Ok(())
    }

    fn macs(&self) -> usize {
        self.a.macs() + self.b.macs() + self.shortcut.as_ref().map_or(0, Shortcut::macs)
    }
}

/// A Shake-Shake network (see the module docs).
pub struct ShakeShakeNet {
    name: String,
    cfg: ModelConfig,
    layout: ParamLayout,
    state_layout: StateLayout,
    init_conv: Conv2d,
    init_bn: BatchNorm,
    blocks: BlockStack<ShakeShakeBlock>,
    head_start: usize, // first parameter offset of Dense_0
    relu: Activation,
    pool: GlobalAvgPool,
    dense: Linear,
}

impl ShakeShakeNet {
    /// `blocks_per_group` blocks in each of 3 groups of width 16k, 32k, 64k (`k` = `multiplier`).
    pub fn new(name: &str, blocks_per_group: usize, multiplier: usize, cfg: ModelConfig) -> Result<Self, ModelError> {
        if blocks_per_group == 0 || multiplier == 0 || cfg.num_classes == 0 || cfg.in_channels == 0 {
            return Err(ModelError::Config {
                name: name.into(),
                why: format!("blocks per group ({blocks_per_group}), width ({multiplier}), classes and channels must be positive"),
            });
        }
        let (mut p, mut s) = (ParamLayout::new(), StateLayout::new());
        let ws = Workspace::new();
        let first = Conv2dConfig { input_grad: false, ..Conv2dConfig::same(cfg.in_channels, 16, 3, 1) };
        let init_conv = Conv2d::with_workspace(&mut p, "init_conv", first, &ws);
        let init_bn = BatchNorm::new(&mut p, &mut s, "init_bn", BatchNormConfig::cifar(16, false));
        let mut blocks = BlockStack::new();
        let mut c_in = 16;
        for (g, (width, stride)) in [(16 * multiplier, 1), (32 * multiplier, 2), (64 * multiplier, 2)].into_iter().enumerate() {
            for i in 0..blocks_per_group {
                let block = format!("WideResnetShakeShakeGroup_{g}/ShakeShakeBlock_{i}");
                let start = p.total();
                blocks.push(start, ShakeShakeBlock::new(&mut p, &mut s, &ws, &block, c_in, width, if i == 0 { stride } else { 1 }));
                c_in = width;
            }
        }
        let head_start = p.total();
        let dense = Linear::new(&mut p, "Dense_0", c_in, cfg.num_classes);
        Ok(ShakeShakeNet {
            name: name.into(),
            cfg,
            layout: p,
            state_layout: s,
            init_conv,
            init_bn,
            blocks,
            head_start,
            relu: Activation::new("final_relu", ActivationKind::Relu),
            pool: GlobalAvgPool::new("global_avg_pool"),
            dense,
        })
    }
}

impl Model for ShakeShakeNet {
    model_fields!();

    fn init(&self, params: &mut [f32], state: &mut [f32], seed: u64) {
        crate::init::init_by_name(&self.layout, params, &self.state_layout, state, seed);
    }

    fn forward(&mut self, params: &[f32], state: &mut [f32], x: &Tensor, pass: &Pass) -> Result<&Tensor, NnError> {
        check_buffers(&self.layout, &self.state_layout, params.len(), state.len())?;
        self.init_conv.forward(params, state, x, pass)?;
        self.init_bn.forward(params, state, self.init_conv.output(), pass)?;
        let h = self.blocks.forward(params, state, self.init_bn.output(), pass)?;
        self.relu.forward(params, state, h, pass)?;
        self.pool.forward(params, state, self.relu.output(), pass)?;
        self.dense.forward(params, state, self.pool.output(), pass)?;
        Ok(self.dense.output())
    }

    fn backward_notify(
        &mut self,
        params: &[f32],
        grads: &mut [f32],
        x: &Tensor,
        dlogits: &Tensor,
        ready: &mut dyn FnMut(&mut [f32], usize),
    ) -> Result<(), NnError> {
        check_backward_buffers(&self.layout, &self.state_layout, params, grads)?;
        self.dense.backward(params, grads, self.pool.output(), dlogits)?;
        ready(grads, self.head_start);
        self.pool.backward(params, grads, self.relu.output(), self.dense.dinput())?;
        let last = self.blocks.output(self.init_bn.output());
        self.relu.backward(params, grads, last, self.pool.dinput())?;
        self.blocks.backward(params, grads, self.init_bn.output(), self.relu.dinput(), ready)?;
        let dfirst = self.blocks.dinput(self.relu.dinput());
        self.init_bn.backward(params, grads, self.init_conv.output(), dfirst)?;
        self.init_conv.backward(params, grads, x, self.init_bn.dinput())?;
        ready(grads, 0);
        Ok(())
    }

    fn last_forward_macs(&self) -> usize {
        self.init_conv.last_shape().map_or(0, |s| s.macs()) + self.blocks.macs() + self.dense.last_macs()
    }

    fn last_backward_macs(&self) -> usize {
        2 * self.last_forward_macs() - self.init_conv.last_shape().map_or(0, |s| s.macs())
    }
}
