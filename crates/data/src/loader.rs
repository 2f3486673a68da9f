//! The batch loader: a producer thread that assembles augmented, normalised batches ahead of the
//! training step.
//!
//! # Channel
//! One bounded `std::sync::mpsc::sync_channel` of capacity [`LoaderConfig::prefetch`] carries
//! finished [`Batch`]es from the producer to the step. Bounded because an unbounded queue would
//! turn a slow step into memory growth; the producer blocks when it is `prefetch` batches ahead.
//! Dropping the [`Loader`] closes the channel; the producer sees its next send fail and exits,
//! and the drop joins it.
//!
//! # Determinism
//! The epoch's order is a permutation drawn from `(seed, epoch)` only, and each batch's
//! augmentation from `(seed, epoch, batch index)`, so the same seed gives the same batches
//! whatever the timing, and a resumed run can start at any batch of an epoch. With several
//! replicas, replica `rank` of `world` takes its contiguous share of every global batch: whole
//! micro-batches ([`crate::share`]), so the batches do not depend on the world size.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use ringsam_rng::Rng;

use crate::augment::{cutout_batch, flip_pad_crop};
use crate::autoaugment::policies::{SubPolicy, autoaugment};
use crate::imagenet::resize::resize_plane_bicubic;
use crate::normalize::Normalization;
use crate::share::BatchShare;
use crate::{Batch, DataError, Dataset};

/// Random-stream ids, so permutation and augmentation draws never coincide.
const STREAM_PERMUTATION: u64 = 0x5045_524d;
const STREAM_AUGMENT: u64 = 0x4155_474d;
const STREAM_AUGMENT_EXAMPLE: u64 = 0x4155_4758; // per-example flip and crop
const STREAM_AUTOAUGMENT: u64 = 0x4155_5441; // per-example AutoAugment

/// How batches are made.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Global batch size (all replicas together).
    pub batch_size: usize,
    /// Shuffle every epoch (training) or keep file order (evaluation).
    pub shuffle: bool,
    /// Drop the last incomplete batch (the reference does for training).
    pub drop_last: bool,
    /// AutoAugment policy applied to each u8 image first (`autoaugment`, `aa-only`).
    pub autoaugment: Option<&'static [SubPolicy]>,
    /// Random flip + 4-px reflect pad + crop (`basic`).
    pub flip_crop: bool,
    /// Whether the flip is part of `basic` (not for digits).
    pub flip: bool,
    /// Cutout length, if batch-level cutout is on.
    pub cutout: Option<usize>,
    /// Normalisation constants.
    pub normalization: Normalization,
    /// Run seed.
    pub seed: u64,
    /// Batches produced ahead of the consumer (channel capacity).
    pub prefetch: usize,
    /// This replica's rank.
    pub rank: usize,
    /// Number of replicas.
    pub world: usize,
    /// Micro-batches per global batch, shared among the replicas ([`crate::share`]).
    pub units: usize,
    /// Resize each normalised image bicubically to this side, last (as the reference finetunes
    /// EfficientNets on 32-px CIFAR images at the model's resolution).
    pub resize_to: Option<usize>,
}

impl LoaderConfig {
    /// Evaluation: file order, no augmentation, the last short batch kept; replica `rank` of
    /// `world` takes its share of every batch.
    pub fn evaluation(batch_size: usize, normalization: Normalization, rank: usize, world: usize) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            shuffle: false,
            drop_last: false,
            autoaugment: None,
            flip_crop: false,
            flip: false,
            cutout: None,
            normalization,
            seed: 0,
            prefetch: 2,
            rank,
            world,
            units: world,
            resize_to: None,
        }
    }

    /// This replica's place in each global batch.
    pub fn share(&self) -> Result<BatchShare, DataError> {
        BatchShare::new(self.units, self.rank, self.world).map_err(DataError::Config)
    }

    /// Batches in one epoch of `len` examples.
    pub fn batches_per_epoch(&self, len: usize) -> usize {
        if self.drop_last { len / self.batch_size } else { len.div_ceil(self.batch_size) }
    }
}

