//! PyramidNet with ShakeDrop exactly as the reference defines it (google-research/sam
//! `sam_jax/models/pyramidnet.py`); `Pyramid_ShakeDrop` is the paper's PyramidNet-272, α = 200,
//! bottleneck blocks.
//!
//! ```text
//! init_conv            3×3 conv, 16 channels, no bias
//! init_bn              BN, no ReLU
//! BottleneckShakeDrop_{0..N−1}   N = 3·(depth − 2)/9 blocks; block k (1-based) has width
//!                      c_k = round(16 + k·α/N) (accumulated in floating point, rounded half to
//!                      even as Python's round), output 4·c_k; stride 2 in the first block of
//!                      the second and third thirds
//! final_bn             BN + ReLU
//! average pool over the 8×8 map, Dense_0 (with bias)
//! ```
//! A block: `bn_1_pre` (no ReLU) → `1x1_conv_contract` (c) → `bn_1_post` + ReLU → `3x3` (c,
//! stride) → `bn_2` + ReLU → `1x1_conv_expand` (4c) → `bn_3` (no ReLU) → ShakeDrop with survival
//! `1 − 0.5·k/N` → plus the shortcut: average pool 2×2 when strided, zero channels appended.
//! No ReLU after the sum. The reference rounds widths where the original PyramidNet truncates:
//! that is why its parameter count (26.21M for 10 classes) exceeds the paper's 26.0M.
//!
//! The reference pools with a fixed 8×8 window, which is the global average on its 32×32 inputs;
//! ringsam pools globally, identical there and defined for other sizes.

use ringsam_nn::layers::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, GlobalAvgPool, Linear, PoolPadShortcut, ShakeDrop};
use ringsam_nn::{Layer, NnError, ParamLayout, Pass, StateLayout, Workspace};
use ringsam_tensor::Tensor;
use ringsam_tensor::elementwise::add_forward;

use crate::residual_stack::{Block, BlockStack, check_backward_buffers, model_fields};
use crate::wide_resnet::check_buffers;
use crate::{Model, ModelConfig, ModelError};

/// The reference's ShakeDrop `mask_prob` (the survival of the last block).
const FINAL_SURVIVAL_DROP: f64 = 0.5;

/// Block widths `c_1 … c_N` as the reference computes them.
pub fn pyramid_widths(blocks: usize, alpha: f64) -> Vec<usize> {
    let delta = alpha / blocks as f64;
    let mut channels = 16.0f64;
    (0..blocks)
        .map(|_| {
            channels += delta;
            channels.round_ties_even() as usize
        })
        .collect()
}

/// `BottleneckShakeDrop_{k}`.
struct Bottleneck {
    bn_1_pre: BatchNorm,
    contract: Conv2d,
    bn_1_post: BatchNorm,
    conv_3x3: Conv2d,
    bn_2: BatchNorm,
    expand: Conv2d,
    bn_3: BatchNorm,
    shake_drop: ShakeDrop,
    shortcut: PoolPadShortcut,
    out: Tensor,
    dinp: Tensor,
}

impl Bottleneck {
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: &mut ParamLayout,
        s: &mut StateLayout,
        ws: &Workspace,
        name: &str,
        c_in: usize,
        c: usize,
        stride: usize,
        survival: f32,
    ) -> Self {
        Bottleneck {
            bn_1_pre: BatchNorm::new(p, s, &format!("{name}/bn_1_pre"), BatchNormConfig::cifar(c_in, false)),
            contract: Conv2d::with_workspace(p, &format!("{name}/1x1_conv_contract"), Conv2dConfig::same(c_in, c, 1, 1), ws),
            bn_1_post: BatchNorm::new(p, s, &format!("{name}/bn_1_post"), BatchNormConfig::cifar(c, true)),
            conv_3x3: Conv2d::with_workspace(p, &format!("{name}/3x3"), Conv2dConfig::same(c, c, 3, stride), ws),
            bn_2: BatchNorm::new(p, s, &format!("{name}/bn_2"), BatchNormConfig::cifar(c, true)),
            expand: Conv2d::with_workspace(p, &format!("{name}/1x1_conv_expand"), Conv2dConfig::same(c, 4 * c, 1, 1), ws),
            bn_3: BatchNorm::new(p, s, &format!("{name}/bn_3"), BatchNormConfig::cifar(4 * c, false)),
            shake_drop: ShakeDrop::new(&format!("{name}/shake_drop"), survival),
            shortcut: PoolPadShortcut::new(&format!("{name}/shortcut"), c_in, 4 * c, stride),
            out: Tensor::empty(),
            dinp: Tensor::empty(),
        }
    }
}

