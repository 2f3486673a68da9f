//! Evaluation: loss, error rate (and top-5) of a model over a whole dataset split.

use std::sync::Arc;

use ringsam_data::Dataset;
use ringsam_data::loader::{Loader, LoaderConfig};
use ringsam_data::normalize::Normalization;
use ringsam_models::Model;
use ringsam_nn::Pass;
use ringsam_tensor::Tensor;
use ringsam_tensor::loss::{LossShape, softmax_cross_entropy_forward};

use crate::TrainError;
use crate::step::count_errors;

/// Metrics over a split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalReport {
    /// Mean cross-entropy (no label smoothing, no weight decay).
    pub loss: f64,
    /// Fraction misclassified.
    pub error_rate: f64,
    /// Fraction whose label is not among the 5 highest logits.
    pub top5_error_rate: f64,
    /// Examples evaluated.
    pub examples: usize,
}

/// Evaluates `model` at `params`/`state` (eval mode: running statistics) on all of `data`.
pub fn evaluate(
    model: &mut dyn Model,
    params: &[f32],
    state: &mut [f32],
    data: &Arc<Dataset>,
    batch_size: usize,
) -> Result<EvalReport, TrainError> {
    let cfg = LoaderConfig {
        batch_size,
        shuffle: false,
        drop_last: false,
        flip_crop: false,
        flip: false,
        cutout: None,
        normalization: Normalization::for_dataset(&data.name),
        seed: 0,
        prefetch: 2,
        rank: 0,
        world: 1,
    };
    let (mut loss_sum, mut errors, mut top5_errors, mut n_total) = (0.0f64, 0usize, 0usize, 0usize);
    let (mut losses, mut probs) = (Vec::new(), Vec::new());
    for b in Loader::new(data.clone(), &cfg, 0, 0)? {
        let x = Tensor::from_vec(&[b.c, b.n, b.h, b.w], b.images)?;
        let logits = model.forward(params, state, &x, &Pass::eval())?;
        let k = logits.shape()[1];
        losses.resize(b.n, 0.0);
        probs.resize(b.n * k, 0.0);
        let l = softmax_cross_entropy_forward(&mut losses, &mut probs, logits.as_slice(), &b.labels, 0.0, &LossShape { n: b.n, k })?;
        loss_sum += l as f64 * b.n as f64;
        errors += count_errors(logits.as_slice(), &b.labels, k);
        top5_errors += logits
            .as_slice()
            .chunks(k)
            .zip(&b.labels)
            .filter(|&(row, &label)| row.iter().filter(|&&v| v > row[label as usize]).count() >= 5)
            .count();
        n_total += b.n;
    }
    if n_total == 0 {
        return Err(TrainError::Config(format!("dataset {} has no examples to evaluate", data.name)));
    }
    Ok(EvalReport {
        loss: loss_sum / n_total as f64,
        error_rate: errors as f64 / n_total as f64,
        top5_error_rate: top5_errors as f64 / n_total as f64,
        examples: n_total,
    })
}
