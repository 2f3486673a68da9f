//! Starting a model from weights made elsewhere: a ringsam checkpoint, a `model.safetensors`
//! (what `ringsam convert` writes), or a Flax checkpoint as the SAM reference publishes its
//! EfficientNets (`--init_from`, and the reference's `--from_pretrained_checkpoint
//! --efficientnet_checkpoint_path`).
//!
//! Tensors are matched by name — ringsam's models name theirs by the reference's Flax tree, so
//! a Flax checkpoint's paths are the names — and each is checked for shape. Like PyTorch's
//! `load_state_dict(strict=True)`, anything missing, unexpected or of the wrong shape is an
//! error that names them (the first six of each kind, and how many), with one exception the reference makes too
//! (`load_model.py`, `_replace_dense_layer`): the classifier — the model's last dense layer,
//! `Head_N/dense` on EfficientNets — keeps its fresh initialisation when the checkpoint's has
//! another number of classes (a 1000-class ImageNet head finetuned on 10 classes). Batch-norm
//! statistics are loaded when the source has them (a parameters-only file leaves the model's
//! initial ones, and says so). Only weights move: the optimizer starts fresh, at step 0.

use std::collections::BTreeMap;
use std::path::Path;

use ringsam_nn::ParamLayout;
use safetensors::{Dtype, SafeTensors};

use crate::TrainError;
use crate::checkpoint::{newest_checkpoint, read_model_file};

/// The largest `.safetensors` file read (EfficientNet-L2 in f32 is about 2 GB).
const MAX_SAFETENSORS_BYTES: u64 = 16 << 30;

/// One tensor: shape and values.
#[derive(Clone, Debug, PartialEq)]
pub struct Named {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, C order.
    pub values: Vec<f32>,
}

/// Tensors read from a source, by name, with what was skipped.
#[derive(Debug, Default)]
pub struct SourceTensors {
    /// Where they came from (for messages).
    pub origin: String,
    /// What kind of source it was (`Flax checkpoint`, `safetensors`, `ringsam checkpoint`).
    pub kind: &'static str,
    /// Parameters and batch-norm statistics by name.
    pub tensors: BTreeMap<String, Named>,
    /// Entries that are not model tensors (EMA copies, step counters, optimizer state).
    pub skipped: Vec<String>,
    /// Tensors per stored element type (`float32`, `bfloat16`, …): all are read as f32.
    pub dtypes: BTreeMap<String, usize>,
}

/// Reads `path`: a ringsam checkpoint directory or run directory, a `.safetensors` file, or a
/// Flax checkpoint (file, directory of `checkpoint_<step>`, or `.tar.gz`).
pub fn read_source(path: &Path) -> Result<SourceTensors, TrainError> {
    let bad = |why: String| TrainError::InitFrom(format!("{}: {why}", path.display()));
    if !path.exists() {
        return Err(bad("no such file or directory".into()));
    }
    if path.is_dir() && path.join("MANIFEST.json").exists() {
        return from_safetensors(&read_model_file(path)?, path.display().to_string(), "ringsam checkpoint");
    }
    if path.is_dir() && path.join("checkpoints").is_dir() {
        let dir = newest_checkpoint(path).ok_or_else(|| bad("a run directory without a finished checkpoint".into()))?;
        return from_safetensors(&read_model_file(&dir)?, dir.display().to_string(), "ringsam checkpoint");
    }
    if path.is_file() && is_safetensors(path) {
        let len = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?.len();
        if len > MAX_SAFETENSORS_BYTES {
            return Err(bad(format!("{len} bytes is more than the {MAX_SAFETENSORS_BYTES}-byte limit")));
        }
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        return from_safetensors(&bytes, path.display().to_string(), "safetensors");
    }
    from_flax(path)
}

/// A safetensors file starts with an 8-byte little-endian header length, then `{`.
fn is_safetensors(path: &Path) -> bool {
    let mut head = [0u8; 9];
    std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok() && head[8] == b'{'
}

fn from_safetensors(bytes: &[u8], origin: String, kind: &'static str) -> Result<SourceTensors, TrainError> {
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| TrainError::InitFrom(format!("{origin}: not a readable safetensors file: {e}")))?;
    let mut out = SourceTensors { origin, kind, ..Default::default() };
    for (name, t) in st.tensors() {
        if name.starts_with("ema/") {
            out.skipped.push(name);
            continue;
        }
        let values: Vec<f32> = match t.dtype() {
            Dtype::F32 => t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => t.data().chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => t.data().chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => return Err(TrainError::InitFrom(format!("{}: tensor {name} is {other:?}, not a float type", out.origin))),
        };
        *out.dtypes.entry(format!("{:?}", t.dtype()).to_lowercase()).or_default() += 1;
        out.tensors.insert(name, Named { shape: t.shape().to_vec(), values });
    }
    Ok(out)
}

