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

use ringsam_kernels::flat::copy;
use ringsam_nn::device::OnDevice;
use ringsam_nn::layers::{
    Activation, ActivationKind, BatchNorm, BatchNormConfig, Buffers, Conv2d, Conv2dConfig, ShakeShake, ShiftSubsample,
};
use ringsam_nn::{Layer, NnError, Pass};
use ringsam_tensor::Tensor;

use crate::chain::Chain;
use crate::init::init_by_name;
use crate::layer_factory::LayerFactory;
use crate::network::Network;
use crate::residual::{residual_sum, sum_into};
use crate::stem_head::{CIFAR_STEM_WIDTH, init_conv_bn_stem};
use crate::{ModelConfig, ModelError};

/// One branch: conv (stride) → BN+ReLU → conv → BN.
struct Branch {
    conv_1: Conv2d,
    bn_1: BatchNorm,
    conv_2: Conv2d,
    bn_2: BatchNorm,
}

impl Branch {
    fn new(layers: &mut LayerFactory, block: &str, tag: char, c_in: usize, c: usize, stride: usize) -> Self {
        Branch {
            conv_1: layers.conv(&format!("{block}/conv_{tag}_1"), Conv2dConfig::same(c_in, c, 3, stride)),
            bn_1: layers.batch_norm(&format!("{block}/bn_{tag}_1"), BatchNormConfig::cifar(c, true)),
            conv_2: layers.conv(&format!("{block}/conv_{tag}_2"), Conv2dConfig::same(c, c, 3, 1)),
            bn_2: layers.batch_norm(&format!("{block}/bn_{tag}_2"), BatchNormConfig::cifar(c, false)),
        }
    }

    fn forward(&mut self, params: &Tensor, state: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<(), NnError> {
        self.conv_1.forward(params, state, x, pass)?;
        self.bn_1.forward(params, state, self.conv_1.output(), pass)?;
        self.conv_2.forward(params, state, self.bn_1.output(), pass)?;
        self.bn_2.forward(params, state, self.conv_2.output(), pass)
    }

    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
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
        self.conv_1.last_macs() + self.conv_2.last_macs()
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
    fn new(layers: &mut LayerFactory, block: &str, c_in: usize, c: usize, stride: usize) -> Self {
        let name = format!("{block}/Shortcut_0");
        Shortcut {
            path_1: ShiftSubsample::new(&format!("{name}/path_1"), c_in, stride, 0),
            conv_h1: layers.conv(&format!("{name}/conv_h1"), Conv2dConfig::same(c_in, c / 2, 1, 1)),
            path_2: ShiftSubsample::new(&format!("{name}/path_2"), c_in, stride, 1),
            conv_h2: layers.conv(&format!("{name}/conv_h2"), Conv2dConfig::same(c_in, c - c / 2, 1, 1)),
            bn_residual: layers.batch_norm(&format!("{name}/bn_residual"), BatchNormConfig::cifar(c, false)),
            merged: Tensor::empty(),
            dhalf: [Tensor::empty(), Tensor::empty()],
            dinp: Tensor::empty(),
        }
    }

    fn forward(&mut self, params: &Tensor, state: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<(), NnError> {
        self.path_1.forward(params, state, x, pass)?;
        self.conv_h1.forward(params, state, self.path_1.output(), pass)?;
        self.path_2.forward(params, state, x, pass)?;
        self.conv_h2.forward(params, state, self.path_2.output(), pass)?;
        // (C, N, H, W): concatenating channels is concatenating the buffers.
        let (h1, h2) = (self.conv_h1.output(), self.conv_h2.output());
        let s = h1.shape();
        let shape = [s[0] + h2.shape()[0], s[1], s[2], s[3]];
        let split = h1.len();
        if let Some(dev) = OnDevice::of(self.conv_h1.name(), h1) {
            let (m, a, b) = (dev.place(&mut self.merged, &shape, h1)?, dev.buf(h1)?, dev.buf(h2)?);
            dev.run(|l| {
                copy(l, m.slice(0..split), a)?;
                copy(l, m.slice(split..m.len()), b)
            })?;
        } else {
            self.merged.resize(&shape);
            self.merged.as_mut_slice()[..split].copy_from_slice(h1.as_slice());
            self.merged.as_mut_slice()[split..].copy_from_slice(h2.as_slice());
        }
        self.bn_residual.forward(params, state, &self.merged, pass)
    }

    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        self.bn_residual.backward(params, grads, &self.merged, dout)?;
        let d = self.bn_residual.dinput();
        let split = self.conv_h1.output().len();
        for (half, (range, shape)) in
            self.dhalf.iter_mut().zip([(0..split, self.conv_h1.output().shape()), (split..d.len(), self.conv_h2.output().shape())])
        {
            if let Some(dev) = OnDevice::of(self.conv_h1.name(), d) {
                let (h, all) = (dev.place(half, shape, d)?, dev.buf(d)?);
                dev.run(|l| copy(l, h, all.slice(range)))?;
            } else {
                half.resize(shape);
                half.as_mut_slice().copy_from_slice(&d.as_slice()[range]);
            }
        }
        self.conv_h1.backward(params, grads, self.path_1.output(), &self.dhalf[0])?;
        self.path_1.backward(params, grads, x, self.conv_h1.dinput())?;
        self.conv_h2.backward(params, grads, self.path_2.output(), &self.dhalf[1])?;
        self.path_2.backward(params, grads, x, self.conv_h2.dinput())?;
        sum_into(&mut self.dinp, self.path_1.dinput(), self.path_2.dinput(), self.conv_h1.name())?;
        let layers: [&mut dyn Layer; 5] = [&mut self.path_1, &mut self.conv_h1, &mut self.path_2, &mut self.conv_h2, &mut self.bn_residual];
        layers.into_iter().for_each(|l| l.release_dinput());
        self.dhalf = [Tensor::empty(), Tensor::empty()];
        Ok(())
    }

    fn macs(&self) -> usize {
        self.conv_h1.last_macs() + self.conv_h2.last_macs()
    }
}

/// `{group}/ShakeShakeBlock_{i}`.
struct ShakeShakeBlock {
    name: String,
    relu: Activation,
    a: Branch,
    b: Branch,
    shake: ShakeShake,
    shortcut: Option<Shortcut>, // None: identity
    drelu: Tensor,              // gradient reaching ReLU(x): both branches'
    buffers: Buffers,
}

impl ShakeShakeBlock {
    fn new(layers: &mut LayerFactory, name: &str, c_in: usize, c: usize, stride: usize) -> Self {
        ShakeShakeBlock {
            name: name.to_string(),
            relu: Activation::new(&format!("{name}/relu"), ActivationKind::Relu),
            a: Branch::new(layers, name, 'a', c_in, c, stride),
            b: Branch::new(layers, name, 'b', c_in, c, stride),
            shake: ShakeShake::new(&format!("{name}/shake_shake")),
            // Parameters in the reference's creation order: branch a, branch b, then the shortcut.
            shortcut: (c_in != c).then(|| Shortcut::new(layers, name, c_in, c, stride)),
            drelu: Tensor::empty(),
            buffers: Buffers::default(),
        }
    }
}

impl Layer for ShakeShakeBlock {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_device(&self) -> bool {
        true
    }

