//! The loader actor pool for sharded image datasets: one reader, `workers` decoders, one
//! collator, joined by bounded crossbeam channels.
//!
//! 1. The **reader** takes this rank's shards — the epoch's shard order is a permutation drawn
//!    from (seed, epoch), and rank `r` of `world` takes every `world`-th shard from position `r`,
//!    so ranks read disjoint parts — streams their samples through a seeded shuffle buffer, and
//!    numbers them `0, 1, 2, …` in the order they leave it. With [`ShardLoaderConfig::samples`]
//!    it delivers exactly that many, reading its shards again (a new pass: another permutation,
//!    so other shards) when they hold fewer: every rank then takes the same number of steps
//!    although shards differ in size. [`ShardLoaderConfig::start_sample`] skips the first
//!    samples without decoding them (resuming mid-epoch).
//! 2. **Decoders** decode and augment whichever numbered sample they receive, and write it
//!    straight into its place in its batch ([`crate::batch_slots`]: sample `n` is image `n mod b`
//!    of batch `n / b`). Every random draw comes from (seed, epoch, rank, sample number), never
//!    from the worker, so the result does not depend on which decoder took a sample or how many
//!    there are.
//! 3. The **collator** hears the samples' outcomes in number order and hands out each batch once
//!    all of its samples have reported: the same (seed, epoch, rank, world) gives the same
//!    batches whatever the worker count. Batch `k` is made of samples `k·b .. (k+1)·b` exactly,
//!    so a batch's position in the epoch says which samples it holds (what resuming needs).
//!
//! Back-pressure: the reader needs a credit for every sample it sends and the collator returns one
//! per sample it has placed (or skipped), so at most `in_flight` samples exist between reader and
//! collator — a slow decoder cannot make the reorder buffer grow without bound.
//!
//! Damage: a record the shard reader skips, an undecodable JPEG and a label outside
//! `0..num_classes` are skipped, counted and reported (shard, offset, reason) through the
//! callback; a missing shard is an error before anything starts; framing damage that ends a
//! shard is reported and the reader moves to the next shard. A training batch keeps its size: a
//! sample that fails takes a copy of the next good sample of its batch; a batch with none good
//! ends the loader, reported (and the run with it — with a per-replica batch of 1, one bad JPEG
//! does that); evaluation simply leaves failed samples out (that batch is smaller).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use ringsam_rng::Rng;

use crate::autoaugment::Augment;
use crate::batch_slots::BatchSlots;
use crate::imagenet::{JpegDecoder, JpegPipeline, Workspace};
use crate::normalize::Normalization;
use crate::shards::{Sample, read_shard};
use crate::{Batch, DataError};

const STREAM_SHARDS: u64 = 0x5348_5244;
const STREAM_SHUFFLE: u64 = 0x5348_4646;
const STREAM_AUGMENT: u64 = 0x4155_4749;
const STREAM_MIXUP: u64 = 0x4d49_5855;

/// How a [`ShardLoader`] runs.
#[derive(Clone, Debug)]
pub struct ShardLoaderConfig {
    /// Every shard of the split.
    pub shards: Vec<PathBuf>,
    /// Images per batch on this rank.
    pub batch_size: usize,
    /// Output side in pixels.
    pub image_size: usize,
    /// Training (random crop and flip, shuffled) or evaluation (centre crop, file order).
    pub train: bool,
    /// Labels must lie in `0..num_classes`.
    pub num_classes: usize,
    /// Per-channel normalisation (0–255 inputs).
    pub normalization: Normalization,
    /// Run seed.
    pub seed: u64,
    /// Decoder threads.
    pub workers: usize,
    /// Samples shuffled together by the reader (training).
    pub shuffle_buffer: usize,
    /// Samples between reader and collator at most.
    pub in_flight: usize,
    /// This rank, and the number of ranks.
    pub rank: usize,
    /// Ranks.
    pub world: usize,
    /// Samples to deliver (training: `steps · batch`, reading the shards again as needed);
    /// `None`: one pass over this rank's shards.
    pub samples: Option<u64>,
    /// Samples skipped, undecoded, before the first batch (a multiple of `batch_size`).
    pub start_sample: u64,
    /// The JPEG decoder ([`JpegDecoder`]).
    pub decoder: JpegDecoder,
    /// Per-image u8 augmentation of training images (ImageNet `autoaugment`: RandAugment).
    pub augment: Augment,
    /// Mixup's Beta(α, α) parameter for training batches (the reference's
    /// `imagenet_mixup_alpha`; 0: off).
    pub mixup_alpha: f64,
}