/// One epoch's batches, produced on a background thread.
pub struct Loader {
    rx: Option<Receiver<Batch>>,
    handle: Option<JoinHandle<()>>,
    remaining: usize,
    queued: Arc<AtomicUsize>, // batches ready and not yet taken (the metrics' queue depth)
}

impl Loader {
    /// Starts producing batches `start_batch..` of `epoch`.
    pub fn new(data: Arc<Dataset>, cfg: &LoaderConfig, epoch: u64, start_batch: usize) -> Result<Loader, DataError> {
        cfg.share()?;
        if cfg.batch_size == 0 || (cfg.drop_last && !cfg.batch_size.is_multiple_of(cfg.units)) {
            return Err(DataError::Config(format!(
                "batch size {} must be positive and divisible by its {} micro-batches",
                cfg.batch_size, cfg.units
            )));
        }
        if cfg.normalization.mean.len() != data.channels {
            return Err(DataError::Config(format!(
                "normalisation has {} channels, images have {}",
                cfg.normalization.mean.len(),
                data.channels
            )));
        }
        let total = cfg.batches_per_epoch(data.len());
        let remaining = total.saturating_sub(start_batch);
        let (tx, rx) = sync_channel(cfg.prefetch.max(1));
        let cfg = cfg.clone();
        let queued = Arc::new(AtomicUsize::new(0));
        let counter = queued.clone();
        let handle = std::thread::Builder::new()
            .name("ringsam-loader".into())
            .spawn(move || produce(&data, &cfg, epoch, start_batch, total, tx, &counter))
            .map_err(|e| DataError::Config(format!("cannot start the loader thread: {e}")))?;
        Ok(Loader { rx: Some(rx), handle: Some(handle), remaining, queued })
    }

