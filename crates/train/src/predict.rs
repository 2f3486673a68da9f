//! `ringsam predict`: a trained checkpoint's top classes for JPEG files, through the evaluation
//! preprocessing its run used — the centre crop and resize of the ImageNet pipeline for sharded
//! datasets (ImageNet, image folders); for in-memory datasets a resize of the whole image to the
//! dataset's size (and to the model's, when the run resized, as for EfficientNets on CIFAR) —
//! and the run's normalisation. Class names come from the dataset's label file where it has one.

use std::path::{Path, PathBuf};

use ringsam_data::autoaugment::Augment;
use ringsam_data::imagenet::resize::resize_bicubic;
use ringsam_data::imagenet::{JpegDecoder, JpegPipeline, Workspace, decode_jpeg};
use ringsam_data::loader::resize_planes;
use ringsam_models::{ModelConfig, build};
use ringsam_nn::Pass;
use ringsam_tensor::Tensor;

use crate::TrainError;
use crate::checkpoint::{load, read_training_state};
use crate::config::{DatasetName, TrainConfig};
use crate::convert::{source_channels, source_classes};
use crate::data_source::{memory_resize, normalization};
use crate::init_from::read_source;

/// The most JPEGs one call reads (a folder of a million files is a mistake, not a request).
const MAX_IMAGES: usize = 100_000;
/// The largest JPEG read.
const MAX_JPEG_BYTES: u64 = 64 << 20;

/// One image's best classes.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// The file.
    pub path: PathBuf,
    /// `(class, name if known, probability)`, most probable first.
    pub top: Vec<(usize, Option<String>, f32)>,
}

/// The top `k` classes of each JPEG in `inputs` (files, or folders of them) under the checkpoint
/// `dir`; `data_dir` replaces the run's (for the class names and the dataset's shape).
pub fn predict(dir: &Path, inputs: &[PathBuf], k: usize, data_dir: Option<PathBuf>) -> Result<(TrainConfig, Vec<Prediction>), TrainError> {
    let mut cfg = read_training_state(dir)?.config;
    if data_dir.is_some() {
        cfg.data_dir = data_dir;
    }
    let model_cfg = saved_model_config(dir, &cfg.model_name)?;
    let mut model = build(&cfg.model_name, &model_cfg)?;
    let ckpt = load(dir, model.layout(), model.state_layout())?;
    let (params, state) = ckpt.ema.unwrap_or((ckpt.params, ckpt.state));
    let (params, mut state) = (Tensor::from(params), Tensor::from(state));
    let names = class_names(&cfg);
    let shape = Preprocess::for_run(&cfg, model_cfg.in_channels)?;
    let mut out = Vec::new();
    for path in image_files(inputs)? {
        let x = shape.tensor(&path)?;
        let logits = model.forward(&params, &mut state, &x, &Pass::eval())?.as_slice().to_vec();
        out.push(Prediction { top: top_k(&logits, k, names.as_deref()), path });
    }
    Ok((cfg, out))
}

/// Classes and input channels as the checkpoint's tensors have them (the classifier's bias, the
/// first kernel), so a finetuned head of any size loads.
fn saved_model_config(dir: &Path, model_name: &str) -> Result<ModelConfig, TrainError> {
    let src = read_source(dir)?;
    let probe = build(model_name, &ModelConfig::default())?;
    let classes = source_classes(probe.as_ref(), &src).unwrap_or(10);
    Ok(ModelConfig { num_classes: classes, in_channels: source_channels(probe.as_ref(), &src).unwrap_or(3) })
}

/// Class names from the dataset's label file: the shards' `label.labels.txt` (ImageNet, image
/// folders) or CIFAR-10's fixed list.
fn class_names(cfg: &TrainConfig) -> Option<Vec<String>> {
    const CIFAR10: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
    let dir = cfg.data_dir.as_deref();
    match cfg.dataset {
        DatasetName::Cifar10 => Some(CIFAR10.iter().map(|s| s.to_string()).collect()),
        DatasetName::Imagenet => ringsam_data::shards::layout::open_layout(dir?).ok().map(|l| l.classes),
        DatasetName::Imagefolder => {
            ringsam_data::shards::layout::open_layout(&ringsam_data::imagefolder::pack_dir(dir?).ok()?).ok().map(|l| l.classes)
        }
        _ => None,
    }
}

