//! ImageNet ResNet v1 (bottleneck) exactly as the reference defines it (google-research/sam
//! `sam_jax/imagenet_models/resnet.py`): `Resnet50` (3-4-6-3 blocks), `Resnet101` (3-4-23-3),
//! `Resnet152` (3-8-36-3).
//!
//! ```text
//! conv_init    7×7 conv, 64 channels, stride 2, padding 3, no bias
//! bn_init      BN — and NO ReLU: the reference's quirk, reproduced (its max pool takes the
//!              normalised, unrectified stem output)
//! max pool     3×3, stride 2, SAME
//! BottleneckResNetBlock_{0..}   stages of width 64·2^i (output 4× that); stride 2 in the first
//!              block of stages 1–3, on the 3×3 convolution
//! mean over H, W; Dense_{blocks} (with bias)
//! ```
//! A block: `Conv_0` 1×1 → `BatchNorm_1` + ReLU → `Conv_2` 3×3 (stride) → `BatchNorm_3` + ReLU
//! → `Conv_4` 1×1 (4×) → `BatchNorm_5` (scale initialised to 0) → plus the shortcut → ReLU. The
//! shortcut is the identity, or — when the shape changes (the first block of every stage) —
//! `conv_proj` 1×1 (stride) → `norm_proj`. BN momentum 0.9, eps 1e-5. Every kernel starts
//! `lecun_normal` ([`crate::init::init_resnet_imagenet`]).
//!
//! Parameter paths are the reference's own flax.nn tree: unnamed modules numbered by one counter
//! per parent (`BottleneckResNetBlock_0/Conv_0`, `…/BatchNorm_1`, …, `Dense_16` for ResNet-50).

use ringsam_nn::layers::{Activation, ActivationKind, BatchNorm, BatchNormConfig, Buffers, Conv2d, Conv2dConfig, MaxPool2d, Padding};
use ringsam_nn::{Layer, NnError, ParamLayout, Pass, StateLayout};
use ringsam_tensor::Tensor;

use crate::chain::Chain;
use crate::init::init_resnet_imagenet;
use crate::layer_factory::LayerFactory;
use crate::network::Network;
use crate::residual::{residual_sum, sum_into};
use crate::{ModelConfig, ModelError};

fn bn(layers: &mut LayerFactory, name: &str, c: usize, relu: bool) -> BatchNorm {
    layers.batch_norm(name, BatchNormConfig { channels: c, momentum: 0.9, eps: 1e-5, relu })
}

/// The projection shortcut: `conv_proj` → `norm_proj`.
struct Projection {
    conv: Conv2d,
    norm: BatchNorm,
}

/// `BottleneckResNetBlock_{i}`.
struct Bottleneck {
    name: String,
    conv_0: Conv2d,
    bn_1: BatchNorm,
    conv_2: Conv2d,
    bn_3: BatchNorm,
    conv_4: Conv2d,
    bn_5: BatchNorm,
    projection: Option<Projection>,
    sum: Tensor,
    relu: Activation,
    buffers: Buffers, // the input gradient; the block's output is its final ReLU's
}

