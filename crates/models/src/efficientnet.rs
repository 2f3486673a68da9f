//! EfficientNet B0–B8, L2 and L2-475 exactly as the reference defines them (google-research/sam
//! `sam_jax/efficientnet/efficientnet.py`), named by the reference's parameter tree so its
//! published Flax checkpoints load by path and shape.
//!
//! ```text
//! Stem_0            conv2d 3×3 stride 2 → batch_normalization → swish
//! MBConvBlock_1…N   seven stages of mobile inverted bottlenecks (table below), N = Σ repeats
//! Head_{N+1}        conv2d 1×1 → batch_normalization → swish → global pool → dropout → dense
//! ```
//! A block (`filters = in · expand`): if expand ≠ 1, `expand_conv2d_0` 1×1 → BN → swish; then
//! `depthwise_conv2d` k×k (stride, SAME; kernel `depthwise_kernel` `(k, k, C, 1)`) → BN → swish;
//! `SqueezeExcite_0` to `max(1, ⌊in · 0.25⌋)` channels; `project_conv2d_*` 1×1 → BN. BN layers are
//! `batch_normalization_0, 1, 2` in order (0 and 1 without the expansion). When the stride is 1 and
//! in = out, drop-connect (rate `0.2 · b / N` for 0-based block `b`) and the input are added.
//! BN momentum 0.99, eps 1e-3. Widths: `round_filters` (multiples of 8, never below 90 %);
//! depths: `⌈depth · repeats⌉`. Kernels start `variance_scaling(2, fan_out, truncated)`, the
//! classifier `U(±1/√classes)` ([`crate::init::init_efficientnet`]).
//!
//! Differences, on purpose: the reference's batch norm averages statistics across replicas
//! (`axis_name='batch'`); ringsam's is per replica, as for its other models. The reference refuses
//! any input size but the model's; ringsam runs any size (`--image_size` for quick runs).

use ringsam_nn::layers::{
    Activation, ActivationKind, BatchNorm, BatchNormConfig, Buffers, Conv2d, Conv2dConfig, DropConnect, Dropout, GlobalAvgPool,
    SqueezeExcite,
};
use ringsam_nn::{Layer, NnError, Pass};
use ringsam_tensor::Tensor;

use crate::chain::Chain;
use crate::init::init_efficientnet;
use crate::layer_factory::LayerFactory;
use crate::network::Network;
use crate::residual::{copy_into, sum_into};
use crate::{ModelConfig, ModelError};

/// One stage of the base network: kernel, repeats, input and output filters, expansion, stride.
struct Stage {
    kernel: usize,
    repeats: usize,
    filters_in: usize,
    filters_out: usize,
    expand: usize,
    stride: usize,
}

const STAGES: [Stage; 7] = [
    Stage { kernel: 3, repeats: 1, filters_in: 32, filters_out: 16, expand: 1, stride: 1 },
    Stage { kernel: 3, repeats: 2, filters_in: 16, filters_out: 24, expand: 6, stride: 2 },
    Stage { kernel: 5, repeats: 2, filters_in: 24, filters_out: 40, expand: 6, stride: 2 },
    Stage { kernel: 3, repeats: 3, filters_in: 40, filters_out: 80, expand: 6, stride: 2 },
    Stage { kernel: 5, repeats: 3, filters_in: 80, filters_out: 112, expand: 6, stride: 1 },
    Stage { kernel: 5, repeats: 4, filters_in: 112, filters_out: 192, expand: 6, stride: 2 },
    Stage { kernel: 3, repeats: 1, filters_in: 192, filters_out: 320, expand: 6, stride: 1 },
];

const SE_RATIO: f64 = 0.25;
const DROP_CONNECT: f64 = 0.2;

/// A model's scaling: width, depth, input resolution, dropout before the classifier.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scaling {
    /// Width coefficient.
    pub width: f64,
    /// Depth coefficient.
    pub depth: f64,
    /// Input side in pixels.
    pub resolution: usize,
    /// Dropout rate before the classifier.
    pub dropout: f32,
}

/// The reference's table (`MODEL_CONFIGS`).
pub fn scaling(name: &str) -> Option<Scaling> {
    let (width, depth, resolution, dropout) = match name {
        "efficientnet-b0" => (1.0, 1.0, 224, 0.2),
        "efficientnet-b1" => (1.0, 1.1, 240, 0.2),
        "efficientnet-b2" => (1.1, 1.2, 260, 0.3),
        "efficientnet-b3" => (1.2, 1.4, 300, 0.3),
        "efficientnet-b4" => (1.4, 1.8, 380, 0.4),
        "efficientnet-b5" => (1.6, 2.2, 456, 0.4),
        "efficientnet-b6" => (1.8, 2.6, 528, 0.5),
        "efficientnet-b7" => (2.0, 3.1, 600, 0.5),
        "efficientnet-b8" => (2.2, 3.6, 672, 0.5),
        "efficientnet-l2" => (4.3, 5.3, 800, 0.5),
        "efficientnet-l2-475" => (4.3, 5.3, 475, 0.5),
        // Not the reference's: every kind of block at a fraction of B0's size, for tests
        // (tests/fixtures/make_efficientnet_fixture.py builds it in Flax).
        "efficientnet-test" => (0.1, 0.5, 64, 0.2),
        _ => return None,
    };
    Some(Scaling { width, depth, resolution, dropout })
}

