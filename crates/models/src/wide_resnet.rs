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

use ringsam_nn::layers::{BatchNorm, BatchNormConfig, Buffers, Conv2d, Conv2dConfig, PoolPadShortcut};
use ringsam_nn::{Layer, NnError, Pass};
use ringsam_tensor::Tensor;

use crate::chain::Chain;
use crate::init::init_by_name;
use crate::layer_factory::LayerFactory;
use crate::network::Network;
use crate::residual::{residual_sum, sum_into};
use crate::stem_head::{CIFAR_STEM_WIDTH, bn_relu_head, init_conv_stem};
use crate::{ModelConfig, ModelError};

/// One pre-activation residual block, `{group}/WideResnetBlock_{i}`.
struct WideResnetBlock {
    name: String,
    activate_before_residual: bool,
    init_bn: BatchNorm,
    conv1: Conv2d,
    bn_2: BatchNorm,
    conv2: Conv2d,
    shortcut: Option<PoolPadShortcut>, // None: identity
    dsum: Tensor,                      // gradient reaching init_bn's output (activate_before_residual only)
    buffers: Buffers,                  // output; input gradient unless activate_before_residual
}

impl WideResnetBlock {
    fn new(layers: &mut LayerFactory, name: &str, c_in: usize, c_out: usize, stride: usize, activate_before_residual: bool) -> Self {
        WideResnetBlock {
            name: name.to_string(),
            activate_before_residual,
            init_bn: layers.batch_norm(&format!("{name}/init_bn"), BatchNormConfig::cifar(c_in, true)),
            conv1: layers.conv(&format!("{name}/conv1"), Conv2dConfig::same(c_in, c_out, 3, stride)),
            bn_2: layers.batch_norm(&format!("{name}/bn_2"), BatchNormConfig::cifar(c_out, true)),
            conv2: layers.conv(&format!("{name}/conv2"), Conv2dConfig::same(c_out, c_out, 3, 1)),
            shortcut: (c_in != c_out).then(|| PoolPadShortcut::new(&format!("{name}/shortcut"), c_in, c_out, stride)),
            dsum: Tensor::empty(),
            buffers: Buffers::default(),
        }
    }
}

impl Layer for WideResnetBlock {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_device(&self) -> bool {
        true
    }

    fn forward(&mut self, params: &Tensor, state: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<(), NnError> {
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
        residual_sum(&mut self.buffers.out, self.conv2.output(), residual, self.conv2.name())
    }

    /// Mirror of `forward`: conv2, bn_2, conv1, then the shortcut joins before (or after) init_bn.
    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
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
            sum_into(&mut self.dsum, self.conv1.dinput(), dorig, self.init_bn.name())?;
            self.init_bn.backward(params, grads, x, &self.dsum)?;
        } else {
            self.init_bn.backward(params, grads, x, self.conv1.dinput())?;
            sum_into(&mut self.buffers.dinp, self.init_bn.dinput(), dorig, self.init_bn.name())?;
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

    fn last_macs(&self) -> usize {
        self.conv1.last_macs() + self.conv2.last_macs()
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }

    /// With activate_before_residual, init_bn's input gradient is the block's.
    fn dinput(&self) -> &Tensor {
        if self.activate_before_residual { self.init_bn.dinput() } else { self.buffers.dinput() }
    }

    /// Frees the block's input gradient once the block before it has consumed it.
    fn release_dinput(&mut self) {
        self.init_bn.release_dinput();
        self.buffers.release_dinput();
    }
}

/// WideResNet of depth `depth = 6n + 4` and width multiplier `k`.
pub fn new(name: &str, depth: usize, k: usize, cfg: ModelConfig) -> Result<Network, ModelError> {
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
    let mut layers = LayerFactory::default();
    let stem = init_conv_stem(&mut layers, cfg.in_channels);
    let mut blocks = Chain::blocks(&mut layers);
    let mut c_in = CIFAR_STEM_WIDTH;
    for (g, (width, stride)) in [(16 * k, 1), (32 * k, 2), (64 * k, 2)].into_iter().enumerate() {
        for i in 0..n {
            let block = format!("WideResnetGroup_{g}/WideResnetBlock_{i}");
            let stride = if i == 0 { stride } else { 1 };
            blocks = blocks.then(|l| WideResnetBlock::new(l, &block, c_in, width, stride, g == 0 && i == 0));
            c_in = width;
        }
    }
    let body = blocks.build();
    let head = bn_relu_head(&mut layers, "pre-pool-bn", c_in, cfg.num_classes);
    Ok(Network::assemble(name, cfg, init_by_name, layers, stem, body, head))
}