impl Block for Bottleneck {
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
        self.bn_1_pre.forward(params, state, x, pass)?;
        self.contract.forward(params, state, self.bn_1_pre.output(), pass)?;
        self.bn_1_post.forward(params, state, self.contract.output(), pass)?;
        self.conv_3x3.forward(params, state, self.bn_1_post.output(), pass)?;
        self.bn_2.forward(params, state, self.conv_3x3.output(), pass)?;
        self.expand.forward(params, state, self.bn_2.output(), pass)?;
        self.bn_3.forward(params, state, self.expand.output(), pass)?;
        self.shake_drop.forward(params, state, self.bn_3.output(), pass)?;
        self.shortcut.forward(params, state, x, pass)?;
        let (branch, residual) = (self.shake_drop.output(), self.shortcut.output());
        if branch.shape() != residual.shape() {
            return Err(NnError::Shape {
                layer: self.expand.name().to_string(),
                expected: format!("{:?} (the shortcut's shape)", residual.shape()),
                got: branch.shape().to_vec(),
            });
        }
        self.out.resize(branch.shape());
        add_forward(self.out.as_mut_slice(), branch.as_slice(), residual.as_slice())
            .map_err(|source| NnError::Kernel { layer: self.shake_drop.name().to_string(), source })
    }

    /// Mirror of `forward`.
    fn backward(&mut self, params: &[f32], grads: &mut [f32], x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        self.shake_drop.backward(params, grads, self.bn_3.output(), dout)?;
        self.bn_3.backward(params, grads, self.expand.output(), self.shake_drop.dinput())?;
        self.expand.backward(params, grads, self.bn_2.output(), self.bn_3.dinput())?;
        self.bn_2.backward(params, grads, self.conv_3x3.output(), self.expand.dinput())?;
        self.conv_3x3.backward(params, grads, self.bn_1_post.output(), self.bn_2.dinput())?;
        self.bn_1_post.backward(params, grads, self.contract.output(), self.conv_3x3.dinput())?;
        self.contract.backward(params, grads, self.bn_1_pre.output(), self.bn_1_post.dinput())?;
        self.bn_1_pre.backward(params, grads, x, self.contract.dinput())?;
        self.shortcut.backward(params, grads, x, dout)?;
        self.dinp.resize(x.shape());
        add_forward(self.dinp.as_mut_slice(), self.bn_1_pre.dinput().as_slice(), self.shortcut.dinput().as_slice())
            .map_err(|source| NnError::Kernel { layer: self.bn_1_pre.name().to_string(), source })?;
        // Only the block's own input gradient is needed from here on.
        let inner: [&mut dyn Layer; 9] = [
            &mut self.bn_1_pre,
            &mut self.contract,
            &mut self.bn_1_post,
            &mut self.conv_3x3,
            &mut self.bn_2,
            &mut self.expand,
            &mut self.bn_3,
            &mut self.shake_drop,
            &mut self.shortcut,
        ];
        inner.into_iter().for_each(|l| l.release_dinput());
        Ok(())
    }

    fn macs(&self) -> usize {
        [&self.contract, &self.conv_3x3, &self.expand].iter().filter_map(|c| c.last_shape()).map(|s| s.macs()).sum()
    }
}