/// Counters the loader exports.
#[derive(Debug, Default)]
pub struct LoaderStats {
    /// Samples skipped (bad record, bad JPEG, bad label).
    pub skipped: AtomicUsize,
    /// Samples delivered.
    pub delivered: AtomicUsize,
}

/// A decoded sample's number and its label (its image is already in its batch), or why not.
type Decoded = (u64, Result<u32, String>);

/// The batches decoders are filling, by batch index: made by whichever decoder gets a sample
/// of a batch first, taken by the collator once every sample of it has reported.
type Filling = Arc<Mutex<HashMap<u64, Arc<BatchSlots>>>>;

/// Batches of one epoch from shards (see the module docs); an iterator.
pub struct ShardLoader {
    batches: Receiver<Batch>,
    /// Counters, shared with the actors.
    pub stats: Arc<LoaderStats>,
    threads: Vec<JoinHandle<()>>,
}

/// The shards rank `rank` reads in pass `pass` over its share of `epoch`.
pub fn shards_for(cfg: &ShardLoaderConfig, epoch: u64, pass: u64) -> Vec<PathBuf> {
    let mut order: Vec<usize> = (0..cfg.shards.len()).collect();
    if cfg.train {
        let mut rng = Rng::stream(cfg.seed, epoch.wrapping_mul(1 << 20).wrapping_add(pass), STREAM_SHARDS);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    order.into_iter().skip(cfg.rank).step_by(cfg.world.max(1)).map(|i| cfg.shards[i].clone()).collect()
}

impl ShardLoader {
    /// Starts the actors for `epoch`; `report` receives one line per skipped sample or damaged
    /// shard (from the actors' threads).
    pub fn new(cfg: &ShardLoaderConfig, epoch: u64, report: Arc<dyn Fn(String) + Send + Sync>) -> Result<ShardLoader, DataError> {
        Self::with_stats(cfg, epoch, report, Arc::new(LoaderStats::default()))
    }

    /// [`ShardLoader::new`] counting into `stats` (shared by the loaders of a run).
    pub fn with_stats(
        cfg: &ShardLoaderConfig,
        epoch: u64,
        report: Arc<dyn Fn(String) + Send + Sync>,
        stats: Arc<LoaderStats>,
    ) -> Result<ShardLoader, DataError> {
        if cfg.batch_size == 0 || cfg.workers == 0 || cfg.world == 0 || cfg.rank >= cfg.world || cfg.image_size == 0 {
            return Err(DataError::Config(format!(
                "loader: batch {}, workers {}, image size {} must be positive and rank {} below world {}",
                cfg.batch_size, cfg.workers, cfg.image_size, cfg.rank, cfg.world
            )));
        }
        if !cfg.start_sample.is_multiple_of(cfg.batch_size as u64) {
            return Err(DataError::Config(format!(
                "loader: start sample {} is not at a batch boundary (batch {})",
                cfg.start_sample, cfg.batch_size
            )));
        }
        if cfg.shards.len() < cfg.world {
            return Err(DataError::Config(format!(
                "{} shards cannot feed {} ranks (each rank reads whole shards)",
                cfg.shards.len(),
                cfg.world
            )));
        }
        if let Some(missing) = cfg.shards.iter().find(|p| !p.is_file()) {
            return Err(DataError::Missing { dir: missing.clone(), msg: "shard not found".into() });
        }
        let in_flight = cfg.in_flight.max(cfg.batch_size).max(cfg.workers);
        let (credit_tx, credit_rx) = bounded::<()>(in_flight);
        for _ in 0..in_flight {
            credit_tx.send(()).expect("capacity is in_flight");
        }
        let (sample_tx, sample_rx) = bounded::<(u64, Sample)>(2 * cfg.workers);
        let (decoded_tx, decoded_rx) = bounded::<Decoded>(2 * cfg.workers);
        let (batch_tx, batch_rx) = bounded::<Batch>(2);
        let filling: Filling = Default::default();
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name).spawn(f).map_err(|e| DataError::Config(format!("cannot start a loader thread: {e}")))
        };

        let (c, r, st) = (cfg.clone(), report.clone(), stats.clone());
        threads.push(spawn("ringsam-reader".into(), Box::new(move || read(&c, epoch, &credit_rx, &sample_tx, &st, &*r)))?);
        for w in 0..cfg.workers {
            let (c, rx, tx, f) = (cfg.clone(), sample_rx.clone(), decoded_tx.clone(), filling.clone());
            threads.push(spawn(format!("ringsam-decoder-{w}"), Box::new(move || decode(&c, epoch, &rx, &tx, &f)))?);
        }
        drop((sample_rx, decoded_tx));
        let (c, s) = (cfg.clone(), stats.clone());
        threads.push(spawn(
            "ringsam-collator".into(),
            Box::new(move || collate(&c, epoch, &decoded_rx, &credit_tx, &filling, &batch_tx, &s, &*report)),
        )?);
        Ok(ShardLoader { batches: batch_rx, stats, threads })
    }
}

