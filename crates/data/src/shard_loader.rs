//! The loader actor pool for sharded image datasets: one planner, `workers` decoders, one
//! collator, joined by bounded crossbeam channels.
//!
//! 1. The **planner** walks this replica's share of each global batch: global sample `g` belongs
//!    to global batch `g / B`, the batch's positions are cut among replicas as the in-memory
//!    loader cuts them ([`BatchShare`]: whole micro-batches), and which stored sample `g` is comes
//!    from [`EpochOrder`] — a function of (seed, epoch, g) only. So any world size reads the
//!    same micro-batches, and after a resize no sample of the epoch is repeated or skipped. It
//!    numbers this replica's samples `0, 1, 2, …` (sample `n` is image `n mod b` of local batch
//!    `n / b`) and sends each with its shard and byte offset ([`SplitIndex`]).
//!    [`ShardLoaderConfig::start_batch`] starts mid-epoch without reading what comes before.
//! 2. **Decoders** read the record at its offset, decode and augment it, and write it straight
//!    into its place in its batch ([`crate::batch_slots`]). Every random draw comes from (seed,
//!    epoch, g), never from the worker or the replica, so the result depends neither on which
//!    decoder took a sample nor on how many replicas share the batch.
//! 3. The **collator** hears the samples' outcomes in number order and hands out each batch once
//!    all of its samples have reported. Batch `k` is this replica's part of global batch `k`, so
//!    a batch's position in the epoch says which samples it holds (what resuming needs).
//!
//! Back-pressure: the planner needs a credit for every sample it sends and the collator returns
//! one per sample it has placed (or skipped), so at most `in_flight` samples exist between
//! planner and collator — a slow decoder cannot make the reorder buffer grow without bound.
//!
//! Damage: the index lists only samples that read whole, so framing damage was met (and
//! reported) when it was built. An undecodable JPEG, a label outside `0..num_classes` and a record
//! that no longer reads at its offset are skipped, counted and reported through the callback; a
//! missing shard is an error before anything starts. A training batch keeps its size: a sample
//! that fails takes a copy of the next good sample of its local batch; a batch with none good
//! ends the loader, reported (and the run with it); evaluation leaves failed samples out (that
//! batch is smaller).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};
use ringsam_rng::Rng;

use crate::autoaugment::Augment;
use crate::batch_slots::BatchSlots;
use crate::epoch_order::EpochOrder;
use crate::imagenet::{JpegDecoder, JpegPipeline, Workspace};
use crate::normalize::Normalization;
use crate::shards::index::{SplitIndex, read_sample_at};
use crate::share::BatchShare;
use crate::{Batch, DataError};

const STREAM_AUGMENT: u64 = 0x4155_4749;
const STREAM_MIXUP: u64 = 0x4d49_5855;
/// Shard files a decoder keeps open (a window's reads touch a few shards at a time).
const OPEN_SHARDS: usize = 8;

/// How a [`ShardLoader`] runs.
#[derive(Clone, Debug)]
pub struct ShardLoaderConfig {
    /// The split: its shards and where each sample starts.
    pub split: Arc<SplitIndex>,
    /// Images per global batch, all replicas together.
    pub global_batch: usize,
    /// This replica's share of each global batch (training: whole micro-batches; evaluation:
    /// `units == world`).
    pub share: BatchShare,
    /// Output side in pixels.
    pub image_size: usize,
    /// Training (random crop and flip, shuffled, last partial batch dropped) or evaluation
    /// (centre crop, stored order, every sample).
    pub train: bool,
    /// Labels must lie in `0..num_classes`.
    pub num_classes: usize,
    /// Per-channel normalisation (0–255 inputs).
    pub normalization: Normalization,
    /// Run seed.
    pub seed: u64,
    /// Decoder threads.
    pub workers: usize,
    /// Shards shuffled together ([`EpochOrder`]; training).
    pub window_shards: usize,
    /// Samples between planner and collator at most.
    pub in_flight: usize,
    /// Global batches skipped, unread, before the first (resuming mid-epoch).
    pub start_batch: u64,
    /// The JPEG decoder ([`JpegDecoder`]).
    pub decoder: JpegDecoder,
    /// Per-image u8 augmentation of training images (ImageNet `autoaugment`: RandAugment).
    pub augment: Augment,
    /// Mixup's Beta(α, α) parameter for training batches (the reference's
    /// `imagenet_mixup_alpha`; 0: off).
    pub mixup_alpha: f64,
}

