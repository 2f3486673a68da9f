//! WideResNet-d-k exactly as the reference defines it (google-research/sam
//! `sam_jax/models/wide_resnet.py`, with `use_additional_skip_connections = False`).
//!
//! ```text
//! init_conv            3×3 conv, 16 channels, no bias
//! WideResnetGroup_0    n blocks, 16k channels, stride 1; its first block activates before the residual
//! WideResnetGroup_1    n blocks, 32k channels, stride 2 in the first block
//! WideResnetGroup_2    n blocks, 64k channels, stride 2 in the first block
//! pre-pool-bn          BN + ReLU
//! global average pool, Dense_0 (with bias)
//! ```
//! with `d = 6n + 4`. A block is pre-activation: `init_bn` (BN+ReLU) → `conv1` (stride) → `bn_2`
//! (BN+ReLU) → `conv2`, plus the shortcut. The shortcut is the block's input — or, in the first
//! block of the network, the *activated* input — passed through `avg_pool(stride)` and zero
//! channel padding when the width changes, identity otherwise. Convolutions use SAME padding
//! (on a stride-2 layer: 0 before, 1 after), no bias; BN momentum 0.9, eps 1e-5.

use ringsam_nn::layers::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, GlobalAvgPool, Linear, PoolPadShortcut};
use ringsam_nn::{Layer, NnError, ParamLayout, Pass, StateLayout, Workspace};
use ringsam_tensor::Tensor;
use ringsam_tensor::elementwise::add_forward;

use crate::residual_stack::{Block, BlockStack, check_backward_buffers, model_fields};
use crate::{Model, ModelConfig, ModelError};

/// One pre-activation residual block, `{group}/WideResnetBlock_{i}`.
struct WideResnetBlock {
    activate_before_residual: bool,
    init_bn: BatchNorm,
    conv1: Conv2d,
    bn_2: BatchNorm,
    conv2: Conv2d,
    shortcut: Option<PoolPadShortcut>, // None: identity
    out: Tensor,                       // (C_out, N, P, Q)
    dsum: Tensor,                      // gradient reaching init_bn's output (activate_before_residual only)
    dinp: Tensor,                      // (C_in, N, H, W), when not activate_before_residual
}

impl WideResnetBlock {
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: &mut ParamLayout,
        s: &mut StateLayout,
        ws: &Workspace,
        name: &str,
        c_in: usize,
        c_out: usize,
        stride: usize,
        activate_before_residual: bool,
    ) -> Self {
        WideResnetBlock {
            activate_before_residual,
            init_bn: BatchNorm::new(p, s, &format!("{name}/init_bn"), BatchNormConfig::cifar(c_in, true)),
            conv1: Conv2d::with_workspace(p, &format!("{name}/conv1"), Conv2dConfig::same(c_in, c_out, 3, stride), ws),
            bn_2: BatchNorm::new(p, s, &format!("{name}/bn_2"), BatchNormConfig::cifar(c_out, true)),
            conv2: Conv2d::with_workspace(p, &format!("{name}/conv2"), Conv2dConfig::same(c_out, c_out, 3, 1), ws),
            shortcut: (c_in != c_out).then(|| PoolPadShortcut::new(&format!("{name}/shortcut"), c_in, c_out, stride)),
            out: Tensor::empty(),
            dsum: Tensor::empty(),
            dinp: Tensor::empty(),
        }
    }
}

impl Block for WideResnetBlock {
    fn output(&self) -> &Tensor {
        &self.out
    }

