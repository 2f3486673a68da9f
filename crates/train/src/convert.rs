//! `ringsam convert`: a checkpoint made elsewhere (a published Flax EfficientNet, a safetensors
//! file) checked against a ringsam model and written as that model's `model.safetensors` —
//! every tensor f32 under its Flax path, parameters and batch-norm statistics, as checkpoints
//! hold them — which `--init_from` and `ringsam predict`-style tools read directly.
//!
//! The model is `--model_name`, or found: the registered model whose every tensor name and shape
//! (the classifier's aside) the checkpoint has. Classes come from the checkpoint's classifier,
//! input channels from its first kernel, unless given.

use std::path::Path;

use ringsam_models::{Model, ModelConfig, build, list};

use crate::TrainError;
use crate::checkpoint::{named, safetensors_bytes, sync_dir, write_synced};
use crate::init_from::{LoadReport, SourceTensors, load_into, read_source};

/// What `convert` did.
#[derive(Debug)]
pub struct Converted {
    /// The model the tensors were checked against.
    pub model_name: String,
    /// Its classes and input channels.
    pub model: ModelConfig,
    /// What was loaded.
    pub report: LoadReport,
    /// Report lines (for the terminal).
    pub lines: Vec<String>,
}

/// Converts `from` into `to` (see the module docs).
pub fn convert(from: &Path, to: &Path, model_name: Option<&str>, num_classes: Option<usize>) -> Result<Converted, TrainError> {
    let src = read_source(from)?;
    let name = match model_name {
        Some(n) => n.to_string(),
        None => infer_model(&src, from)?,
    };
    let probe = build(&name, &ModelConfig::default())?;
    let cfg = ModelConfig {
        num_classes: num_classes.or_else(|| source_classes(probe.as_ref(), &src)).unwrap_or(1000),
        in_channels: source_channels(probe.as_ref(), &src).unwrap_or(3),
    };
    let model = build(&name, &cfg)?;
    let mut params = vec![0.0; model.layout().total()];
    let mut state = vec![0.0; model.state_layout().total()];
    model.init(&mut params, &mut state, 0);
    let report = load_into(&src, model.layout(), model.state_layout(), &mut params, &mut state)?;
    let mut lines = vec![format!("model {name}: {} classes, {} input channels", cfg.num_classes, cfg.in_channels)];
    lines.extend(report.lines(&src));
    drop(src); // a large checkpoint is held once as f32, not twice, while it is written
    let mut views = named(model.layout(), &params, "");
    views.extend(named(model.state_layout(), &state, ""));
    write_file(to, &safetensors_bytes(&views)?)?;
    lines.push(format!("wrote {} ({} tensors, {} values, f32)", to.display(), views.len(), params.len() + state.len()));
    Ok(Converted { model_name: name, model: cfg, report, lines })
}

/// Writes `bytes` to `to` through a temporary file and a rename: never half a file.
fn write_file(to: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let dir = to.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", to.file_name().map_or("model".into(), |n| n.to_string_lossy())));
    write_synced(&tmp, bytes)?;
    std::fs::rename(&tmp, to).map_err(|source| TrainError::Output { path: to.display().to_string(), source })?;
    sync_dir(dir)
}

/// The classes of the source's classifier (the bias of the model's last dense layer).
pub(crate) fn source_classes(model: &dyn Model, src: &SourceTensors) -> Option<usize> {
    let last = model.layout().entries().last()?;
    src.tensors.get(&last.name).and_then(|t| t.shape.last().copied())
}

/// The input channels of the source's first kernel (`(k, k, C_in, C_out)`).
pub(crate) fn source_channels(model: &dyn Model, src: &SourceTensors) -> Option<usize> {
    let first = model.layout().entries().first()?;
    src.tensors.get(&first.name).filter(|t| t.shape.len() == 4).map(|t| t.shape[2])
}

/// The registered model whose tensors the source has, by name and shape (classifier and input
/// channels aside). EfficientNet-L2 and L2-475 share every tensor: the path decides, or the user.
fn infer_model(src: &SourceTensors, from: &Path) -> Result<String, TrainError> {
    let fits = |info: &ringsam_models::ModelInfo| -> bool {
        let Ok(probe) = build(info.name, &ModelConfig::default()) else { return false };
        let cfg = ModelConfig {
            num_classes: source_classes(probe.as_ref(), src).unwrap_or(10),
            in_channels: source_channels(probe.as_ref(), src).unwrap_or(3),
        };
        let Ok(model) = build(info.name, &cfg) else { return false };
        let entries = model.layout().entries().iter().chain(model.state_layout().entries());
        let count = model.layout().entries().len() + model.state_layout().entries().len();
        count == src.tensors.len() && entries.into_iter().all(|e| src.tensors.get(&e.name).is_some_and(|t| t.shape == e.shape))
    };
    let found: Vec<&str> = list().iter().filter(|m| fits(m)).map(|m| m.name).collect();
    let path = from.to_string_lossy().to_lowercase();
    match found.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(TrainError::InitFrom(format!(
            "{}: no registered model has exactly its {} tensors (names and shapes); give --model_name to see what differs",
            src.origin,
            src.tensors.len()
        ))),
        many => {
            // The longest name the path spells: `…/efficientnet-l2-475/…` is L2-475, not L2.
            let by_path = many.iter().filter(|m| path.contains(&m.to_lowercase())).max_by_key(|m| m.len());
            by_path.map(|m| m.to_string()).ok_or_else(|| {
                TrainError::InitFrom(format!("{}: fits {} alike; say which with --model_name", src.origin, many.join(" and ")))
            })
        }
    }
}