impl ShardLoaderConfig {
    /// Global batches in an epoch: whole ones for training (as drop_last), all for evaluation.
    pub fn batches(&self) -> u64 {
        let (n, b) = (self.split.len(), self.global_batch.max(1) as u64);
        if self.train { n / b } else { n.div_ceil(b) }
    }

    /// This replica's images in a full batch.
    pub fn local_batch(&self) -> usize {
        self.share.examples(self.global_batch).len()
    }
}

/// Counters the loader exports.
#[derive(Debug, Default)]
pub struct LoaderStats {
    /// Samples skipped (bad record, bad JPEG, bad label).
    pub skipped: AtomicUsize,
    /// Samples delivered.
    pub delivered: AtomicUsize,
}

/// A decoded sample's number, its id (its place in the split, shard by shard) and its label
/// (its image is already in its batch), or why not.
type Decoded = (u64, u64, Result<u32, String>);

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

/// One sample to read: its number on this replica, its global index in the epoch, and where it
/// is stored (shard, byte offset, and its id: its place in the split, shard by shard).
struct Job {
    n: u64,
    g: u64,
    shard: usize,
    offset: u64,
    id: u64,
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
        let b = cfg.local_batch();
        if cfg.global_batch == 0 || cfg.workers == 0 || cfg.image_size == 0 {
            return Err(DataError::Config(format!(
                "loader: global batch {}, workers {}, image size {} must be positive",
                cfg.global_batch, cfg.workers, cfg.image_size
            )));
        }
        // Every replica needs a place in every full batch: the numbering divides by it.
        if b == 0 || (cfg.train && !cfg.global_batch.is_multiple_of(cfg.share.units)) {
            return Err(DataError::Config(format!(
                "loader: a global batch of {} is not {} whole micro-batches with one or more for this replica",
                cfg.global_batch, cfg.share.units
            )));
        }
        if cfg.split.offsets.len() != cfg.split.shards.len() {
            return Err(DataError::Config("loader: the index does not list every shard".into()));
        }
        if let Some(missing) = cfg.split.shards.iter().find(|p| !p.is_file()) {
            return Err(DataError::Missing { dir: missing.clone(), msg: "shard not found".into() });
        }
        let in_flight = cfg.in_flight.max(b).max(cfg.workers);
        let (credit_tx, credit_rx) = bounded::<()>(in_flight);
        for _ in 0..in_flight {
            credit_tx.send(()).expect("capacity is in_flight");
        }
        let (sample_tx, sample_rx) = bounded::<Job>(2 * cfg.workers);
        let (decoded_tx, decoded_rx) = bounded::<Decoded>(2 * cfg.workers);
        let (batch_tx, batch_rx) = bounded::<Batch>(2);
        let filling: Filling = Default::default();
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name).spawn(f).map_err(|e| DataError::Config(format!("cannot start a loader thread: {e}")))
        };

        let c = cfg.clone();
        threads.push(spawn("ringsam-planner".into(), Box::new(move || plan(&c, epoch, &credit_rx, &sample_tx)))?);
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

/// Actor 1: this replica's share of each global batch, from `start_batch` on, as numbered
/// jobs (see the module docs).
fn plan(cfg: &ShardLoaderConfig, epoch: u64, credits: &Receiver<()>, out: &Sender<Job>) {
    let counts = cfg.split.counts();
    let firsts: Vec<u64> = counts.iter().scan(0, |sum, &c| Some(std::mem::replace(sum, *sum + c))).collect();
    let mut order = if cfg.train { EpochOrder::shuffled(&counts, cfg.seed, epoch, cfg.window_shards) } else { EpochOrder::stored(&counts) };
    let (big, b) = (cfg.global_batch as u64, cfg.local_batch() as u64);
    for k in cfg.start_batch..cfg.batches() {
        let in_batch = big.min(order.len() - k * big) as usize;
        for (j, p) in cfg.share.examples(in_batch).enumerate() {
            let g = k * big + p as u64;
            let (shard, i) = order.locate(g).expect("g lies inside the epoch");
            let job = Job { n: k * b + j as u64, g, shard, offset: cfg.split.offsets[shard][i as usize], id: firsts[shard] + i };
            if credits.recv().is_err() || out.send(job).is_err() {
                return; // the consumer is gone
            }
        }
    }
}

/// The shard files one decoder has open, the most recently opened last.
#[derive(Default)]
struct OpenShards(Vec<(usize, File)>);

impl OpenShards {
    fn get(&mut self, split: &SplitIndex, shard: usize) -> Result<&File, DataError> {
        if let Some(i) = self.0.iter().position(|(s, _)| *s == shard) {
            return Ok(&self.0[i].1);
        }
        let path = &split.shards[shard];
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        if self.0.len() >= OPEN_SHARDS {
            self.0.remove(0);
        }
        self.0.push((shard, file));
        Ok(&self.0.last().expect("just pushed").1)
    }
}

