//! What the training loop reads: a dataset held in memory (digits, CIFAR, SVHN, Fashion-MNIST,
//! synthetic) or a directory of shards (`imagenet`), behind one interface.
//!
//! Why two kinds: the small datasets fit in memory; ImageNet does not, and is read through the
//! loader actor pool ([`ringsam_data::shard_loader`]). Both share every global batch out to the
//! replicas the same way (a replica takes its micro-batches of it), in an order that depends on
//! (seed, epoch, global sample index) only, so the world size never changes which samples make a
//! micro-batch. The loop sees the same thing from both: an epoch of `(C, N, H, W)` batches of
//! this replica's share, the same number of them on every replica, and batches for evaluation.
//!
//! Epochs over shards: `steps = samples / global batch` (the reference's
//! `num_train_examples // batch_size`), samples counted by the split's index
//! ([`ringsam_data::shards::index`], built on first open). Resuming at batch `k` reads nothing
//! before it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ringsam_data::autoaugment::Augment;
use ringsam_data::imagenet::JpegDecoder;
use ringsam_data::loader::{Loader, LoaderConfig};
use ringsam_data::normalize::Normalization;
use ringsam_data::registry::{SyntheticSpec, load};
use ringsam_data::shard_loader::{LoaderStats, ShardLoader, ShardLoaderConfig};
use ringsam_data::shards::index::{SplitIndex, open_or_build};
use ringsam_data::shards::layout::{ShardLayout, open_layout};
use ringsam_data::share::BatchShare;
use ringsam_data::{Batch, Dataset, Split};

use crate::TrainError;
use crate::config::{BatchAugmentation, ImageAugmentation, Preprocessing, TrainConfig};

/// How a run scales pixels of `channels` channels: the dataset's mean and standard deviation, or
/// to [-1, 1] for AdvProp checkpoints (`--preprocessing`).
pub fn normalization(cfg: &TrainConfig, dataset: &str, channels: usize) -> Normalization {
    let standard = Normalization::for_dataset(dataset).for_channels(channels);
    match cfg.preprocessing() {
        Preprocessing::Advprop => Normalization { mean: vec![0.5; standard.mean.len()], std: vec![0.5; standard.std.len()] },
        _ => standard,
    }
}

/// Shards whose samples are shuffled together ([`ringsam_data::epoch_order`]): 16 ImageNet
/// shards are ~20 000 samples, more than the reference's 16-batch shuffle buffer, while each
/// decoder reads from at most 16 files at a time.
const WINDOW_SHARDS: usize = 16;

/// The training and evaluation data of a run.
pub enum TrainData {
    /// Both splits in memory.
    Memory {
        /// Training split.
        train: Arc<Dataset>,
        /// Evaluation split.
        test: Arc<Dataset>,
        /// How pixels are scaled (`--preprocessing`).
        normalization: Normalization,
        /// The side every image is resized to last, if any ([`memory_resize`]).
        resize_to: Option<usize>,
    },
    /// Shards on disk (see [`ShardData`]).
    Shards(Box<ShardData>),
}

/// A directory of shards and how to read it.
pub struct ShardData {
    /// Dataset name (for messages).
    pub name: String,
    normalization: Normalization,
    layout: ShardLayout,
    train: Arc<SplitIndex>,
    validation: Arc<SplitIndex>,
    image_size: usize,
    workers: usize,
    decoder: JpegDecoder,
    augment: Augment,
    mixup_alpha: f64,
    seed: u64,
    report: Arc<dyn Fn(String) + Send + Sync>,
    /// Counters of every loader of the run together (the skipped count is exported as a metric).
    pub stats: Arc<LoaderStats>,
}

/// One epoch's batches of this replica, from either kind of data.
pub enum EpochBatches {
    /// Nothing left of the epoch (a run resumed at its last batch).
    Done,
    /// From memory.
    Memory(Loader),
    /// From shards; `left` batches still owed.
    Shards {
        /// The actor pool.
        loader: ShardLoader,
        /// Batches not yet delivered.
        left: usize,
    },
}

