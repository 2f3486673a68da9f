//! The order of one epoch of a sharded split: which stored sample is global sample `g`, as a
//! function of (seed, epoch, g) only.
//!
//! Why this shape: an elastic run changes its world size mid-epoch, and every replica must still
//! agree on which samples make global batch `g / B` — so no replica may own shards. The order is
//! made of two seeded draws that every replica computes alike:
//! 1. the shards are permuted from (seed, epoch) and cut into windows of `window_shards`
//!    consecutive shards of that permutation;
//! 2. the samples of one window are permuted from (seed, epoch, window).
//!
//! Global samples run through window 0's permutation, then window 1's, and so on: each sample of
//! the split appears exactly once per epoch. The window keeps a replica's reads within a few
//! files at a time (what TFDS's shard interleave and the reference's 16-batch shuffle buffer
//! give), while shuffling across whole shards. Evaluation keeps the stored order.

use ringsam_rng::Rng;

const STREAM_SHARDS: u64 = 0x5348_5244;
const STREAM_WINDOW: u64 = 0x5749_4e44;

/// One window: its shards, in permuted order, and where its samples begin.
struct Window {
    shards: Vec<usize>,
    /// `starts[i]`: samples in the window before its shard `i`; last entry: the window's size.
    starts: Vec<u64>,
    /// Global index of the window's first sample.
    first: u64,
}

impl Window {
    fn len(&self) -> u64 {
        *self.starts.last().expect("starts has one entry more than shards")
    }
}

/// The epoch's order (see the module docs).
pub struct EpochOrder {
    windows: Vec<Window>,
    total: u64,
    /// The window key, for shuffled orders.
    key: Option<u64>,
    /// The last window's sample permutation (global samples are visited window by window).
    cached: Option<(usize, Vec<u64>)>,
}

impl EpochOrder {
    /// Shuffled training order of shards with `counts[i]` samples each.
    pub fn shuffled(counts: &[u64], seed: u64, epoch: u64, window_shards: usize) -> EpochOrder {
        let mut order: Vec<usize> = (0..counts.len()).collect();
        let mut rng = Rng::stream(seed, epoch, STREAM_SHARDS);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let key = Rng::stream(seed, epoch, STREAM_WINDOW).next_u64();
        Self::build(counts, &order, window_shards.max(1), Some(key))
    }

    /// The stored order: shard by shard, sample by sample.
    pub fn stored(counts: &[u64]) -> EpochOrder {
        let order: Vec<usize> = (0..counts.len()).collect();
        Self::build(counts, &order, counts.len().max(1), None)
    }

    fn build(counts: &[u64], order: &[usize], window_shards: usize, key: Option<u64>) -> EpochOrder {
        let mut windows = Vec::new();
        let mut first = 0;
        for shards in order.chunks(window_shards) {
            let mut starts = vec![0u64];
            for &s in shards {
                starts.push(starts.last().expect("non-empty") + counts[s]);
            }
            let w = Window { shards: shards.to_vec(), starts, first };
            first += w.len();
            windows.push(w);
        }
        EpochOrder { windows, total: first, key, cached: None }
    }

    /// Samples in the epoch.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// True when the epoch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Global sample `g` as (shard, sample within the shard); `None` past the end.
    pub fn locate(&mut self, g: u64) -> Option<(usize, u64)> {
        if g >= self.total {
            return None;
        }
        // The window holding g: the first whose end lies past g (empty windows never match).
        let w = self.windows.partition_point(|w| w.first + w.len() <= g);
        let window = &self.windows[w];
        let mut at = g - window.first;
        if let Some(key) = self.key {
            if self.cached.as_ref().map(|c| c.0) != Some(w) {
                self.cached = Some((w, permutation(window.len(), Rng::stream(key, w as u64, STREAM_WINDOW))));
            }
            at = self.cached.as_ref().expect("just filled").1[at as usize];
        }
        let i = window.starts.partition_point(|&s| s <= at) - 1;
        Some((window.shards[i], at - window.starts[i]))
    }
}

/// A uniformly drawn permutation of `0..n` (Fisher–Yates).
fn permutation(n: u64, mut rng: Rng) -> Vec<u64> {
    let mut p: Vec<u64> = (0..n).collect();
    for i in (1..p.len()).rev() {
        p.swap(i, rng.below(i as u64 + 1) as usize);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(order: &mut EpochOrder) -> Vec<(usize, u64)> {
        (0..order.len()).map(|g| order.locate(g).unwrap()).collect()
    }

    #[test]
    fn every_sample_appears_exactly_once_whatever_the_window() {
        let counts = [5, 0, 3, 7, 1, 4];
        let mut want: Vec<(usize, u64)> = counts.iter().enumerate().flat_map(|(s, &n)| (0..n).map(move |i| (s, i))).collect();
        for window in [1, 2, 4, 6, 100] {
            let mut got = all(&mut EpochOrder::shuffled(&counts, 3, 1, window));
            assert_eq!(got.len(), 20);
            got.sort();
            want.sort();
            assert_eq!(got, want, "window {window}");
        }
        assert_eq!(EpochOrder::shuffled(&counts, 3, 1, 2).locate(20), None);
        assert_eq!(all(&mut EpochOrder::stored(&counts)), want, "evaluation keeps the stored order");
    }

    #[test]
    fn the_order_depends_on_seed_and_epoch_only_and_windows_stay_local() {
        let counts = [4; 8];
        let a = all(&mut EpochOrder::shuffled(&counts, 3, 1, 2));
        // Asked out of order, the same answers: nothing depends on the visiting order.
        let mut o = EpochOrder::shuffled(&counts, 3, 1, 2);
        let backwards: Vec<_> = (0..32).rev().map(|g| o.locate(g).unwrap()).collect();
        assert_eq!(backwards.into_iter().rev().collect::<Vec<_>>(), a);
        assert_ne!(a, all(&mut EpochOrder::shuffled(&counts, 3, 2, 2)), "another epoch");
        assert_ne!(a, all(&mut EpochOrder::shuffled(&counts, 4, 1, 2)), "another seed");
        // Each run of 8 global samples (one window of 2 shards) comes from 2 shards only.
        for chunk in a.chunks(8) {
            let mut shards: Vec<usize> = chunk.iter().map(|x| x.0).collect();
            shards.dedup();
            shards.sort();
            shards.dedup();
            assert_eq!(shards.len(), 2, "{chunk:?}");
        }
    }
}