/// Actor 2 (×workers): job → the sample read at its offset, as normalised channel planes
/// written straight into its place in its batch (sample `n` is slot `n mod b` of batch `n / b`),
/// and its label or why not to the collator.
fn decode(cfg: &ShardLoaderConfig, epoch: u64, rx: &Receiver<Job>, tx: &Sender<Decoded>, filling: &Filling) {
    let mut ws = Workspace::default();
    let mut files = OpenShards::default();
    let (b, plane) = (cfg.local_batch() as u64, cfg.image_size * cfg.image_size);
    let pipeline =
        JpegPipeline { decoder: cfg.decoder, size: cfg.image_size, augment: cfg.augment, normalization: cfg.normalization.clone() };
    for job in rx.iter() {
        let n = job.n;
        // A decoder library that panics on a crafted JPEG must cost one sample, not the loader:
        // without this the collator would wait for sample `n` forever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let path = &cfg.split.shards[job.shard];
            let s = files.get(&cfg.split, job.shard).and_then(|f| read_sample_at(path, f, job.offset)).map_err(|e| e.to_string())?;
            if s.label < 0 || s.label as usize >= cfg.num_classes {
                return Err(format!("{}: label {} outside 0..{}", s.key, s.label, cfg.num_classes));
            }
            // Keyed by (seed, epoch, global index): the same whatever the worker or the world.
            let mut rng = keyed_rng(cfg, epoch, job.g, STREAM_AUGMENT);
            let batch = filling
                .lock()
                .expect("never poisoned")
                .entry(n / b)
                .or_insert_with(|| Arc::new(BatchSlots::new(b as usize, plane)))
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
            Err(format!("sample {n}: the JPEG decoder panicked on this image"))
        });
        if tx.send((n, job.id, result)).is_err() {
            return;
        }
    }
}

/// The random stream of item `n` (a global sample or a global batch) of `epoch`: the epoch
/// hashed into a key first, so no packing of the numbers into one can collide.
fn keyed_rng(cfg: &ShardLoaderConfig, epoch: u64, n: u64, stream: u64) -> Rng {
    let key = Rng::stream(cfg.seed ^ 0x4b45_5953, epoch, 0).next_u64();
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
    let (side, b) = (cfg.image_size, cfg.local_batch() as u64);
    let mut pending: BTreeMap<u64, (u64, Result<u32, String>)> = BTreeMap::new();
    let mut want = cfg.start_batch * b;
    // The current batch's samples so far: id, and label or None if it failed.
    let mut labels: Vec<(u64, Option<u32>)> = Vec::with_capacity(b as usize);
    let flush = |labels: &mut Vec<(u64, Option<u32>)>, index: u64| -> bool {
        let n = labels.len();
        // Every decoder that wrote into this batch dropped its handle before reporting.
        let slots = filling.lock().expect("never poisoned").remove(&index);
        let good: Vec<bool> = labels.iter().map(|l| l.1.is_some()).collect();
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
        let labels_kept: Vec<u32> = kept.iter().map(|&j| labels[j].1.expect("kept slots are good or repaired from good ones")).collect();
        // A repaired slot holds a copy of slot j, and says so.
        let ids = kept.iter().map(|&j| labels[j].0).collect();
        labels.clear();
        let n = labels_kept.len();
        stats.delivered.fetch_add(n, Ordering::Relaxed);
        let mut batch = Batch { images, labels: labels_kept, n, c: 3, h: side, w: side, index: index as usize, ids, mix: None };
        if cfg.train && cfg.mixup_alpha > 0.0 {
            // One λ per global batch, drawn from (seed, epoch, batch), kept ≥ ½ as the reference;
            // partners within each micro-batch, so the world size changes no pair.
            let l = keyed_rng(cfg, epoch, index, STREAM_MIXUP).beta(cfg.mixup_alpha, cfg.mixup_alpha);
            batch.mixup(l.max(1.0 - l) as f32, cfg.global_batch / cfg.share.units);
        }
        out.send(batch).is_ok()
    };
    for (n, id, item) in rx.iter() {
        pending.insert(n, (id, item));
        while let Some((id, item)) = pending.remove(&want) {
            want += 1;
            let _ = credits.try_send(()); // the reader may be gone at the end
            let label = item.map_err(|why| {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
                report(format!("skipped sample {}: {why}", want - 1));
            });
            labels.push((id, label.ok()));
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