/// Actor 1: shards → numbered samples, through the shuffle buffer.
fn read(
    cfg: &ShardLoaderConfig,
    epoch: u64,
    credits: &Receiver<()>,
    out: &Sender<(u64, Sample)>,
    stats: &LoaderStats,
    report: &dyn Fn(String),
) {
    let mut rng = Rng::stream(cfg.seed, epoch.wrapping_mul(1 << 16).wrapping_add(cfg.rank as u64), STREAM_SHUFFLE);
    let cap = if cfg.train { cfg.shuffle_buffer.max(1) } else { 1 };
    let limit = cfg.samples.unwrap_or(u64::MAX);
    let mut buffer: Vec<Sample> = Vec::with_capacity(cap);
    let mut next = 0u64;
    // Takes one sample from the buffer (a random one when training) and sends it, or drops it
    // undecoded while skipping to `start_sample`; false once done or the consumer is gone.
    let mut emit = |buffer: &mut Vec<Sample>, rng: &mut Rng| -> bool {
        if next >= limit {
            return false;
        }
        let i = if cfg.train { rng.below(buffer.len() as u64) as usize } else { 0 };
        let s = if cfg.train { buffer.swap_remove(i) } else { buffer.remove(i) };
        if next >= cfg.start_sample && (credits.recv().is_err() || out.send((next, s)).is_err()) {
            return false;
        }
        next += 1;
        next < limit
    };
    for pass in 0u64.. {
        let mut found = 0u64;
        for shard in shards_for(cfg, epoch, pass) {
            let mut alive = true;
            let result = read_shard(&shard, |_, s| {
                found += 1;
                buffer.push(s);
                if buffer.len() >= cap {
                    alive = emit(&mut buffer, &mut rng);
                }
                alive // stop reading the shard once done or the consumer is gone
            });
            match result {
                Ok(rep) => {
                    stats.skipped.fetch_add(rep.skipped.len(), Ordering::Relaxed);
                    for (at, why) in rep.skipped {
                        report(format!("{}: offset {at}: skipped: {why}", shard.display()));
                    }
                }
                Err(e) => report(format!("shard abandoned: {e}")),
            }
            if !alive {
                return;
            }
        }
        // One pass unless a sample count asks for more; a pass that found nothing cannot help.
        if cfg.samples.is_none() || found == 0 {
            break;
        }
    }
    while !buffer.is_empty() {
        if !emit(&mut buffer, &mut rng) {
            return;
        }
    }
}

/// Actor 2 (×workers): numbered sample → its normalised channel planes, written straight into
/// its place in its batch (sample `n` is slot `n mod b` of batch `n / b`), and its label or why
/// not to the collator.
fn decode(cfg: &ShardLoaderConfig, epoch: u64, rx: &Receiver<(u64, Sample)>, tx: &Sender<Decoded>, filling: &Filling) {
    let mut ws = Workspace::default();
    let (b, plane) = (cfg.batch_size as u64, cfg.image_size * cfg.image_size);
    let pipeline =
        JpegPipeline { decoder: cfg.decoder, size: cfg.image_size, augment: cfg.augment, normalization: cfg.normalization.clone() };
    for (n, s) in rx.iter() {
        // A decoder library that panics on a crafted JPEG must cost one sample, not the loader:
        // without this the collator would wait for sample `n` forever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if s.label < 0 || s.label as usize >= cfg.num_classes {
                return Err(format!("{}: label {} outside 0..{}", s.key, s.label, cfg.num_classes));
            }
            // Keyed by (seed, epoch, rank, sample number): the same whatever the worker.
            let mut rng = keyed_rng(cfg, epoch, n, STREAM_AUGMENT);
            let batch = filling
                .lock()
                .expect("never poisoned")
                .entry(n / b)
                .or_insert_with(|| Arc::new(BatchSlots::new(cfg.batch_size, plane)))
                .clone();
            let planes = batch.claim((n % b) as usize).ok_or_else(|| format!("{}: sample {n}'s slot was taken", s.key))?;
            // Normalised into channel planes here, in parallel, not in the one collator thread.
            pipeline
                .process_into(&s.image, cfg.train.then_some(&mut rng), &mut ws, planes.map(crate::imagenet::PlaneOut::uninit))
                .map_err(|e| format!("{}: {e}", s.key))?;
            // `batch` (this thread's handle on it) is dropped here, before the collator hears.
            Ok(s.label as u32)
        }))
        .unwrap_or_else(|_| {
            // The workspace may be mid-update after a panic: start clean.
            ws = Workspace::default();
            Err(format!("{}: the JPEG decoder panicked on this image", s.key))
        });
        if tx.send((n, result)).is_err() {
            return;
        }
    }
}