impl Iterator for EpochBatches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        match self {
            EpochBatches::Done => None,
            EpochBatches::Memory(l) => l.next(),
            EpochBatches::Shards { loader, left } => {
                let b = if *left > 0 { loader.next() } else { None };
                *left -= b.is_some() as usize;
                b
            }
        }
    }
}

impl EpochBatches {
    /// Batches of the epoch not yet delivered (non-zero after the end: the loader failed).
    pub fn remaining(&self) -> usize {
        match self {
            EpochBatches::Done => 0,
            EpochBatches::Memory(l) => l.remaining(),
            EpochBatches::Shards { left, .. } => *left,
        }
    }

    /// Batches ready and not yet taken.
    pub fn queued(&self) -> usize {
        match self {
            EpochBatches::Done => 0,
            EpochBatches::Memory(l) => l.queued(),
            EpochBatches::Shards { loader, .. } => loader.queued(),
        }
    }
}

/// Loads the train and test splits of an in-memory dataset.
pub fn load_splits(cfg: &TrainConfig) -> Result<(Arc<Dataset>, Arc<Dataset>), TrainError> {
    let synth = synthetic_spec(cfg);
    let dir = cfg.data_dir.as_deref();
    let name = cfg.dataset.as_str();
    let train = load(name, Split::Train, dir, cfg.use_test_set, &synth)?;
    let test = load(name, Split::Test, dir, cfg.use_test_set, &synth)?;
    Ok((Arc::new(train), Arc::new(test)))
}

/// The side in-memory images are resized to, if any: `--image_size` when given, else an
/// EfficientNet's resolution — as the reference finetunes EfficientNets on 32-px CIFAR images
/// (its `_resize`, bicubic, after normalisation and cutout). Synthetic images are made at the
/// size instead.
pub fn memory_resize(cfg: &TrainConfig, height: usize, width: usize) -> Option<usize> {
    let side = match cfg.image_size {
        0 if cfg.model_name.starts_with("efficientnet") => ringsam_models::input_size(&cfg.model_name),
        0 => return None,
        s => s,
    };
    (cfg.dataset != crate::config::DatasetName::Synthetic && (side, side) != (height, width)).then_some(side)
}

/// The synthetic dataset's shape for `cfg` (`--image_size`, or the model's input size).
fn synthetic_spec(cfg: &TrainConfig) -> SyntheticSpec {
    let size = if cfg.image_size == 0 { ringsam_models::input_size(&cfg.model_name) } else { cfg.image_size };
    SyntheticSpec { size, ..SyntheticSpec::default() }
}

/// Decoder threads for `--loader_workers 0`: one per four logical cores, at least one. The
/// decoders are threads beside the engine's; a quarter of the cores keeps a CPU run's loader ahead
/// of a ResNet-50 SAM step (two forward-backward passes per image cost far more than a decode and
/// crop), and on a GPU host the flag should be set to the cores the host can spare.
pub fn auto_loader_workers() -> usize {
    (ringsam_tensor::threads::default_threads() / 4).max(1)
}

