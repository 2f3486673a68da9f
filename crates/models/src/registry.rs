//! Models by the reference's names.
//!
//! `WideResnet{d}x{k}` builds any WideResNet of depth `d = 6n + 4` and width `k`; the listed
//! names are the ones the reference and our configs use.

use crate::wide_resnet::WideResnet;

use crate::{Model, ModelConfig, ModelError};

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
    ModelInfo { name: "SmallCnn", input_size: 8, summary: "two convolutions, no batch norm; data-parallel equivalence tests" },
];

/// The registered models.
pub fn list() -> &'static [ModelInfo] {
    MODELS
}

/// Builds a model by name.
pub fn build(name: &str, cfg: &ModelConfig) -> Result<Box<dyn Model>, ModelError> {
    if name == "SmallCnn" {
        return Ok(Box::new(crate::small_cnn::SmallCnn::new(*cfg)?));
    }
    if let Some((d, k)) = parse_wrn(name) {
        return Ok(Box::new(WideResnet::new(name, d, k, *cfg)?));
    }
    Err(ModelError::Unknown { name: name.into(), known: MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ") })
}

/// `WideResnet{d}x{k}` → `(d, k)`.
fn parse_wrn(name: &str) -> Option<(usize, usize)> {
    let (d, k) = name.strip_prefix("WideResnet")?.split_once('x')?;
    Some((d.parse().ok()?, k.parse().ok()?))
}