/// `(class, name, probability)` of the `k` largest logits.
fn top_k(logits: &[f32], k: usize, names: Option<&[String]>) -> Vec<(usize, Option<String>, f32)> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.into_iter().take(k).map(|c| (c, names.and_then(|n| n.get(c).cloned()), (exp[c] / sum) as f32)).collect()
}

/// The files named, folders expanded to their `.jpg`/`.jpeg` files in name order.
fn image_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, TrainError> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?;
            let mut found: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| matches!(x.to_string_lossy().to_lowercase().as_str(), "jpg" | "jpeg")))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
        if files.len() > MAX_IMAGES {
            return Err(TrainError::Config(format!("more than {MAX_IMAGES} images: predict on fewer at a time")));
        }
    }
    if files.is_empty() {
        return Err(TrainError::Config("no images: give JPEG files or folders holding them".into()));
    }
    Ok(files)
}

/// How one JPEG becomes the model's input (see the module docs).
struct Preprocess {
    cfg: TrainConfig,
    channels: usize,
    /// Sharded runs: the side of the centre crop.
    side: Option<usize>,
    /// In-memory runs: the dataset's `(H, W)`.
    size: (usize, usize),
}

impl Preprocess {
    fn for_run(cfg: &TrainConfig, channels: usize) -> Result<Preprocess, TrainError> {
        let side = cfg
            .dataset
            .is_sharded()
            .then(|| if cfg.image_size == 0 { ringsam_models::input_size(&cfg.model_name) } else { cfg.image_size });
        let size = match cfg.dataset {
            _ if side.is_some() => (0, 0),
            DatasetName::Cifar10 | DatasetName::Cifar100 | DatasetName::Svhn => (32, 32),
            DatasetName::FashionMnist => (28, 28),
            DatasetName::Digits => (8, 8),
            _ => {
                let (_, test) = crate::data_source::load_splits(cfg)?;
                (test.height, test.width)
            }
        };
        Ok(Preprocess { cfg: cfg.clone(), channels, side, size })
    }

    fn tensor(&self, path: &Path) -> Result<Tensor, TrainError> {
        let bad = |why: String| TrainError::Config(format!("{}: {why}", path.display()));
        let len = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?.len();
        if len > MAX_JPEG_BYTES {
            return Err(bad(format!("{len} bytes is more than the {MAX_JPEG_BYTES}-byte limit for one JPEG")));
        }
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let c = self.channels;
        let norm = normalization(&self.cfg, self.cfg.dataset.as_str(), c);
        if let Some(side) = self.side {
            // The shard loader's evaluation path itself: the run's decoder, centre crop, resize.
            let decoder = JpegDecoder::parse(self.cfg.jpeg_decoder.as_str()).map_err(TrainError::Config)?;
            let pipeline = JpegPipeline { decoder, size: side, augment: Augment::None, normalization: norm };
            let mut planes = vec![0.0; 3 * side * side];
            let (r, gb) = planes.split_at_mut(side * side);
            let (g, b) = gb.split_at_mut(side * side);
            pipeline
                .process(&bytes, None, &mut Workspace::default(), [r, g, b])
                .map_err(|e| bad(format!("not a JPEG ringsam decodes: {e}")))?;
            return Tensor::from_vec(&[3, 1, side, side], planes).map_err(TrainError::from);
        }
        // In-memory datasets hold u8 pixels: the whole image resized to the dataset's size and
        // rounded as they are, then the run's normalisation and resize.
        let img = decode_jpeg(&bytes).map_err(|e| bad(format!("not a JPEG ringsam decodes: {e}")))?;
        let (h, w) = self.size;
        let whole = ringsam_data::imagenet::crop::Rect { x: 0, y: 0, w: img.width, h: img.height };
        let mut hwc = Vec::new();
        resize_bicubic(&img.pixels, img.width, 3, whole, w, h, &mut hwc);
        if c == 1 {
            hwc = hwc.chunks_exact(3).map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]).collect();
        }
        let pixels: Vec<u8> = hwc.iter().map(|v| v.round().clamp(0.0, 255.0) as u8).collect();
        let mut planes = vec![0.0; c * h * w];
        for (ch, plane) in planes.chunks_exact_mut(h * w).enumerate() {
            norm.plane(ch, &pixels, c, plane);
        }
        let (planes, h, w) = match memory_resize(&self.cfg, h, w) {
            Some(side) => (resize_planes(&planes, c, h, w, side), side, side),
            None => (planes, h, w),
        };
        Tensor::from_vec(&[c, 1, h, w], planes).map_err(TrainError::from)
    }
}