    fn forward(&mut self, params: &[f32], state: &mut [f32], x: &Tensor, pass: &Pass) -> Result<(), NnError> {
        self.init_bn.forward(params, state, x, pass)?;
        let a = self.init_bn.output();
        self.conv1.forward(params, state, a, pass)?;
        self.bn_2.forward(params, state, self.conv1.output(), pass)?;
        self.conv2.forward(params, state, self.bn_2.output(), pass)?;
        let orig = if self.activate_before_residual { a } else { x };
        let residual = match &mut self.shortcut {
            Some(sc) => {
                sc.forward(params, state, orig, pass)?;
                sc.output()
            }
            None => orig,
        };
        let branch = self.conv2.output();
        if branch.shape() != residual.shape() {
            return Err(NnError::Shape {
                layer: self.conv2.name().to_string(),
                expected: format!("{:?} (the shortcut's shape)", residual.shape()),
                got: branch.shape().to_vec(),
            });
        }
        self.out.resize(branch.shape());
        add_forward(self.out.as_mut_slice(), branch.as_slice(), residual.as_slice())
            .map_err(|source| NnError::Kernel { layer: self.conv2.name().to_string(), source })
    }

    /// Mirror of `forward`: conv2, bn_2, conv1, then the shortcut joins before (or after) init_bn.
    fn backward(&mut self, params: &[f32], grads: &mut [f32], x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        self.conv2.backward(params, grads, self.bn_2.output(), dout)?;
        self.bn_2.backward(params, grads, self.conv1.output(), self.conv2.dinput())?;
        self.conv1.backward(params, grads, self.init_bn.output(), self.bn_2.dinput())?;
        let orig = if self.activate_before_residual { self.init_bn.output() } else { x };
        let dorig = match &mut self.shortcut {
            Some(sc) => {
                sc.backward(params, grads, orig, dout)?;
                sc.dinput()
            }
            None => dout,
        };
        if self.activate_before_residual {
            // The shortcut started from init_bn's output: its gradient joins conv1's there.
            self.dsum.resize(dorig.shape());
            add_forward(self.dsum.as_mut_slice(), self.conv1.dinput().as_slice(), dorig.as_slice())
                .map_err(|source| kernel_err(&self.init_bn, source))?;
            self.init_bn.backward(params, grads, x, &self.dsum)?;
        } else {
            self.init_bn.backward(params, grads, x, self.conv1.dinput())?;
            self.dinp.resize(x.shape());
            add_forward(self.dinp.as_mut_slice(), self.init_bn.dinput().as_slice(), dorig.as_slice())
                .map_err(|source| kernel_err(&self.init_bn, source))?;
        }
        // Only the block's input gradient (`dinput()`) is needed from here on.
        let inner: [&mut dyn Layer; 3] = [&mut self.conv1, &mut self.bn_2, &mut self.conv2];
        inner.into_iter().for_each(|l| l.release_dinput());
        if let Some(sc) = &mut self.shortcut {
            sc.release_dinput();
        }
        self.dsum = Tensor::empty();
        Ok(())
    }

    /// Frees the block's input gradient once the block before it has consumed it.
    fn release_dinput(&mut self) {
        self.init_bn.release_dinput();
        self.dinp = Tensor::empty();
    }

    fn dinput(&self) -> &Tensor {
        if self.activate_before_residual { self.init_bn.dinput() } else { &self.dinp }
    }

    fn macs(&self) -> usize {
        [&self.conv1, &self.conv2].iter().filter_map(|c| c.last_shape()).map(|s| s.macs()).sum()
    }
}

/// WideResNet-d-k.
pub struct WideResnet {
    name: String,
    cfg: ModelConfig,
    layout: ParamLayout,
    state_layout: StateLayout,
    init_conv: Conv2d,
    blocks: BlockStack<WideResnetBlock>,
    head_start: usize, // first parameter offset of pre-pool-bn and Dense_0
    pre_pool_bn: BatchNorm,
    pool: GlobalAvgPool,
    dense: Linear,
}