impl Bottleneck {
    fn new(layers: &mut LayerFactory, name: &str, c_in: usize, f: usize, stride: usize) -> Self {
        let conv_0 = layers.conv(&format!("{name}/Conv_0"), Conv2dConfig::same(c_in, f, 1, 1));
        let bn_1 = bn(layers, &format!("{name}/BatchNorm_1"), f, true);
        let conv_2 = layers.conv(&format!("{name}/Conv_2"), Conv2dConfig::same(f, f, 3, stride));
        let bn_3 = bn(layers, &format!("{name}/BatchNorm_3"), f, true);
        let conv_4 = layers.conv(&format!("{name}/Conv_4"), Conv2dConfig::same(f, 4 * f, 1, 1));
        let bn_5 = bn(layers, &format!("{name}/BatchNorm_5"), 4 * f, false);
        let projection = (c_in != 4 * f || stride != 1).then(|| Projection {
            conv: layers.conv(&format!("{name}/conv_proj"), Conv2dConfig::same(c_in, 4 * f, 1, stride)),
            norm: bn(layers, &format!("{name}/norm_proj"), 4 * f, false),
        });
        Bottleneck {
            name: name.to_string(),
            conv_0,
            bn_1,
            conv_2,
            bn_3,
            conv_4,
            bn_5,
            projection,
            sum: Tensor::empty(),
            relu: Activation::new(&format!("{name}/relu"), ActivationKind::Relu),
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
        self.conv_0.forward(params, state, x, pass)?;
        self.bn_1.forward(params, state, self.conv_0.output(), pass)?;
        self.conv_2.forward(params, state, self.bn_1.output(), pass)?;
        self.bn_3.forward(params, state, self.conv_2.output(), pass)?;
        self.conv_4.forward(params, state, self.bn_3.output(), pass)?;
        self.bn_5.forward(params, state, self.conv_4.output(), pass)?;
        let residual = match &mut self.projection {
            Some(pr) => {
                pr.conv.forward(params, state, x, pass)?;
                pr.norm.forward(params, state, pr.conv.output(), pass)?;
                pr.norm.output()
            }
            None => x,
        };
        residual_sum(&mut self.sum, self.bn_5.output(), residual, self.conv_4.name())?;
        self.relu.forward(params, state, &self.sum, pass)
    }

    /// Mirror of `forward`: the final ReLU, the main path backwards, then the shortcut.
    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        self.relu.backward(params, grads, &self.sum, dout)?;
        let dsum = self.relu.dinput();
        self.bn_5.backward(params, grads, self.conv_4.output(), dsum)?;
        self.conv_4.backward(params, grads, self.bn_3.output(), self.bn_5.dinput())?;
        self.bn_3.backward(params, grads, self.conv_2.output(), self.conv_4.dinput())?;
        self.conv_2.backward(params, grads, self.bn_1.output(), self.bn_3.dinput())?;
        self.bn_1.backward(params, grads, self.conv_0.output(), self.conv_2.dinput())?;
        self.conv_0.backward(params, grads, x, self.bn_1.dinput())?;
        let dshort = match &mut self.projection {
            Some(pr) => {
                pr.norm.backward(params, grads, pr.conv.output(), dsum)?;
                pr.conv.backward(params, grads, x, pr.norm.dinput())?;
                pr.conv.dinput()
            }
            None => dsum,
        };
        sum_into(&mut self.buffers.dinp, self.conv_0.dinput(), dshort, self.conv_0.name())?;
        // Only the block's input gradient is needed from here on.
        let mut inner: Vec<&mut dyn Layer> =
            vec![&mut self.relu, &mut self.bn_5, &mut self.conv_4, &mut self.bn_3, &mut self.conv_2, &mut self.bn_1, &mut self.conv_0];
        if let Some(pr) = &mut self.projection {
            inner.extend([&mut pr.norm as &mut dyn Layer, &mut pr.conv]);
        }
        inner.into_iter().for_each(|l| l.release_dinput());
        Ok(())
    }

    fn last_macs(&self) -> usize {
        let proj = self.projection.as_ref().map_or(0, |p| p.conv.last_macs());
        self.conv_0.last_macs() + self.conv_2.last_macs() + self.conv_4.last_macs() + proj
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }

    fn output(&self) -> &Tensor {
        self.relu.output()
    }
}

/// A ResNet with `stage_sizes` bottleneck blocks per stage (ResNet-50: `[3, 4, 6, 3]`; see the
/// module docs).
pub fn new(name: &str, stage_sizes: &[usize], cfg: ModelConfig) -> Result<Network, ModelError> {
    if stage_sizes.is_empty() || stage_sizes.contains(&0) || cfg.num_classes == 0 || cfg.in_channels == 0 {
        return Err(ModelError::Config {
            name: name.into(),
            why: format!("stage sizes {stage_sizes:?}, classes and channels must be positive"),
        });
    }
    let mut layers = LayerFactory::default();
    let conv_init = Conv2dConfig { padding: Padding::Explicit(3), input_grad: false, ..Conv2dConfig::same(cfg.in_channels, 64, 7, 2) };
    let stem = Chain::sequential(&mut layers)
        .then(|l| l.conv("conv_init", conv_init))
        .then(|l| bn(l, "bn_init", 64, false))
        .then(|_| MaxPool2d::new("max_pool", 3, 2))
        .build();
    let mut blocks = Chain::blocks(&mut layers);
    let (mut c_in, mut index) = (64, 0);
    for (i, &size) in stage_sizes.iter().enumerate() {
        let f = 64 << i;
        for j in 0..size {
            let stride = if i > 0 && j == 0 { 2 } else { 1 };
            let block = format!("BottleneckResNetBlock_{index}");
            blocks = blocks.then(|l| Bottleneck::new(l, &block, c_in, f, stride));
            c_in = 4 * f;
            index += 1;
        }
    }
    let body = blocks.build();
    let head = Chain::sequential(&mut layers).pool_dense(&format!("Dense_{index}"), c_in, cfg.num_classes).build();
    Ok(Network::assemble(name, cfg, resnet_init, layers, stem, body, head))
}

/// The reference's ImageNet initialisation, with the last BN scale of every bottleneck at 0.
fn resnet_init(layout: &ParamLayout, params: &mut [f32], state_layout: &StateLayout, state: &mut [f32], seed: u64) {
    init_resnet_imagenet(layout, params, state_layout, state, seed, |n| n.ends_with("/BatchNorm_5/scale"));
}
