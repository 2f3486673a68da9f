//! Evaluation: loss, error rate (and top-5) of a model over a whole dataset split.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ringsam_data::loader::{Loader, LoaderConfig};
use ringsam_data::normalize::Normalization;
use ringsam_data::{Batch, Dataset};
use ringsam_models::Model;
use ringsam_nn::Pass;
use ringsam_tensor::Tensor;
use ringsam_tensor::loss::{LossShape, softmax_cross_entropy_forward};

use crate::TrainError;
use crate::config::TrainConfig;
use crate::step::count_errors;

/// Evaluates the checkpoint in `dir` on its run's test split (on `data_dir` when given, else the
/// run's), with the EMA weights when the checkpoint has them, as training evaluated it; on `gpu`
/// when given. Returns the run's configuration with the report.
pub fn evaluate_checkpoint(
    dir: &Path,
    data_dir: Option<PathBuf>,
    batch: usize,
    gpu: Option<&Arc<ringsam_kernels::Gpu>>,
) -> Result<(TrainConfig, EvalReport), TrainError> {
    let mut cfg = crate::checkpoint::read_training_state(dir)?.config;
    if data_dir.is_some() {
        cfg.data_dir = data_dir;
    }
    if cfg.dataset.is_sharded() {
        return Err(TrainError::Config(format!(
            "eval reads in-memory datasets; a {} run is evaluated by training itself (--evaluate_every), and `ringsam predict` classifies its images",
            cfg.dataset
        )));
    }
    let (_, test) = crate::data_source::load_splits(&cfg)?;
    let mut model =
        ringsam_models::build(&cfg.model_name, &ringsam_models::ModelConfig { num_classes: test.num_classes, in_channels: test.channels })?;
    let ckpt = crate::checkpoint::load(dir, model.layout(), model.state_layout())?;
    let (params, state) = ckpt.ema.unwrap_or((ckpt.params, ckpt.state));
    let (mut params, mut state) = (Tensor::from(params), Tensor::from(state));
    if let Some(gpu) = gpu {
        (params, state) = (params.to_gpu(gpu)?, state.to_gpu(gpu)?); // the batches follow them
    }
    let norm = crate::data_source::normalization(&cfg, &test.name, test.channels);
    let resize = crate::data_source::memory_resize(&cfg, test.height, test.width);
    let report = evaluate(model.as_mut(), &params, &mut state, &test, batch, &norm, resize)?;
    Ok((cfg, report))
}

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

/// Sums over the examples one replica evaluated; replicas add theirs up, then [`EvalSums::report`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EvalSums {
    /// Σ cross-entropy.
    pub loss: f64,
    /// Misclassified examples.
    pub errors: f64,
    /// Examples whose label is not in the top 5.
    pub top5_errors: f64,
    /// Examples.
    pub examples: f64,
}

impl EvalSums {
    /// As four values, for an all-reduce.
    pub fn to_vec(&self) -> Vec<f32> {
        vec![self.loss as f32, self.errors as f32, self.top5_errors as f32, self.examples as f32]
    }

    /// From an all-reduced [`EvalSums::to_vec`].
    pub fn from_slice(v: &[f32]) -> EvalSums {
        EvalSums { loss: v[0] as f64, errors: v[1] as f64, top5_errors: v[2] as f64, examples: v[3] as f64 }
    }

    /// The means; an error if nothing was evaluated.
    pub fn report(&self, name: &str) -> Result<EvalReport, TrainError> {
        if self.examples < 1.0 {
            return Err(TrainError::Runtime(format!("dataset {name} has no examples to evaluate")));
        }
        Ok(EvalReport {
            loss: self.loss / self.examples,
            error_rate: self.errors / self.examples,
            top5_error_rate: self.top5_errors / self.examples,
            examples: self.examples.round() as usize,
        })
    }
}

/// Evaluates `model` at `params`/`state` (eval mode: running statistics) on all of `data`, its
/// pixels scaled by `norm` and resized to `resize_to` as training saw them.
pub fn evaluate(
    model: &mut dyn Model,
    params: &Tensor,
    state: &mut Tensor,
    data: &Arc<Dataset>,
    batch_size: usize,
    norm: &Normalization,
    resize_to: Option<usize>,
) -> Result<EvalReport, TrainError> {
    let cfg = LoaderConfig { resize_to, ..LoaderConfig::evaluation(batch_size, norm.clone(), 0, 1) };
    evaluate_batches(model, params, state, Loader::new(data.clone(), &cfg, 0, 0)?)?.report(&data.name)
}

/// Sums over `batches` (one replica's share of a split).
pub fn evaluate_batches(
    model: &mut dyn Model,
    params: &Tensor,
    state: &mut Tensor,
    batches: impl Iterator<Item = Batch>,
) -> Result<EvalSums, TrainError> {
    let (mut loss_sum, mut errors, mut top5_errors, mut n_total) = (0.0f64, 0usize, 0usize, 0usize);
    let (mut losses, mut probs) = (Vec::new(), Vec::new());
    for b in batches {
        if b.n == 0 {
            continue; // a share of a short last batch can be empty
        }
        let mut x = Tensor::from_vec(&[b.c, b.n, b.h, b.w], b.images)?;
        if let Some(gpu) = params.gpu() {
            x = x.to_gpu(gpu)?; // the model evaluates where its weights are
        }
        let logits = model.forward(params, state, &x, &Pass::eval())?;
        let on_host;
        let logits = if logits.is_host() {
            logits
        } else {
            on_host = logits.to_host()?;
            &on_host
        };
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
    Ok(EvalSums { loss: loss_sum, errors: errors as f64, top5_errors: top5_errors as f64, examples: n_total as f64 })
}