impl WideResnet {
    /// WideResNet of depth `depth = 6n + 4` and width multiplier `k`.
    pub fn new(name: &str, depth: usize, k: usize, cfg: ModelConfig) -> Result<Self, ModelError> {
        if depth < 10 || !(depth - 4).is_multiple_of(6) || k == 0 {
            return Err(ModelError::Config {
                name: name.into(),
                why: format!("depth must be 6n+4 with n >= 1 and width >= 1 (got depth {depth}, width {k})"),
            });
        }
        if cfg.num_classes == 0 || cfg.in_channels == 0 {
            return Err(ModelError::Config { name: name.into(), why: "num_classes and in_channels must be positive".into() });
        }
        let n = (depth - 4) / 6;
        let (mut p, mut s) = (ParamLayout::new(), StateLayout::new());
        // One im2col scratch for every convolution: they run one at a time.
        let ws = Workspace::new();
        let first = Conv2dConfig { input_grad: false, ..Conv2dConfig::same(cfg.in_channels, 16, 3, 1) };
        let init_conv = Conv2d::with_workspace(&mut p, "init_conv", first, &ws);
        let mut blocks = BlockStack::new();
        let mut c_in = 16;
        for (g, (width, stride)) in [(16 * k, 1), (32 * k, 2), (64 * k, 2)].into_iter().enumerate() {
            for i in 0..n {
                let block_name = format!("WideResnetGroup_{g}/WideResnetBlock_{i}");
                let start = p.total();
                blocks.push(
                    start,
                    WideResnetBlock::new(&mut p, &mut s, &ws, &block_name, c_in, width, if i == 0 { stride } else { 1 }, g == 0 && i == 0),
                );
                c_in = width;
            }
        }
        let head_start = p.total();
        let pre_pool_bn = BatchNorm::new(&mut p, &mut s, "pre-pool-bn", BatchNormConfig::cifar(c_in, true));
        let dense = Linear::new(&mut p, "Dense_0", c_in, cfg.num_classes);
        Ok(WideResnet {
            name: name.into(),
            cfg,
            layout: p,
            state_layout: s,
            init_conv,
            blocks,
            head_start,
            pre_pool_bn,
            pool: GlobalAvgPool::new("global_avg_pool"),
            dense,
        })
    }
}

impl Model for WideResnet {
    model_fields!();

    fn init(&self, params: &mut [f32], state: &mut [f32], seed: u64) {
        crate::init::init_by_name(&self.layout, params, &self.state_layout, state, seed);
    }

    fn forward(&mut self, params: &[f32], state: &mut [f32], x: &Tensor, pass: &Pass) -> Result<&Tensor, NnError> {
        check_buffers(&self.layout, &self.state_layout, params.len(), state.len())?;
        self.init_conv.forward(params, state, x, pass)?;
        let h = self.blocks.forward(params, state, self.init_conv.output(), pass)?;
        self.pre_pool_bn.forward(params, state, h, pass)?;
        self.pool.forward(params, state, self.pre_pool_bn.output(), pass)?;
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
        self.pool.backward(params, grads, self.pre_pool_bn.output(), self.dense.dinput())?;
        let last = self.blocks.output(self.init_conv.output());
        self.pre_pool_bn.backward(params, grads, last, self.pool.dinput())?;
        ready(grads, self.head_start);
        self.blocks.backward(params, grads, self.init_conv.output(), self.pre_pool_bn.dinput(), ready)?;
        let dfirst = self.blocks.dinput(self.pre_pool_bn.dinput());
        self.init_conv.backward(params, grads, x, dfirst)?;
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

fn kernel_err(layer: &dyn Layer, source: ringsam_tensor::TensorError) -> NnError {
    NnError::Kernel { layer: layer.name().to_string(), source }
}

pub(crate) fn check_buffers(layout: &ParamLayout, state_layout: &StateLayout, params: usize, state: usize) -> Result<(), NnError> {
    if params != layout.total() {
        return Err(NnError::ParamLen { expected: layout.total(), got: params });
    }
    if state != state_layout.total() {
        return Err(NnError::ParamLen { expected: state_layout.total(), got: state });
    }
    Ok(())
}
