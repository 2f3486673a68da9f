//! Models by the reference's names.
//!
//! `WideResnet{d}x{k}` builds any WideResNet of depth `d = 6n + 4` and width `k`;
//! `ShakeShake_{b}x{k}` a Shake-Shake net of `b` blocks per group and width `k`;
//! `Pyramid_ShakeDrop_{d}x{α}` a PyramidNet of depth `d = 9n + 2` and widening α. The listed
//! names are the ones the reference and our configs use.

use crate::{Model, ModelConfig, ModelError, efficientnet, pyramid_net, resnet, shake_shake, small_cnn, wide_resnet};

/// A registered model, as `ringsam models` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// Registry name.
    pub name: &'static str,
    /// The image side the model is designed for.
    pub input_size: usize,
    /// One line on what it is.
    pub summary: &'static str,
}

const MODELS: &[ModelInfo] = &[
    ModelInfo { name: "WideResnet28x10", input_size: 32, summary: "WRN-28-10, the paper's CIFAR model" },
    ModelInfo { name: "WideResnet16x8", input_size: 32, summary: "WRN-16-8 (davda54/sam's example)" },
    ModelInfo { name: "WideResnet16x4", input_size: 32, summary: "WRN-16-4, the benchmark model" },
    ModelInfo { name: "WideResnet16x2", input_size: 32, summary: "WRN-16-2, small; tests and quick runs" },
    ModelInfo { name: "WideResnet10x2", input_size: 32, summary: "WRN-10-2, small; the quickstart (on 8x8 digits)" },
    ModelInfo { name: "WideResnet10x1", input_size: 32, summary: "WRN-10-1, tiny; smoke tests" },
    ModelInfo {
        name: "WideResnet28x6_ShakeShake",
        input_size: 32,
        summary: "Shake-Shake 26 2x96d, the paper's (4 blocks per group, width 6)",
    },
    ModelInfo { name: "Pyramid_ShakeDrop", input_size: 32, summary: "PyramidNet-272, alpha 200, bottleneck, ShakeDrop: the paper's" },
    ModelInfo {
        name: "Resnet50",
        input_size: 224,
        summary: "ResNet-50 v1 (ImageNet; stride on the 3x3, no ReLU after the stem BN as the reference)",
    },
    ModelInfo { name: "Resnet101", input_size: 224, summary: "ResNet-101 v1 (ImageNet)" },
    ModelInfo { name: "Resnet152", input_size: 224, summary: "ResNet-152 v1 (ImageNet)" },
    ModelInfo { name: "Resnet14", input_size: 224, summary: "ResNet-50's design with one bottleneck per stage; tests and quick runs" },
    ModelInfo { name: "efficientnet-b0", input_size: 224, summary: "EfficientNet-B0" },
    ModelInfo { name: "efficientnet-b1", input_size: 240, summary: "EfficientNet-B1" },
    ModelInfo { name: "efficientnet-b2", input_size: 260, summary: "EfficientNet-B2" },
    ModelInfo { name: "efficientnet-b3", input_size: 300, summary: "EfficientNet-B3" },
    ModelInfo { name: "efficientnet-b4", input_size: 380, summary: "EfficientNet-B4" },
    ModelInfo { name: "efficientnet-b5", input_size: 456, summary: "EfficientNet-B5" },
    ModelInfo { name: "efficientnet-b6", input_size: 528, summary: "EfficientNet-B6" },
    ModelInfo { name: "efficientnet-b7", input_size: 600, summary: "EfficientNet-B7" },
    ModelInfo { name: "efficientnet-b8", input_size: 672, summary: "EfficientNet-B8" },
    ModelInfo { name: "efficientnet-l2", input_size: 800, summary: "EfficientNet-L2 (Noisy Student)" },
    ModelInfo { name: "efficientnet-l2-475", input_size: 475, summary: "EfficientNet-L2 at 475 px (the reference's finetuning size)" },
    ModelInfo {
        name: "efficientnet-test",
        input_size: 64,
        summary: "B0's blocks at width 0.1, depth 0.5 (10 blocks, 64 px); tests and the Flax checkpoint fixture",
    },
    ModelInfo { name: "SmallCnn", input_size: 8, summary: "two convolutions, no batch norm; data-parallel equivalence tests" },
];

