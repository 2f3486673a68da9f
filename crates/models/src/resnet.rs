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

use ringsam_nn::layers::{
    Activation, ActivationKind, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, GlobalAvgPool, Linear, MaxPool2d, Padding,
};
use ringsam_nn::{Layer, NnError, ParamLayout, Pass, StateLayout, Workspace};
use ringsam_tensor::Tensor;
use ringsam_tensor::elementwise::add_forward;

use crate::residual_stack::{Block, BlockStack, check_backward_buffers, model_fields};
use crate::wide_resnet::check_buffers;
use crate::{Model, ModelConfig, ModelError};

fn bn(p: &mut ParamLayout, s: &mut StateLayout, name: &str, c: usize, relu: bool) -> BatchNorm {
    BatchNorm::new(p, s, name, BatchNormConfig { channels: c, momentum: 0.9, eps: 1e-5, relu })
}

/// The projection shortcut: `conv_proj` → `norm_proj`.
struct Projection {
    conv: Conv2d,
    norm: BatchNorm,
}

/// `BottleneckResNetBlock_{i}`.
struct Bottleneck {
    conv_0: Conv2d,
    bn_1: BatchNorm,
    conv_2: Conv2d,
    bn_3: BatchNorm,
    conv_4: Conv2d,
    bn_5: BatchNorm,
    projection: Option<Projection>,
    sum: Tensor,
    relu: Activation,
    dinp: Tensor,
}

impl Bottleneck {
    #[allow(clippy::too_many_arguments)]
    fn new(p: &mut ParamLayout, s: &mut StateLayout, ws: &Workspace, name: &str, c_in: usize, f: usize, stride: usize) -> Self {
        let conv = |p: &mut ParamLayout, leaf: &str, cfg| Conv2d::with_workspace(p, &format!("{name}/{leaf}"), cfg, ws);
        let conv_0 = conv(p, "Conv_0", Conv2dConfig::same(c_in, f, 1, 1));
        let bn_1 = bn(p, s, &format!("{name}/BatchNorm_1"), f, true);
        let conv_2 = conv(p, "Conv_2", Conv2dConfig::same(f, f, 3, stride));
        let bn_3 = bn(p, s, &format!("{name}/BatchNorm_3"), f, true);
        let conv_4 = conv(p, "Conv_4", Conv2dConfig::same(f, 4 * f, 1, 1));
        let bn_5 = bn(p, s, &format!("{name}/BatchNorm_5"), 4 * f, false);
        let projection = (c_in != 4 * f || stride != 1).then(|| Projection {
            conv: conv(p, "conv_proj", Conv2dConfig::same(c_in, 4 * f, 1, stride)),
            norm: bn(p, s, &format!("{name}/norm_proj"), 4 * f, false),
        });
        Bottleneck {
            conv_0,
            bn_1,
            conv_2,
            bn_3,
            conv_4,
            bn_5,
            projection,
            sum: Tensor::empty(),
            relu: Activation::new(&format!("{name}/relu"), ActivationKind::Relu),
            dinp: Tensor::empty(),
        }
    }
}

impl Block for Bottleneck {
    fn forward(&mut self, params: &[f32], state: &mut [f32], x: &Tensor, pass: &Pass) -> Result<(), NnError> {
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
        let y = self.bn_5.output();
        if y.shape() != residual.shape() {
            return Err(NnError::Shape {
                layer: self.conv_4.name().to_string(),
                expected: format!("{:?} (the shortcut's shape)", residual.shape()),
                got: y.shape().to_vec(),
            });
        }
        self.sum.resize(y.shape());
        add_forward(self.sum.as_mut_slice(), y.as_slice(), residual.as_slice())
            .map_err(|source| NnError::Kernel { layer: self.conv_4.name().to_string(), source })?;
        self.relu.forward(params, state, &self.sum, pass)
    }

    /// Mirror of `forward`: the final ReLU, the main path backwards, then the shortcut.
    fn backward(&mut self, params: &[f32], grads: &mut [f32], x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
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
        self.dinp.resize(x.shape());
        add_forward(self.dinp.as_mut_slice(), self.conv_0.dinput().as_slice(), dshort.as_slice())
            .map_err(|source| NnError::Kernel { layer: self.conv_0.name().to_string(), source })?;
        // Only the block's input gradient is needed from here on.
        let mut inner: Vec<&mut dyn Layer> =
            vec![&mut self.relu, &mut self.bn_5, &mut self.conv_4, &mut self.bn_3, &mut self.conv_2, &mut self.bn_1, &mut self.conv_0];
        if let Some(pr) = &mut self.projection {
            inner.extend([&mut pr.norm as &mut dyn Layer, &mut pr.conv]);
        }
        inner.into_iter().for_each(|l| l.release_dinput());
        Ok(())
    }

    fn output(&self) -> &Tensor {
        self.relu.output()
    }