/// PyramidNet + ShakeDrop (see the module docs).
pub struct PyramidShakeDrop {
    name: String,
    cfg: ModelConfig,
    layout: ParamLayout,
    state_layout: StateLayout,
    init_conv: Conv2d,
    init_bn: BatchNorm,
    blocks: BlockStack<Bottleneck>,
    head_start: usize, // first parameter offset of final_bn and Dense_0
    final_bn: BatchNorm,
    pool: GlobalAvgPool,
    dense: Linear,
}

impl PyramidShakeDrop {
    /// PyramidNet of `depth = 9n + 2` (bottleneck blocks, `n` per third) and widening `alpha`.
    pub fn new(name: &str, depth: usize, alpha: usize, cfg: ModelConfig) -> Result<Self, ModelError> {
        if depth < 11 || !(depth - 2).is_multiple_of(9) || cfg.num_classes == 0 || cfg.in_channels == 0 {
            return Err(ModelError::Config {
                name: name.into(),
                why: format!("depth must be 9n+2 with n >= 1 (got {depth}); classes and channels positive"),
            });
        }
        let n = (depth - 2) / 9;
        let total = 3 * n;
        let widths = pyramid_widths(total, alpha as f64);
        let (mut p, mut s) = (ParamLayout::new(), StateLayout::new());
        let ws = Workspace::new();
        let first = Conv2dConfig { input_grad: false, ..Conv2dConfig::same(cfg.in_channels, 16, 3, 1) };
        let init_conv = Conv2d::with_workspace(&mut p, "init_conv", first, &ws);
        let init_bn = BatchNorm::new(&mut p, &mut s, "init_bn", BatchNormConfig::cifar(16, false));
        let mut blocks = BlockStack::new();
        let mut c_in = 16;
        for (k, &c) in widths.iter().enumerate() {
            let stride = if k == n || k == 2 * n { 2 } else { 1 };
            let survival = (1.0 - (k + 1) as f64 / total as f64 * FINAL_SURVIVAL_DROP) as f32;
            let start = p.total();
            blocks.push(start, Bottleneck::new(&mut p, &mut s, &ws, &format!("BottleneckShakeDrop_{k}"), c_in, c, stride, survival));
            c_in = 4 * c;
        }
        let head_start = p.total();
        let final_bn = BatchNorm::new(&mut p, &mut s, "final_bn", BatchNormConfig::cifar(c_in, true));
        let dense = Linear::new(&mut p, "Dense_0", c_in, cfg.num_classes);
        Ok(PyramidShakeDrop {
            name: name.into(),
            cfg,
            layout: p,
            state_layout: s,
            init_conv,
            init_bn,
            blocks,
            head_start,
            final_bn,
            pool: GlobalAvgPool::new("global_avg_pool"),
            dense,
        })
    }
}

impl Model for PyramidShakeDrop {
    model_fields!();

    fn init(&self, params: &mut [f32], state: &mut [f32], seed: u64) {
        crate::init::init_by_name(&self.layout, params, &self.state_layout, state, seed);
    }

    fn forward(&mut self, params: &[f32], state: &mut [f32], x: &Tensor, pass: &Pass) -> Result<&Tensor, NnError> {
        check_buffers(&self.layout, &self.state_layout, params.len(), state.len())?;
        self.init_conv.forward(params, state, x, pass)?;
        self.init_bn.forward(params, state, self.init_conv.output(), pass)?;
        let h = self.blocks.forward(params, state, self.init_bn.output(), pass)?;
        self.final_bn.forward(params, state, h, pass)?;
        self.pool.forward(params, state, self.final_bn.output(), pass)?;
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
        self.pool.backward(params, grads, self.final_bn.output(), self.dense.dinput())?;
        let last = self.blocks.output(self.init_bn.output());
        self.final_bn.backward(params, grads, last, self.pool.dinput())?;
        ready(grads, self.head_start);
        self.blocks.backward(params, grads, self.init_bn.output(), self.final_bn.dinput(), ready)?;
        let dfirst = self.blocks.dinput(self.final_bn.dinput());
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