impl TrainData {
    /// Opens what `cfg` names; `log` hears about counting shards and skipped samples.
    pub fn open(cfg: &TrainConfig, log: &mut dyn FnMut(&str)) -> Result<TrainData, TrainError> {
        if !cfg.dataset.is_sharded() {
            let (mut train, test) = load_splits(cfg)?;
            let normalization = normalization(cfg, &train.name, train.channels);
            let resize_to = memory_resize(cfg, train.height, train.width);
            if cfg.label_noise > 0.0 {
                let t = Arc::make_mut(&mut train);
                let wrong = ringsam_data::label_noise::corrupt(&mut t.labels, t.num_classes, cfg.label_noise, cfg.run_seed);
                log(&format!(
                    "{}: label noise {}: {wrong} of {} training labels wrong (seed {}); test labels clean",
                    train.name,
                    cfg.label_noise,
                    train.len(),
                    cfg.run_seed
                ));
            }
            if let Some(side) = resize_to {
                log(&format!(
                    "{}: {}×{} images resized bicubically to {side}×{side} (the model's input)",
                    train.name, train.height, train.width
                ));
            }
            return Ok(TrainData::Memory { train, test, normalization, resize_to });
        }
        let dir = cfg.data_dir.as_deref().ok_or_else(|| {
            let what = match cfg.dataset {
                crate::config::DatasetName::Imagefolder => "a folder holding train/ and val/ (or test/), one sub-folder of JPEGs per class",
                _ => "a directory of shards; see `ringsam data pack`",
            };
            TrainError::Config(format!("dataset {} needs --data_dir ({what})", cfg.dataset))
        })?;
        let shards = match cfg.dataset {
            crate::config::DatasetName::Imagefolder => ringsam_data::imagefolder::prepare(dir, log)?,
            _ => dir.to_path_buf(),
        };
        let layout = open_layout(&shards)?;
        for (name, split) in [("train", &layout.train), ("validation", &layout.validation)] {
            if split.shards.is_empty() {
                return Err(TrainError::Config(format!("{}: no {name} shards (file names with the word `{name}`)", layout.dir.display())));
            }
        }
        let workers = if cfg.loader_workers == 0 { auto_loader_workers() } else { cfg.loader_workers };
        let (train, validation) = (index_split(&layout, "train", workers, log)?, index_split(&layout, "validation", workers, log)?);
        let train_len = train.len();
        let image_size = if cfg.image_size == 0 { ringsam_models::input_size(&cfg.model_name) } else { cfg.image_size };
        log(&format!(
            "{}: {} train shards ({train_len} samples), {} validation shards, {} classes, {image_size} px, {workers} decoder threads",
            layout.dir.display(),
            layout.train.shards.len(),
            layout.validation.shards.len(),
            layout.classes.len()
        ));
        Ok(TrainData::Shards(Box::new(ShardData {
            name: cfg.dataset.to_string(),
            normalization: normalization(cfg, cfg.dataset.as_str(), 3),
            layout,
            train,
            validation,
            image_size,
            workers,
            decoder: JpegDecoder::parse(cfg.jpeg_decoder.as_str()).map_err(TrainError::Config)?,
            augment: if cfg.image_level_augmentations == ImageAugmentation::Autoaugment {
                Augment::RandAugment { layers: cfg.randaug_num_layers, magnitude: cfg.randaug_magnitude }
            } else {
                Augment::None
            },
            mixup_alpha: cfg.imagenet_mixup_alpha,
            seed: cfg.run_seed,
            report: Arc::new(|line| eprintln!("ringsam: loader: {line}")),
            stats: Arc::new(LoaderStats::default()),
        })))
    }

    /// Dataset name.
    pub fn name(&self) -> &str {
        match self {
            TrainData::Memory { train, .. } => &train.name,
            TrainData::Shards(s) => &s.name,
        }
    }

    /// Classes.
    pub fn num_classes(&self) -> usize {
        match self {
            TrainData::Memory { train, .. } => train.num_classes,
            TrainData::Shards(s) => s.layout.classes.len(),
        }
    }

    /// Image channels.
    pub fn channels(&self) -> usize {
        match self {
            TrainData::Memory { train, .. } => train.channels,
            TrainData::Shards(_) => 3,
        }
    }

    /// Values in one training image as batches hold it (channels × height × width).
    pub fn image_values(&self) -> usize {
        match self {
            TrainData::Memory { train, resize_to: Some(side), .. } => train.channels * side * side,
            TrainData::Memory { train, .. } => train.channels * train.height * train.width,
            TrainData::Shards(s) => 3 * s.image_size * s.image_size,
        }
    }