/// `round_filters`: `filters · width` to a multiple of 8 (at least 8), never below 90 % of it.
pub fn round_filters(filters: usize, width: f64) -> usize {
    let f = filters as f64 * width;
    let mut new = (((f + 4.0) as usize) / 8 * 8).max(8);
    if (new as f64) < 0.9 * f {
        new += 8;
    }
    new
}

/// `round_repeats`: `⌈depth · repeats⌉`.
pub fn round_repeats(repeats: usize, depth: f64) -> usize {
    (depth * repeats as f64).ceil() as usize
}

fn bn(layers: &mut LayerFactory, name: &str, c: usize) -> BatchNorm {
    layers.batch_norm(name, BatchNormConfig { channels: c, momentum: 0.99, eps: 1e-3, relu: false })
}

fn swish(name: &str) -> Activation {
    Activation::new(name, ActivationKind::Silu)
}

/// `MBConvBlock_{i}`.
struct MbConv {
    name: String,
    expand: Option<(Conv2d, BatchNorm, Activation)>,
    depthwise: Conv2d,
    bn_dw: BatchNorm,
    swish_dw: Activation,
    se: SqueezeExcite,
    project: Conv2d,
    bn_project: BatchNorm,
    skip: Option<DropConnect>, // Some: stride 1 and in = out
    buffers: Buffers,
}

impl MbConv {
    fn new(layers: &mut LayerFactory, name: &str, stage: &Stage, c_in: usize, c_out: usize, stride: usize, drop: f32) -> Self {
        let filters = c_in * stage.expand;
        let expand = (stage.expand != 1).then(|| {
            (
                layers.conv(&format!("{name}/expand_conv2d_0"), Conv2dConfig::same(c_in, filters, 1, 1)),
                bn(layers, &format!("{name}/batch_normalization_0"), filters),
                swish(&format!("{name}/expand_swish")),
            )
        });
        let n = expand.is_some() as usize; // BN and projection numbering shift by the expansion
        let depthwise = layers.depthwise_conv(&format!("{name}/depthwise_conv2d"), filters, stage.kernel, stride);
        let bn_dw = bn(layers, &format!("{name}/batch_normalization_{n}"), filters);
        let reduced = ((c_in as f64 * SE_RATIO) as usize).max(1);
        let se = layers.squeeze_excite(&format!("{name}/SqueezeExcite_0"), filters, reduced);
        let project = layers.conv(&format!("{name}/project_conv2d_{n}"), Conv2dConfig::same(filters, c_out, 1, 1));
        let bn_project = bn(layers, &format!("{name}/batch_normalization_{}", n + 1), c_out);
        MbConv {
            name: name.to_string(),
            expand,
            depthwise,
            bn_dw,
            swish_dw: swish(&format!("{name}/depthwise_swish")),
            se,
            project,
            bn_project,
            skip: (stride == 1 && c_in == c_out).then(|| DropConnect::new(&format!("{name}/drop_connect"), drop)),
            buffers: Buffers::default(),
        }
    }
}

impl Layer for MbConv {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_device(&self) -> bool {
        true
    }

    fn forward(&mut self, params: &Tensor, state: &mut Tensor, x: &Tensor, pass: &Pass) -> Result<(), NnError> {
        let h = match &mut self.expand {
            Some((conv, norm, act)) => {
                conv.forward(params, state, x, pass)?;
                norm.forward(params, state, conv.output(), pass)?;
                act.forward(params, state, norm.output(), pass)?;
                act.output()
            }
            None => x,
        };
        self.depthwise.forward(params, state, h, pass)?;
        self.bn_dw.forward(params, state, self.depthwise.output(), pass)?;
        self.swish_dw.forward(params, state, self.bn_dw.output(), pass)?;
        self.se.forward(params, state, self.swish_dw.output(), pass)?;
        self.project.forward(params, state, self.se.output(), pass)?;
        self.bn_project.forward(params, state, self.project.output(), pass)?;
        let y = self.bn_project.output();
        match &mut self.skip {
            Some(dc) => {
                dc.forward(params, state, y, pass)?;
                sum_into(&mut self.buffers.out, dc.output(), x, self.project.name())
            }
            None => copy_into(&mut self.buffers.out, y, self.project.name()),
        }
    }