/// The random stream of item `n` (a sample or a batch) of this rank's `epoch`: (epoch, rank)
/// hashed into a key first, so no packing of the three numbers into one can collide.
fn keyed_rng(cfg: &ShardLoaderConfig, epoch: u64, n: u64, stream: u64) -> Rng {
    let key = Rng::stream(cfg.seed ^ 0x4b45_5953, epoch, cfg.rank as u64).next_u64();
    Rng::stream(key, n, stream)
}

/// Actor 3: hears samples in number order, finishes each batch once all its samples have
/// reported (repairing or dropping failures), hands batches out.
#[allow(clippy::too_many_arguments)]
fn collate(
    cfg: &ShardLoaderConfig,
    epoch: u64,
    rx: &Receiver<Decoded>,
    credits: &Sender<()>,
    filling: &Filling,
    out: &Sender<Batch>,
    stats: &LoaderStats,
    report: &dyn Fn(String),
) {
    let (side, b) = (cfg.image_size, cfg.batch_size as u64);
    let mut pending: BTreeMap<u64, Result<u32, String>> = BTreeMap::new();
    let mut want = cfg.start_sample;
    // The current batch's samples so far: label, or None if it failed.
    let mut labels: Vec<Option<u32>> = Vec::with_capacity(cfg.batch_size);
    let flush = |labels: &mut Vec<Option<u32>>, index: u64| -> bool {
        let n = labels.len();
        // Every decoder that wrote into this batch dropped its handle before reporting.
        let slots = filling.lock().expect("never poisoned").remove(&index);
        let good: Vec<bool> = labels.iter().map(Option::is_some).collect();
        let finished = slots.map(|s| Arc::try_unwrap(s).unwrap_or_else(|_| unreachable!("a decoder still holds batch {index}")));
        // SAFETY: a sample is good only when `process_into` returned Ok for its slot, and
        // then it has written every value of the slot's planes (its contract).
        let Some((images, kept)) = finished.and_then(|s| unsafe { s.finish(n, &good, cfg.train) }) else {
            labels.clear();
            if !cfg.train {
                return true; // an evaluation batch with nothing good: nothing to evaluate
            }
            report(format!("batch {index}: none of its {n} samples could be used; the loader stops"));
            return false;
        };
        let labels_kept: Vec<u32> = kept.iter().map(|&j| labels[j].expect("kept slots are good or repaired from good ones")).collect();
        labels.clear();
        let n = labels_kept.len();
        stats.delivered.fetch_add(n, Ordering::Relaxed);
        let mut batch = Batch { images, labels: labels_kept, n, c: 3, h: side, w: side, index: index as usize, mix: None };
        if cfg.train && cfg.mixup_alpha > 0.0 {
            // One λ per batch, drawn from (seed, epoch, rank, batch), kept ≥ ½ as the reference.
            let l = keyed_rng(cfg, epoch, index, STREAM_MIXUP).beta(cfg.mixup_alpha, cfg.mixup_alpha);
            batch.mixup(l.max(1.0 - l) as f32);
        }
        out.send(batch).is_ok()
    };
    for (n, item) in rx.iter() {
        pending.insert(n, item);
        while let Some(item) = pending.remove(&want) {
            want += 1;
            let _ = credits.try_send(()); // the reader may be gone at the end
            labels.push(
                item.map_err(|why| {
                    stats.skipped.fetch_add(1, Ordering::Relaxed);
                    report(format!("skipped sample {}: {why}", want - 1));
                })
                .ok(),
            );
            if labels.len() as u64 == b && !flush(&mut labels, (want - 1) / b) {
                return;
            }
        }
    }
    // The epoch's last, partial batch: kept for evaluation, dropped for training (as drop_last).
    if !labels.is_empty() && !cfg.train {
        flush(&mut labels, want.saturating_sub(1) / b);
    }
    // A dropped partial batch's buffer goes with the map.
}

impl ShardLoader {
    /// Batches ready and not yet taken.
    pub fn queued(&self) -> usize {
        self.batches.len()
    }
}

impl Iterator for ShardLoader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.batches.recv().ok()
    }
}

impl Drop for ShardLoader {
    fn drop(&mut self) {
        // Closing the batch channel stops the collator, whose exit closes the decoders' output and
        // the credits, which stop the decoders and the reader in turn.
        let (_, dead) = bounded(1);
        drop(std::mem::replace(&mut self.batches, dead));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