    /// Bytes the dataset holds in memory (shards are streamed: 0).
    pub fn bytes_in_memory(&self) -> u64 {
        match self {
            TrainData::Memory { train, test, .. } => (train.pixels.len() + test.pixels.len()) as u64,
            TrainData::Shards(_) => 0,
        }
    }

    /// Bytes `cfg`'s dataset will hold in memory when that is known before it is opened: the
    /// synthetic set, which is generated at `--image_size` (files are bounded by their formats).
    pub fn planned_bytes(cfg: &TrainConfig) -> u64 {
        if cfg.dataset != crate::config::DatasetName::Synthetic {
            return 0;
        }
        let spec = synthetic_spec(cfg);
        let images = (spec.train_len + spec.test_len) as u64;
        images.saturating_mul((spec.channels * spec.size * spec.size) as u64)
    }

    /// Training examples.
    pub fn train_len(&self) -> u64 {
        match self {
            TrainData::Memory { train, .. } => train.len() as u64,
            TrainData::Shards(s) => s.train.len(),
        }
    }

    /// How this replica's training batches are made: the global batch, the augmentations `cfg`
    /// asks for on this dataset, the seed and this replica's place.
    pub fn train_loader(&self, cfg: &TrainConfig, share: BatchShare) -> LoaderConfig {
        use ImageAugmentation as A;
        let name = self.name();
        let (normalization, resize_to) = match self {
            TrainData::Memory { normalization, resize_to, .. } => (normalization.clone(), *resize_to),
            TrainData::Shards(s) => (s.normalization.clone(), None),
        };
        LoaderConfig {
            batch_size: cfg.batch_size,
            shuffle: true,
            drop_last: true,
            autoaugment: match cfg.image_level_augmentations {
                A::Autoaugment | A::AaOnly => ringsam_data::autoaugment::policy_for(name),
                A::None | A::Basic => None,
            },
            flip_crop: matches!(cfg.image_level_augmentations, A::Basic | A::Autoaugment),
            flip: name != "digits",
            cutout: (cfg.batch_level_augmentations == BatchAugmentation::Cutout).then_some(cfg.cutout_length),
            normalization,
            seed: cfg.run_seed,
            prefetch: cfg.prefetch,
            rank: share.rank,
            world: share.world,
            units: share.units,
            resize_to,
        }
    }

    /// Training steps in one epoch of global batches of `batch`.
    pub fn steps_per_epoch(&self, loader: &LoaderConfig) -> u64 {
        match self {
            TrainData::Memory { train, .. } => loader.batches_per_epoch(train.len()) as u64,
            TrainData::Shards(s) => s.train.len() / loader.batch_size as u64,
        }
    }

    /// Samples skipped so far (bad records, JPEGs, labels).
    pub fn skipped(&self) -> usize {
        match self {
            TrainData::Memory { .. } => 0,
            TrainData::Shards(s) => s.stats.skipped.load(Ordering::Relaxed),
        }
    }

    /// This replica's batches of `epoch` from batch `start_batch` on; `loader` says the global
    /// batch, augmentation, seed, rank and world.
    pub fn epoch(&self, loader: &LoaderConfig, epoch: u64, start_batch: usize) -> Result<EpochBatches, TrainError> {
        match self {
            TrainData::Memory { train, .. } => Ok(EpochBatches::Memory(Loader::new(train.clone(), loader, epoch, start_batch)?)),
            TrainData::Shards(s) => {
                let steps = self.steps_per_epoch(loader);
                if start_batch as u64 >= steps {
                    // Resuming at the epoch's end: nothing of it is left.
                    return Ok(EpochBatches::Done);
                }
                let cfg = ShardLoaderConfig {
                    start_batch: start_batch as u64,
                    ..s.loader_config(&s.train, true, loader.batch_size, loader.share()?)
                };
                let pool = ShardLoader::with_stats(&cfg, epoch, s.report.clone(), s.stats.clone())?;
                Ok(EpochBatches::Shards { loader: pool, left: (steps - start_batch as u64) as usize })
            }
        }
    }

