//! How a global batch is cut among replicas, so that the world size does not change the math.
//!
//! A global batch is `units` micro-batches of equal size (training: `--max_replicas ×
//! --grad_accum_steps` of them). A world of `world` replicas spreads the units as evenly as
//! possible, in rank order: replica `r` takes units `⌊r·units/world⌋ .. ⌊(r+1)·units/world⌋`, so
//! some replicas take one more when `world` does not divide `units`. Whatever the world, the
//! micro-batches — which examples, in which order, and so every batch-norm batch — are the same;
//! only which replica computes which changes. docs/ARCHITECTURE.md ("Elastic training") says why.

use std::ops::Range;

/// Replica `rank`'s place among `world` replicas sharing `units` micro-batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchShare {
    /// Micro-batches per global batch.
    pub units: usize,
    /// This replica.
    pub rank: usize,
    /// Replicas sharing the batch.
    pub world: usize,
}

impl BatchShare {
    /// The share of replica `rank` of `world` (errors name what is wrong).
    pub fn new(units: usize, rank: usize, world: usize) -> Result<BatchShare, String> {
        if world == 0 || rank >= world {
            return Err(format!("rank {rank} is not below the world size {world}"));
        }
        if units < world {
            return Err(format!("{world} replicas cannot share {units} micro-batches: each needs at least one"));
        }
        Ok(BatchShare { units, rank, world })
    }

    /// One replica computing the whole batch as `units` micro-batches.
    pub fn alone(units: usize) -> BatchShare {
        BatchShare { units: units.max(1), rank: 0, world: 1 }
    }

    /// The micro-batches replica `rank` computes.
    pub fn units_of(&self, rank: usize) -> Range<usize> {
        rank * self.units / self.world..(rank + 1) * self.units / self.world
    }

    /// This replica's micro-batches.
    pub fn my_units(&self) -> Range<usize> {
        self.units_of(self.rank)
    }

    /// This replica's examples of a batch of `n` (`n` a multiple of `units` in training; an
    /// evaluation batch may be shorter, and is then cut in proportion).
    pub fn examples(&self, n: usize) -> Range<usize> {
        let u = self.my_units();
        n * u.start / self.units..n * u.end / self.units
    }

    /// Examples that ranks `ranks` together take of a batch of `n`.
    pub fn examples_of(&self, ranks: Range<usize>, n: usize) -> usize {
        if ranks.is_empty() {
            return 0;
        }
        let (lo, hi) = (self.units_of(ranks.start).start, self.units_of(ranks.end - 1).end);
        n * hi / self.units - n * lo / self.units
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_spread_evenly_and_cover_the_batch() {
        for units in 1..12 {
            for world in 1..=units {
                let mut next = 0;
                for rank in 0..world {
                    let s = BatchShare::new(units, rank, world).unwrap();
                    let u = s.my_units();
                    assert_eq!(u.start, next, "contiguous");
                    assert!(u.len() == units / world || u.len() == units / world + 1, "{units} over {world}");
                    next = u.end;
                    let e = s.examples(units * 3);
                    assert_eq!(e, u.start * 3..u.end * 3, "whole micro-batches");
                }
                assert_eq!(next, units);
            }
        }
    }

    #[test]
    fn a_world_larger_than_the_units_is_refused() {
        assert!(BatchShare::new(2, 0, 3).is_err());
        assert!(BatchShare::new(4, 4, 4).is_err());
        assert!(BatchShare::new(4, 3, 4).is_ok());
    }

    #[test]
    fn groups_count_their_examples() {
        let s = BatchShare::new(4, 0, 3).unwrap(); // units 1, 1, 2
        assert_eq!(s.examples_of(0..3, 8), 8);
        assert_eq!(s.examples_of(2..3, 8), 4);
        assert_eq!(s.examples_of(0..2, 8), 4);
        assert_eq!(s.examples_of(1..1, 8), 0);
    }
}