/// The registered models.
pub fn list() -> &'static [ModelInfo] {
    MODELS
}

/// The image side model `name` is designed for: its listed size, 224 for ResNets and the
/// EfficientNet sizes for their family, 32 for the other (CIFAR-family) names.
pub fn input_size(name: &str) -> usize {
    if let Some(m) = MODELS.iter().find(|m| m.name == name) {
        return m.input_size;
    }
    if name.starts_with("Resnet") { 224 } else { 32 }
}

/// Builds a model by name.
pub fn build(name: &str, cfg: &ModelConfig) -> Result<Box<dyn Model>, ModelError> {
    if name == "WideResnet28x6_ShakeShake" {
        return Ok(Box::new(shake_shake::new(name, 4, 6, *cfg)?));
    }
    if name == "Pyramid_ShakeDrop" {
        return Ok(Box::new(pyramid_net::new(name, 272, 200, *cfg)?));
    }
    // Small members of both families, for tests and quick runs.
    if let Some((b, k)) = name.strip_prefix("ShakeShake_").and_then(pair) {
        return Ok(Box::new(shake_shake::new(name, b, k, *cfg)?));
    }
    if let Some((d, a)) = name.strip_prefix("Pyramid_ShakeDrop_").and_then(pair) {
        return Ok(Box::new(pyramid_net::new(name, d, a, *cfg)?));
    }
    let build_resnet = |stages: &[usize]| -> Result<Box<dyn Model>, ModelError> { Ok(Box::new(resnet::new(name, stages, *cfg)?)) };
    match name {
        "Resnet50" => return build_resnet(&[3, 4, 6, 3]),
        "Resnet101" => return build_resnet(&[3, 4, 23, 3]),
        "Resnet152" => return build_resnet(&[3, 8, 36, 3]),
        "Resnet14" => return build_resnet(&[1, 1, 1, 1]),
        _ => {}
    }
    if let Some(sc) = efficientnet::scaling(name) {
        return Ok(Box::new(efficientnet::new(name, sc, *cfg)?));
    }
    if name == "SmallCnn" {
        return Ok(Box::new(small_cnn::new(*cfg)?));
    }
    if let Some((d, k)) = parse_wrn(name) {
        return Ok(Box::new(wide_resnet::new(name, d, k, *cfg)?));
    }
    Err(ModelError::Unknown { name: name.into(), known: MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ") })
}

/// `WideResnet{d}x{k}` → `(d, k)`.
fn parse_wrn(name: &str) -> Option<(usize, usize)> {
    pair(name.strip_prefix("WideResnet")?)
}

/// `"{a}x{b}"` → `(a, b)`.
fn pair(s: &str) -> Option<(usize, usize)> {
    let (a, b) = s.split_once('x')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Forward GFLOPs per image at `side`×`side` (2 × the multiply-adds of convolutions and dense
/// layers; batch norm and activations are not counted), found by running one image through the
/// model in evaluation mode.
pub fn forward_gflops(model: &mut dyn Model, side: usize) -> Result<f64, ringsam_nn::NnError> {
    let cfg = model.config();
    let params = ringsam_tensor::Tensor::from(vec![0.0; model.layout().total()]);
    let mut state = ringsam_tensor::Tensor::from(vec![0.0; model.state_layout().total()]);
    let x = ringsam_tensor::Tensor::from_vec(&[cfg.in_channels, 1, side, side], vec![0.0; cfg.in_channels * side * side])
        .map_err(|source| ringsam_nn::NnError::Kernel { layer: "input".into(), source })?;
    model.forward(&params, &mut state, &x, &ringsam_nn::Pass::eval())?;
    Ok(2.0 * model.last_forward_macs() as f64 / 1e9)
}