    /// Batches prepared and waiting (0: training waits for data; `prefetch`: data waits for training).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Batches this loader will still yield.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let b = self.rx.as_ref()?.recv().ok();
        if b.is_some() {
            self.remaining -= 1;
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        b
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.rx.take(); // closes the channel: the producer's next send fails and it returns
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The epoch's order: a permutation from `(seed, epoch)` (or file order).
pub fn epoch_order(len: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mut rng = Rng::stream(seed, epoch, STREAM_PERMUTATION);
        for i in (1..len).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    order
}

fn produce(data: &Dataset, cfg: &LoaderConfig, epoch: u64, start: usize, total: usize, tx: SyncSender<Batch>, queued: &AtomicUsize) {
    let order = epoch_order(data.len(), cfg.seed, epoch, cfg.shuffle);
    let Ok(share) = cfg.share() else { return }; // checked by `Loader::new`
    let (h, w, c) = (data.height, data.width, data.channels);
    let mut scratch = vec![0u8; data.image_len()];
    let mut augmented = Vec::with_capacity(data.image_len());
    for b in start..total {
        let lo = b * cfg.batch_size;
        let hi = ((b + 1) * cfg.batch_size).min(data.len());
        // This replica's contiguous share of the global batch.
        let mine = share.examples(hi - lo);
        let (mlo, mhi) = (lo + mine.start, lo + mine.end);
        let n = mhi - mlo;
        // Batch-level draws (the cutout patch, one per batch as the reference) are shared by
        // every replica's share of the batch.
        let mut rng = Rng::stream(cfg.seed, epoch.wrapping_mul(1 << 32).wrapping_add(b as u64), STREAM_AUGMENT);
        let mut images = vec![0.0f32; c * n * h * w];
        let mut labels = Vec::with_capacity(n);
        for (j, &idx) in order[mlo..mhi].iter().enumerate() {
            let mut img = data.image(idx);
            if let Some(policy) = cfg.autoaugment {
                // Before the flip and crop, on u8 pixels, as the reference orders them; keyed
                // by the example's place in the epoch like the flip and crop below.
                let key = epoch.wrapping_mul(1 << 32).wrapping_add((mlo + j) as u64);
                augmented.clear();
                augmented.extend_from_slice(img);
                autoaugment(policy, &mut augmented, h, w, &mut Rng::stream(cfg.seed, key, STREAM_AUTOAUGMENT));
                img = &augmented;
            }
            let src: &[u8] = if cfg.flip_crop {
                // Keyed by the example's place in the epoch, not by the replica's position in its
                // share: any number of replicas augments every example exactly as one would.
                let mut rng = Rng::stream(cfg.seed, epoch.wrapping_mul(1 << 32).wrapping_add((mlo + j) as u64), STREAM_AUGMENT_EXAMPLE);
                flip_pad_crop(&mut scratch, img, h, w, c, 4, cfg.flip, &mut rng);
                &scratch
            } else {
                img
            };
            for ch in 0..c {
                cfg.normalization.plane(ch, src, c, &mut images[(ch * n + j) * h * w..][..h * w]);
            }
            labels.push(data.labels[idx]);
        }
        if let Some(len) = cfg.cutout {
            cutout_batch(&mut images, n, c, h, w, len, &mut rng);
        }
        let (images, oh, ow) = match cfg.resize_to {
            Some(side) if (side, side) != (h, w) => (resize_planes(&images, c * n, h, w, side), side, side),
            _ => (images, h, w),
        };
        queued.fetch_add(1, Ordering::Relaxed); // before the send, so the taker never sees it negative
        let ids = order[mlo..mhi].iter().map(|&i| i as u64).collect();
        if tx.send(Batch { images, labels, n, c, h: oh, w: ow, index: b, ids, mix: None }).is_err() {
            return; // the consumer is gone
        }
    }
}

/// Each of `planes` `h × w` planes resized to `side × side` (bicubic, as the reference's `_resize`).
pub fn resize_planes(images: &[f32], planes: usize, h: usize, w: usize, side: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; planes * side * side];
    for (src, dst) in images.chunks_exact(h * w).zip(out.chunks_exact_mut(side * side)) {
        resize_plane_bicubic(src, h, w, side, side, dst);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Split, synthetic::synthetic};

    fn cfg(batch: usize) -> LoaderConfig {
        LoaderConfig {
            batch_size: batch,
            shuffle: true,
            drop_last: true,
            autoaugment: None,
            flip_crop: true,
            flip: true,
            cutout: Some(4),
            normalization: Normalization::for_dataset("synthetic"),
            seed: 3,
            prefetch: 2,
            rank: 0,
            world: 1,
            units: 1,
            resize_to: None,
        }
    }

    #[test]
    fn same_seed_same_batches_and_resume_mid_epoch() {
        let d = Arc::new(synthetic(Split::Train, 50, 8, 3, 4, 1));
        let a: Vec<Batch> = Loader::new(d.clone(), &cfg(8), 2, 0).unwrap().collect();
        let b: Vec<Batch> = Loader::new(d.clone(), &cfg(8), 2, 0).unwrap().collect();
        assert_eq!(a.len(), 6);
        assert_eq!(a, b);
        let resumed: Vec<Batch> = Loader::new(d.clone(), &cfg(8), 2, 4).unwrap().collect();
        assert_eq!(resumed, a[4..]);
        let other_epoch: Vec<Batch> = Loader::new(d, &cfg(8), 3, 0).unwrap().collect();
        assert_ne!(other_epoch[0].labels, a[0].labels);
    }

    #[test]
    fn replicas_split_each_global_batch() {
        let d = Arc::new(synthetic(Split::Train, 40, 4, 1, 3, 1));
        let mut c = cfg(8);
        c.normalization = Normalization { mean: vec![0.5], std: vec![0.25] };
        c.cutout = None;
        c.flip_crop = false;
        let whole: Vec<Batch> = Loader::new(d.clone(), &c, 0, 0).unwrap().collect();
        let parts: Vec<Vec<Batch>> = (0..2)
            .map(|r| Loader::new(d.clone(), &LoaderConfig { rank: r, world: 2, units: 2, ..c.clone() }, 0, 0).unwrap().collect())
            .collect();
        for (i, b) in whole.iter().enumerate() {
            let joined: Vec<u32> = parts[0][i].labels.iter().chain(&parts[1][i].labels).copied().collect();
            assert_eq!(joined, b.labels);
        }
    }

    #[test]
    fn any_world_up_to_the_units_makes_the_same_batches() {
        let d = Arc::new(synthetic(Split::Train, 48, 8, 3, 4, 1));
        let c = LoaderConfig { units: 4, cutout: None, ..cfg(8) };
        let whole: Vec<Batch> = Loader::new(d.clone(), &c, 1, 0).unwrap().collect();
        for world in [2, 3, 4] {
            let parts: Vec<Vec<Batch>> = (0..world)
                .map(|r| Loader::new(d.clone(), &LoaderConfig { rank: r, world, ..c.clone() }, 1, 0).unwrap().collect())
                .collect();
            let plane = 8 * 8;
            for (i, b) in whole.iter().enumerate() {
                let labels: Vec<u32> = parts.iter().flat_map(|p| p[i].labels.clone()).collect();
                assert_eq!(labels, b.labels, "world {world}, batch {i}");
                // Channel 0 of each share is its slice of the whole batch's channel 0.
                let mut at = 0;
                for p in &parts {
                    assert_eq!(&p[i].images[..p[i].n * plane], &b.images[at * plane..(at + p[i].n) * plane], "world {world}");
                    at += p[i].n;
                }
            }
        }
        assert!(Loader::new(d, &LoaderConfig { rank: 0, world: 5, ..c }, 1, 0).is_err(), "more replicas than micro-batches");
    }

    #[test]
    fn autoaugment_is_per_example_so_replicas_see_what_one_replica_would() {
        let d = Arc::new(synthetic(Split::Train, 48, 8, 3, 4, 1));
        let c = LoaderConfig { autoaugment: Some(crate::autoaugment::policies::CIFAR), cutout: None, ..cfg(8) };
        let whole: Vec<Batch> = Loader::new(d.clone(), &c, 1, 0).unwrap().collect();
        assert_eq!(whole, Loader::new(d.clone(), &c, 1, 0).unwrap().collect::<Vec<_>>(), "same seed, same batches");
        let plain: Vec<Batch> = Loader::new(d.clone(), &LoaderConfig { autoaugment: None, ..c.clone() }, 1, 0).unwrap().collect();
        assert_ne!(whole, plain, "the policy changes images");
        let parts: Vec<Vec<Batch>> = (0..2)
            .map(|r| Loader::new(d.clone(), &LoaderConfig { rank: r, world: 2, units: 2, ..c.clone() }, 1, 0).unwrap().collect())
            .collect();
        let plane = 8 * 8;
        for (i, b) in whole.iter().enumerate() {
            // Channel 0 of the first half of the whole batch is rank 0's channel 0.
            assert_eq!(&b.images[..4 * plane], &parts[0][i].images[..4 * plane], "batch {i}");
        }
    }

    #[test]
    fn a_resized_batch_is_the_normalised_batch_resized_plane_by_plane() {
        let d = Arc::new(synthetic(Split::Train, 16, 8, 3, 4, 0));
        let c = LoaderConfig { cutout: None, ..cfg(8) };
        let plain: Vec<Batch> = Loader::new(d.clone(), &c, 0, 0).unwrap().collect();
        let resized: Vec<Batch> = Loader::new(d, &LoaderConfig { resize_to: Some(20), ..c }, 0, 0).unwrap().collect();
        for (p, r) in plain.iter().zip(&resized) {
            assert_eq!((r.h, r.w, r.images.len()), (20, 20, 3 * 8 * 400));
            let mut want = vec![0.0; 400];
            resize_plane_bicubic(&p.images[64..128], 8, 8, 20, 20, &mut want);
            assert_eq!(&r.images[400..800], want.as_slice());
            assert_eq!(p.labels, r.labels);
        }
    }

    #[test]
    fn dropping_a_loader_early_stops_its_thread() {
        let d = Arc::new(synthetic(Split::Train, 200, 8, 3, 4, 1));
        let mut l = Loader::new(d, &cfg(4), 0, 0).unwrap();
        l.next().unwrap();
        drop(l); // must not hang
    }
}
