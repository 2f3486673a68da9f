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

use ringsam_nn::layers::{BatchNorm, BatchNormConfig, Buffers, Conv2d, Conv2dConfig, PoolPadShortcut, ShakeDrop};
use ringsam_nn::{Layer, NnError, Pass};
use ringsam_tensor::Tensor;

use crate::chain::Chain;
use crate::init::init_by_name;
use crate::layer_factory::LayerFactory;
use crate::network::Network;
use crate::residual::{residual_sum, sum_into};
use crate::stem_head::{CIFAR_STEM_WIDTH, bn_relu_head, init_conv_bn_stem};
use crate::{ModelConfig, ModelError};

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
    name: String,
    bn_1_pre: BatchNorm,
    contract: Conv2d,
    bn_1_post: BatchNorm,
    conv_3x3: Conv2d,
    bn_2: BatchNorm,
    expand: Conv2d,
    bn_3: BatchNorm,
    shake_drop: ShakeDrop,
    shortcut: PoolPadShortcut,
    buffers: Buffers,
}

impl Bottleneck {
    fn new(layers: &mut LayerFactory, name: &str, c_in: usize, c: usize, stride: usize, survival: f32) -> Self {
        Bottleneck {
            name: name.to_string(),
            bn_1_pre: layers.batch_norm(&format!("{name}/bn_1_pre"), BatchNormConfig::cifar(c_in, false)),
            contract: layers.conv(&format!("{name}/1x1_conv_contract"), Conv2dConfig::same(c_in, c, 1, 1)),
            bn_1_post: layers.batch_norm(&format!("{name}/bn_1_post"), BatchNormConfig::cifar(c, true)),
            conv_3x3: layers.conv(&format!("{name}/3x3"), Conv2dConfig::same(c, c, 3, stride)),
            bn_2: layers.batch_norm(&format!("{name}/bn_2"), BatchNormConfig::cifar(c, true)),
            expand: layers.conv(&format!("{name}/1x1_conv_expand"), Conv2dConfig::same(c, 4 * c, 1, 1)),
            bn_3: layers.batch_norm(&format!("{name}/bn_3"), BatchNormConfig::cifar(4 * c, false)),
            shake_drop: ShakeDrop::new(&format!("{name}/shake_drop"), survival),
            shortcut: PoolPadShortcut::new(&format!("{name}/shortcut"), c_in, 4 * c, stride),
            buffers: Buffers::default(),
        }
    }
}

impl Layer for Bottleneck {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_device(&self) -> bool {
        true
    }

    fn forward(&mut self, params: &Tensor, state: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<(), NnError> {
        self.bn_1_pre.forward(params, state, x, pass)?;
        self.contract.forward(params, state, self.bn_1_pre.output(), pass)?;
        self.bn_1_post.forward(params, state, self.contract.output(), pass)?;
        self.conv_3x3.forward(params, state, self.bn_1_post.output(), pass)?;
        self.bn_2.forward(params, state, self.conv_3x3.output(), pass)?;
        self.expand.forward(params, state, self.bn_2.output(), pass)?;
        self.bn_3.forward(params, state, self.expand.output(), pass)?;
        self.shake_drop.forward(params, state, self.bn_3.output(), pass)?;
        self.shortcut.forward(params, state, x, pass)?;
        residual_sum(&mut self.buffers.out, self.shake_drop.output(), self.shortcut.output(), self.expand.name())
    }

    /// Mirror of `forward`.
    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        self.shake_drop.backward(params, grads, self.bn_3.output(), dout)?;
        self.bn_3.backward(params, grads, self.expand.output(), self.shake_drop.dinput())?;
        self.expand.backward(params, grads, self.bn_2.output(), self.bn_3.dinput())?;
        self.bn_2.backward(params, grads, self.conv_3x3.output(), self.expand.dinput())?;
        self.conv_3x3.backward(params, grads, self.bn_1_post.output(), self.bn_2.dinput())?;
        self.bn_1_post.backward(params, grads, self.contract.output(), self.conv_3x3.dinput())?;
        self.contract.backward(params, grads, self.bn_1_pre.output(), self.bn_1_post.dinput())?;
        self.bn_1_pre.backward(params, grads, x, self.contract.dinput())?;
        self.shortcut.backward(params, grads, x, dout)?;
        sum_into(&mut self.buffers.dinp, self.bn_1_pre.dinput(), self.shortcut.dinput(), self.bn_1_pre.name())?;
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

    fn last_macs(&self) -> usize {
        self.contract.last_macs() + self.conv_3x3.last_macs() + self.expand.last_macs()
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}

/// PyramidNet + ShakeDrop of `depth = 9n + 2` (bottleneck blocks, `n` per third) and widening
/// `alpha` (see the module docs).
pub fn new(name: &str, depth: usize, alpha: usize, cfg: ModelConfig) -> Result<Network, ModelError> {
    if depth < 11 || !(depth - 2).is_multiple_of(9) || cfg.num_classes == 0 || cfg.in_channels == 0 {
        return Err(ModelError::Config {
            name: name.into(),
            why: format!("depth must be 9n+2 with n >= 1 (got {depth}); classes and channels positive"),
        });
    }
    let n = (depth - 2) / 9;
    let total = 3 * n;
    let widths = pyramid_widths(total, alpha as f64);
    let mut layers = LayerFactory::default();
    let stem = init_conv_bn_stem(&mut layers, cfg.in_channels);
    let mut blocks = Chain::blocks(&mut layers);
    let mut c_in = CIFAR_STEM_WIDTH;
    for (k, &c) in widths.iter().enumerate() {
        let stride = if k == n || k == 2 * n { 2 } else { 1 };
        let survival = (1.0 - (k + 1) as f64 / total as f64 * FINAL_SURVIVAL_DROP) as f32;
        let block = format!("BottleneckShakeDrop_{k}");
        blocks = blocks.then(|l| Bottleneck::new(l, &block, c_in, c, stride, survival));
        c_in = 4 * c;
    }
    let body = blocks.build();
    let head = bn_relu_head(&mut layers, "final_bn", c_in, cfg.num_classes);
    Ok(Network::assemble(name, cfg, init_by_name, layers, stem, body, head))
}
