//! `ringsam bench loader`: images per second through the ImageNet loader pool — decode, random
//! crop, bicubic resize, flip and normalise every sample of some shards, as training would.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ringsam_data::DataError;
use ringsam_data::autoaugment::Augment;
use ringsam_data::imagenet::JpegDecoder;
use ringsam_data::normalize::Normalization;
use ringsam_data::shard_loader::{ShardLoader, ShardLoaderConfig};
use serde::Serialize;

/// What to time.
#[derive(Clone, Debug)]
pub struct LoaderBench {
    /// Shard files, or directories of them.
    pub data: Vec<PathBuf>,
    /// Decoder threads.
    pub workers: usize,
    /// Output side in pixels.
    pub image_size: usize,
    /// Images per batch.
    pub batch: usize,
    /// Classes the labels must fall below.
    pub num_classes: usize,
    /// The JPEG decoder.
    pub decoder: JpegDecoder,
    /// Per-image augmentation after the crop.
    pub augment: Augment,
}

/// What it measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoaderReport {
    /// Images delivered.
    pub images: usize,
    /// Wall time.
    pub seconds: f64,
    /// Images per second.
    pub images_per_s: f64,
    /// Images per second per decoder thread.
    pub images_per_s_per_worker: f64,
}

/// Reads every sample of the shards once; fails if any could not be decoded (a skipped sample's
/// slot holds a copy of another, so a rate would count work not done).
pub fn run(b: &LoaderBench, report: Arc<dyn Fn(String) + Send + Sync>) -> Result<LoaderReport, DataError> {
    let mut shards = Vec::new();
    for p in &b.data {
        if p.is_dir() {
            shards.extend(ringsam_data::shards::layout::shard_files(p)?);
        } else {
            shards.push(p.clone());
        }
    }
    if shards.is_empty() {
        return Err(DataError::Config(format!("no shards (*.tar, *.tfrecord*) in {:?}", b.data)));
    }
    // Where each sample starts, found before the clock starts (a run reads it from its file).
    let offsets = shards.iter().map(|s| ringsam_data::shards::index::index_shard(s).0).collect();
    let cfg = ShardLoaderConfig {
        split: Arc::new(ringsam_data::shards::index::SplitIndex { shards, offsets }),
        global_batch: b.batch,
        share: ringsam_data::share::BatchShare::alone(1),
        image_size: b.image_size,
        train: true,
        num_classes: b.num_classes,
        normalization: Normalization::for_dataset("imagenet"),
        seed: 0,
        workers: b.workers,
        window_shards: 16,
        in_flight: 4 * b.batch.max(b.workers),
        start_batch: 0,
        decoder: b.decoder,
        augment: b.augment,
        mixup_alpha: 0.0,
    };
    let t = Instant::now();
    let loader = ShardLoader::new(&cfg, 0, report)?;
    let stats = loader.stats.clone();
    let images: usize = loader.map(|batch| batch.n).sum();
    let skipped = stats.skipped.load(Ordering::Relaxed);
    if skipped > 0 {
        return Err(DataError::Config(format!(
            "{skipped} of {images} samples could not be decoded (reported above): no throughput to report"
        )));
    }
    let seconds = t.elapsed().as_secs_f64();
    let rate = images as f64 / seconds;
    Ok(LoaderReport { images, seconds, images_per_s: rate, images_per_s_per_worker: rate / b.workers.max(1) as f64 })
}