    /// This replica's share of the evaluation split (`Split::Test`) or of the training split in
    /// evaluation mode, in batches of about `batch` across all replicas.
    pub fn eval_batches(
        &self,
        split: Split,
        batch: usize,
        rank: usize,
        world: usize,
    ) -> Result<Box<dyn Iterator<Item = Batch>>, TrainError> {
        match self {
            TrainData::Memory { train, test, normalization, resize_to } => {
                let data = if split == Split::Train { train } else { test };
                let cfg = LoaderConfig { resize_to: *resize_to, ..LoaderConfig::evaluation(batch, normalization.clone(), rank, world) };
                Ok(Box::new(Loader::new(data.clone(), &cfg, 0, 0)?))
            }
            TrainData::Shards(s) => {
                let index = if split == Split::Train { &s.train } else { &s.validation };
                let share = BatchShare::new(world, rank, world).map_err(TrainError::Config)?;
                // At least one image per replica in every full batch.
                let cfg = s.loader_config(index, false, batch.max(world), share);
                Ok(Box::new(ShardLoader::with_stats(&cfg, 0, s.report.clone(), s.stats.clone())?))
            }
        }
    }
}

impl ShardData {
    fn loader_config(&self, split: &Arc<SplitIndex>, train: bool, global_batch: usize, share: BatchShare) -> ShardLoaderConfig {
        let local = share.examples(global_batch).len();
        ShardLoaderConfig {
            split: split.clone(),
            global_batch,
            share,
            image_size: self.image_size,
            train,
            num_classes: self.layout.classes.len(),
            normalization: self.normalization.clone(),
            seed: self.seed,
            workers: self.workers,
            window_shards: WINDOW_SHARDS,
            in_flight: 4 * local.max(self.workers),
            start_batch: 0,
            decoder: self.decoder,
            augment: if train { self.augment } else { Augment::None },
            mixup_alpha: if train { self.mixup_alpha } else { 0.0 },
        }
    }
}

/// The index of one split of `layout` (built on first open; see
/// [`ringsam_data::shards::index`]), checked against the lengths `dataset_info.json` gives.
fn index_split(layout: &ShardLayout, name: &str, threads: usize, log: &mut dyn FnMut(&str)) -> Result<Arc<SplitIndex>, TrainError> {
    let split = if name == "train" { &layout.train } else { &layout.validation };
    let t = std::time::Instant::now();
    let index = open_or_build(&layout.dir, name, &split.shards, threads, &|line| eprintln!("ringsam: loader: {line}"))?;
    let n = index.len();
    if t.elapsed().as_secs() >= 1 {
        log(&format!("{name}: {n} samples indexed in {:.1} s", t.elapsed().as_secs_f64()));
    }
    if let Some(listed) = split.known_len()
        && listed != n
    {
        log(&format!("{name}: dataset_info.json lists {listed} samples, {n} read whole: the epoch uses those {n}"));
    }
    Ok(Arc::new(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advprop_scales_pixels_to_minus_one_one() {
        let cfg = TrainConfig::from_args(["--dataset", "cifar10", "--preprocessing", "advprop"], None).unwrap();
        let n = normalization(&cfg, "cifar10", 3);
        let mut out = [0.0; 3];
        n.plane(0, &[0u8, 0, 0, 255, 255, 255, 128, 128, 128], 3, &mut out);
        assert_eq!(out[..2], [-1.0, 1.0]);
        assert!((out[2] - 0.003_921_6).abs() < 1e-6);
        let standard = TrainConfig::from_args(["--dataset", "cifar10"], None).unwrap();
        assert_eq!(normalization(&standard, "cifar10", 3), Normalization::for_dataset("cifar10"));
        let arrays = TrainConfig::from_args(["--dataset", "arrays"], None).unwrap();
        assert_eq!(normalization(&arrays, "arrays", 1).mean, vec![(0.485 + 0.456 + 0.406) / 3.0]);
    }
}