    /// Mirror of `forward`.
    fn backward(&mut self, params: &Tensor, grads: &mut Tensor, x: &Tensor, dout: &Tensor) -> Result<(), NnError> {
        let dy = match &mut self.skip {
            Some(dc) => {
                dc.backward(params, grads, self.bn_project.output(), dout)?;
                dc.dinput()
            }
            None => dout,
        };
        self.bn_project.backward(params, grads, self.project.output(), dy)?;
        self.project.backward(params, grads, self.se.output(), self.bn_project.dinput())?;
        self.se.backward(params, grads, self.swish_dw.output(), self.project.dinput())?;
        self.swish_dw.backward(params, grads, self.bn_dw.output(), self.se.dinput())?;
        self.bn_dw.backward(params, grads, self.depthwise.output(), self.swish_dw.dinput())?;
        let dh = match &mut self.expand {
            Some((conv, norm, act)) => {
                self.depthwise.backward(params, grads, act.output(), self.bn_dw.dinput())?;
                act.backward(params, grads, norm.output(), self.depthwise.dinput())?;
                norm.backward(params, grads, conv.output(), act.dinput())?;
                conv.backward(params, grads, x, norm.dinput())?;
                conv.dinput()
            }
            None => {
                self.depthwise.backward(params, grads, x, self.bn_dw.dinput())?;
                self.depthwise.dinput()
            }
        };
        if self.skip.is_some() {
            sum_into(&mut self.buffers.dinp, dh, dout, self.project.name())?;
        } else {
            copy_into(&mut self.buffers.dinp, dh, self.project.name())?;
        }
        // Only the block's input gradient is needed from here on.
        let mut inner: Vec<&mut dyn Layer> =
            vec![&mut self.bn_project, &mut self.project, &mut self.se, &mut self.swish_dw, &mut self.bn_dw, &mut self.depthwise];
        if let Some((conv, norm, act)) = &mut self.expand {
            inner.extend([act as &mut dyn Layer, norm, conv]);
        }
        if let Some(dc) = &mut self.skip {
            inner.push(dc);
        }
        inner.into_iter().for_each(|l| l.release_dinput());
        Ok(())
    }

    fn last_macs(&self) -> usize {
        let expand = self.expand.as_ref().map_or(0, |e| e.0.last_macs());
        expand + self.depthwise.last_macs() + self.project.last_macs() + self.se.last_macs()
    }

    fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    fn buffers_mut(&mut self) -> &mut Buffers {
        &mut self.buffers
    }
}

/// The model `name` scaled by `sc` (see the module docs).
pub fn new(name: &str, sc: Scaling, cfg: ModelConfig) -> Result<Network, ModelError> {
    if cfg.num_classes == 0 || cfg.in_channels == 0 || !(sc.width > 0.0 && sc.depth > 0.0) {
        return Err(ModelError::Config { name: name.into(), why: "classes, channels, width and depth must be positive".into() });
    }
    let mut layers = LayerFactory::default();
    let stem_width = round_filters(32, sc.width);
    let stem_conv = Conv2dConfig { input_grad: false, ..Conv2dConfig::same(cfg.in_channels, stem_width, 3, 2) };
    let stem = Chain::sequential(&mut layers)
        .then(|l| l.conv("Stem_0/conv2d", stem_conv))
        .then(|l| bn(l, "Stem_0/batch_normalization", stem_width))
        .then(|_| swish("Stem_0/swish"))
        .build();
    let total: usize = STAGES.iter().map(|st| round_repeats(st.repeats, sc.depth)).sum();
    let mut blocks = Chain::blocks(&mut layers);
    let mut index = 0;
    for st in &STAGES {
        let (c_in, c_out) = (round_filters(st.filters_in, sc.width), round_filters(st.filters_out, sc.width));
        for r in 0..round_repeats(st.repeats, sc.depth) {
            let (cin, stride) = if r == 0 { (c_in, st.stride) } else { (c_out, 1) };
            let drop = (DROP_CONNECT * index as f64 / total as f64) as f32;
            let block = format!("MBConvBlock_{}", index + 1);
            blocks = blocks.then(|l| MbConv::new(l, &block, st, cin, c_out, stride, drop));
            index += 1;
        }
    }
    let body = blocks.build();
    let head_name = format!("Head_{}", total + 1);
    let c_last = round_filters(STAGES[6].filters_out, sc.width);
    let head_width = round_filters(1280, sc.width);
    let head = Chain::sequential(&mut layers)
        .then(|l| l.conv(&format!("{head_name}/conv2d"), Conv2dConfig::same(c_last, head_width, 1, 1)))
        .then(|l| bn(l, &format!("{head_name}/batch_normalization"), head_width))
        .then(|_| swish(&format!("{head_name}/swish")))
        .then(|_| GlobalAvgPool::new(&format!("{head_name}/pool")))
        .then(|_| Dropout::new(&format!("{head_name}/dropout"), sc.dropout))
        .then(|l| l.dense(&format!("{head_name}/dense"), head_width, cfg.num_classes))
        .build();
    Ok(Network::assemble(name, cfg, init_efficientnet, layers, stem, body, head))
}