    fn dinput(&self) -> &Tensor {
        &self.dinp
    }

    fn release_dinput(&mut self) {
        self.dinp = Tensor::empty();
    }

    fn macs(&self) -> usize {
        let proj = self.projection.as_ref().map(|p| &p.conv);
        [Some(&self.conv_0), Some(&self.conv_2), Some(&self.conv_4), proj]
            .into_iter()
            .flatten()
            .filter_map(|c| c.last_shape())
            .map(|s| s.macs())
            .sum()
    }
}

/// ImageNet ResNet v1 (see the module docs).
pub struct Resnet {
    name: String,
    cfg: ModelConfig,
    layout: ParamLayout,
    state_layout: StateLayout,
    conv_init: Conv2d,
    bn_init: BatchNorm,
    max_pool: MaxPool2d,
    blocks: BlockStack<Bottleneck>,
    head_start: usize, // first parameter offset of the Dense layer
    pool: GlobalAvgPool,
    dense: Linear,
}

impl Resnet {
    /// A ResNet with `stage_sizes` bottleneck blocks per stage (ResNet-50: `[3, 4, 6, 3]`).
    pub fn new(name: &str, stage_sizes: &[usize], cfg: ModelConfig) -> Result<Self, ModelError> {
        if stage_sizes.is_empty() || stage_sizes.contains(&0) || cfg.num_classes == 0 || cfg.in_channels == 0 {
            return Err(ModelError::Config {
                name: name.into(),
                why: format!("stage sizes {stage_sizes:?}, classes and channels must be positive"),
            });
        }
        let (mut p, mut s) = (ParamLayout::new(), StateLayout::new());
        let ws = Workspace::new();
        let stem = Conv2dConfig { padding: Padding::Explicit(3), input_grad: false, ..Conv2dConfig::same(cfg.in_channels, 64, 7, 2) };
        let conv_init = Conv2d::with_workspace(&mut p, "conv_init", stem, &ws);
        let bn_init = bn(&mut p, &mut s, "bn_init", 64, false);
        let mut blocks = BlockStack::new();
        let (mut c_in, mut index) = (64, 0);
        for (i, &size) in stage_sizes.iter().enumerate() {
            let f = 64 << i;
            for j in 0..size {
                let stride = if i > 0 && j == 0 { 2 } else { 1 };
                let start = p.total();
                blocks.push(start, Bottleneck::new(&mut p, &mut s, &ws, &format!("BottleneckResNetBlock_{index}"), c_in, f, stride));
                c_in = 4 * f;
                index += 1;
            }
        }
        let head_start = p.total();
        let dense = Linear::new(&mut p, &format!("Dense_{index}"), c_in, cfg.num_classes);
        Ok(Resnet {
            name: name.into(),
            cfg,
            layout: p,
            state_layout: s,
            conv_init,
            bn_init,
            max_pool: MaxPool2d::new("max_pool", 3, 2),
            blocks,
            head_start,
            pool: GlobalAvgPool::new("global_avg_pool"),
            dense,
        })
    }
}

impl Model for Resnet {
    model_fields!();

    fn init(&self, params: &mut [f32], state: &mut [f32], seed: u64) {
        crate::init::init_resnet_imagenet(&self.layout, params, &self.state_layout, state, seed, |n| n.ends_with("/BatchNorm_5/scale"));
    }

    fn forward(&mut self, params: &[f32], state: &mut [f32], x: &Tensor, pass: &Pass) -> Result<&Tensor, NnError> {
        check_buffers(&self.layout, &self.state_layout, params.len(), state.len())?;
        self.conv_init.forward(params, state, x, pass)?;
        self.bn_init.forward(params, state, self.conv_init.output(), pass)?;
        self.max_pool.forward(params, state, self.bn_init.output(), pass)?;
        let h = self.blocks.forward(params, state, self.max_pool.output(), pass)?;
        self.pool.forward(params, state, h, pass)?;
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
        let last = self.blocks.output(self.max_pool.output());
        self.pool.backward(params, grads, last, self.dense.dinput())?;
        self.blocks.backward(params, grads, self.max_pool.output(), self.pool.dinput(), ready)?;
        let dfirst = self.blocks.dinput(self.pool.dinput());
        self.max_pool.backward(params, grads, self.bn_init.output(), dfirst)?;
        self.bn_init.backward(params, grads, self.conv_init.output(), self.max_pool.dinput())?;
        self.conv_init.backward(params, grads, x, self.bn_init.dinput())?;
        ready(grads, 0);
        Ok(())
    }

    fn last_forward_macs(&self) -> usize {
        self.conv_init.last_shape().map_or(0, |s| s.macs()) + self.blocks.macs() + self.dense.last_macs()
    }

    fn last_backward_macs(&self) -> usize {
        2 * self.last_forward_macs() - self.conv_init.last_shape().map_or(0, |s| s.macs())
    }
}