    fn forward(&mut self, params: &Tensor, state: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<(), NnError> {
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
        residual_sum(&mut self.buffers.out, self.shake.output(), residual, self.shake.name())
    }

    /// Mirror of `forward`: the mix, branch b, branch a, the ReLU they share, then the shortcut.
    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        self.shake.backward(dout)?;
        self.b.backward(params, grads, self.relu.output(), self.shake.db())?;
        self.a.backward(params, grads, self.relu.output(), self.shake.da())?;
        sum_into(&mut self.drelu, self.a.dinput(), self.b.dinput(), self.shake.name())?;
        self.relu.backward(params, grads, x, &self.drelu)?;
        let dshort = match &mut self.shortcut {
            Some(sc) => {
                sc.backward(params, grads, x, dout)?;
                &sc.dinp
            }
            None => dout,
        };
        sum_into(&mut self.buffers.dinp, self.relu.dinput(), dshort, self.shake.name())?;
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

    fn last_macs(&self) -> usize {
        self.a.macs() + self.b.macs() + self.shortcut.as_ref().map_or(0, Shortcut::macs)
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}

/// A Shake-Shake network of `blocks_per_group` blocks in each of 3 groups of width 16k, 32k, 64k
/// (`k` = `multiplier`; see the module docs).
pub fn new(name: &str, blocks_per_group: usize, multiplier: usize, cfg: ModelConfig) -> Result<Network, ModelError> {
    if blocks_per_group == 0 || multiplier == 0 || cfg.num_classes == 0 || cfg.in_channels == 0 {
        return Err(ModelError::Config {
            name: name.into(),
            why: format!("blocks per group ({blocks_per_group}), width ({multiplier}), classes and channels must be positive"),
        });
    }
    let mut layers = LayerFactory::default();
    let stem = init_conv_bn_stem(&mut layers, cfg.in_channels);
    let mut blocks = Chain::blocks(&mut layers);
    let mut c_in = CIFAR_STEM_WIDTH;
    for (g, (width, stride)) in [(16 * multiplier, 1), (32 * multiplier, 2), (64 * multiplier, 2)].into_iter().enumerate() {
        for i in 0..blocks_per_group {
            let block = format!("WideResnetShakeShakeGroup_{g}/ShakeShakeBlock_{i}");
            let stride = if i == 0 { stride } else { 1 };
            blocks = blocks.then(|l| ShakeShakeBlock::new(l, &block, c_in, width, stride));
            c_in = width;
        }
    }
    let body = blocks.build();
    let head = Chain::sequential(&mut layers)
        .then(|_| Activation::new("final_relu", ActivationKind::Relu))
        .pool_dense("Dense_0", c_in, cfg.num_classes)
        .build();
    Ok(Network::assemble(name, cfg, init_by_name, layers, stem, body, head))
}