fn from_flax(path: &Path) -> Result<SourceTensors, TrainError> {
    // Reading errors name the path (or the archive's member) themselves.
    let flax = |e: ringsam_flax::FlaxError| TrainError::InitFrom(format!("Flax checkpoint {e}"));
    let file = ringsam_flax::read_checkpoint(path).map_err(flax)?;
    let in_file = |e: ringsam_flax::FlaxError| TrainError::InitFrom(format!("Flax checkpoint {}: {e}", file.origin));
    let root = ringsam_flax::msgpack::decode(&file.bytes, 0).map_err(in_file)?;
    let tree = ringsam_flax::tensors(&root).map_err(in_file)?;
    let mut out = SourceTensors { origin: file.origin.clone(), kind: "Flax checkpoint", skipped: tree.ignored, ..Default::default() };
    for (name, t) in tree.params.into_iter().chain(tree.state) {
        let values = t.to_f32().ok_or_else(|| {
            TrainError::InitFrom(format!("Flax checkpoint {}: {name} is {}, not a float type", file.origin, t.dtype.name()))
        })?;
        *out.dtypes.entry(t.dtype.name()).or_default() += 1;
        out.tensors.insert(name, Named { shape: t.shape, values });
    }
    Ok(out)
}

/// What loading did (one line each for the log).
#[derive(Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Tensors copied.
    pub loaded: usize,
    /// The classifier left at its initialisation: `(name, checkpoint shape, model shape)`.
    pub head_kept_fresh: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Whether batch-norm statistics came from the source (false: a parameters-only source).
    pub statistics_loaded: bool,
    /// Entries of the source skipped as not model tensors.
    pub skipped: Vec<String>,
}

impl LoadReport {
    /// The report as log lines.
    pub fn lines(&self, src: &SourceTensors) -> Vec<String> {
        let types: Vec<String> = src.dtypes.iter().map(|(t, n)| format!("{n} {t}")).collect();
        let mut out =
            vec![format!("initialised {} tensors from {} {} (stored as {})", self.loaded, src.kind, src.origin, types.join(", "))];
        for (name, from, to) in &self.head_kept_fresh {
            out.push(format!(
                "classifier {name}: checkpoint {from:?}, model {to:?}: kept at its fresh initialisation (another number of classes)"
            ));
        }
        if !self.statistics_loaded {
            out.push("the source has no batch-norm statistics: the model's initial ones are kept".into());
        }
        if !self.skipped.is_empty() {
            out.push(format!("skipped {} entries that are not model tensors ({})", self.skipped.len(), sample(&self.skipped)));
        }
        out
    }
}

fn sample(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(6).map(String::as_str).collect();
    if names.len() > shown.len() { format!("{}, … {} more", shown.join(", "), names.len() - shown.len()) } else { shown.join(", ") }
}

/// The classifier: the entries of the layout's last module (its final dense layer).
fn classifier(layout: &ParamLayout) -> Vec<String> {
    let Some(last) = layout.entries().last() else { return Vec::new() };
    let module = last.name.rsplit_once('/').map_or("", |(m, _)| m);
    layout.entries().iter().filter(|e| e.name.rsplit_once('/').map_or("", |(m, _)| m) == module).map(|e| e.name.clone()).collect()
}

/// Copies `src` into `params` and `state` (laid out by `layout` and `state_layout`); see the
/// module docs for the rules. Nothing is written unless everything matches.
pub fn load_into(
    src: &SourceTensors,
    layout: &ParamLayout,
    state_layout: &ParamLayout,
    params: &mut [f32],
    state: &mut [f32],
) -> Result<LoadReport, TrainError> {
    let head = classifier(layout);
    let has_state = state_layout.entries().iter().any(|e| src.tensors.contains_key(&e.name));
    let mut report = LoadReport {
        statistics_loaded: has_state || state_layout.entries().is_empty(),
        skipped: src.skipped.clone(),
        ..Default::default()
    };
    let (mut missing, mut wrong) = (Vec::new(), Vec::new());
    let mut plan = Vec::new();
    let layouts = [(layout, true), (state_layout, false)];
    for (lay, is_param) in layouts {
        for e in lay.entries() {
            match src.tensors.get(&e.name) {
                None if !is_param && !has_state => {}
                None => missing.push(e.name.clone()),
                Some(t) if t.shape == e.shape => plan.push((is_param, e.id.range(), &t.values)),
                Some(t) if head.contains(&e.name) => report.head_kept_fresh.push((e.name.clone(), t.shape.clone(), e.shape.clone())),
                Some(t) => wrong.push(format!("{} is {:?} in the checkpoint, {:?} in the model", e.name, t.shape, e.shape)),
            }
        }
    }
    let known = |n: &String| layout.find(n).is_some() || state_layout.find(n).is_some();
    let unexpected: Vec<String> = src.tensors.keys().filter(|n| !known(n)).cloned().collect();
    if !missing.is_empty() || !wrong.is_empty() || !unexpected.is_empty() {
        let mut why = Vec::new();
        if !missing.is_empty() {
            why.push(format!("{} missing: {}", missing.len(), sample(&missing)));
        }
        if !unexpected.is_empty() {
            why.push(format!("{} unexpected: {}", unexpected.len(), sample(&unexpected)));
        }
        if !wrong.is_empty() {
            why.push(format!("{} of another shape: {}", wrong.len(), sample(&wrong)));
        }
        return Err(TrainError::InitFrom(format!(
            "{} {} does not fit this model ({}); is it another model or size (--model_name)?",
            src.kind,
            src.origin,
            why.join("; ")
        )));
    }
    for (is_param, range, values) in plan {
        let dst = if is_param { &mut params[range] } else { &mut state[range] };
        dst.copy_from_slice(values);
        report.loaded += 1;
    }
    Ok(report)
}
