//! What a run will hold in memory, estimated before anything large is allocated, so that a
//! setting that cannot fit (a 100 000-wide WideResNet, 4096-pixel synthetic images, a prefetch of
//! a billion batches) is refused naming the flag, instead of the process dying on a failed
//! allocation minutes later.
//!
//! Counted: the parameter arena and every buffer of its shape (gradients, SAM's `w + e`, the
//! optimizer's state, EMA), the dataset when it is held in memory, and the loader's queue of
//! prepared batches. Not counted: activations, which depend on each layer's shapes (a model can
//! still run out of memory in its first step, but every setting this estimate refuses is one
//! that could never have fit). The limit is the caller's: the binary takes the smaller of the
//! host's available memory and the container's limit.

use crate::TrainError;
use crate::config::TrainConfig;

/// Bytes each part needs.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEstimate {
    /// `(what, bytes, the flag that changes it)`.
    pub parts: Vec<(&'static str, u64, &'static str)>,
}

impl MemoryEstimate {
    /// For `cfg` with a model of `params` parameters, images of `image_values` values each, a
    /// dataset of `dataset_bytes` held in memory (0 for shards), on `world` replicas.
    pub fn new(cfg: &TrainConfig, params: usize, image_values: usize, dataset_bytes: u64, world: usize) -> MemoryEstimate {
        let optimizer_buffers = if cfg.use_rmsprop { 2 } else { 1 };
        let ema = u64::from(cfg.ema_decay > 0.0);
        // w, its gradient, w + e, the optimizer's state, EMA.
        let arena_buffers = 3 + optimizer_buffers + ema;
        let batch = (cfg.batch_size / world.max(1)) as u64;
        let f32s = |n: u64| n.saturating_mul(4);
        MemoryEstimate {
            parts: vec![
                (
                    "the model's parameters, gradients and optimizer state",
                    f32s((params as u64).saturating_mul(arena_buffers)),
                    "--model_name",
                ),
                ("the dataset in memory", dataset_bytes, "--dataset / --image_size"),
                (
                    "the loader's prepared batches",
                    f32s(((cfg.prefetch as u64) + 2).saturating_mul(batch).saturating_mul(image_values as u64)),
                    "--prefetch / --batch_size",
                ),
            ],
        }
    }

    /// All parts together.
    pub fn total(&self) -> u64 {
        self.parts.iter().fold(0u64, |a, p| a.saturating_add(p.1))
    }

    /// Refuses an estimate above `limit` bytes, naming the largest part and its flag.
    pub fn check(&self, limit: u64) -> Result<(), TrainError> {
        if self.total() <= limit {
            return Ok(());
        }
        let (what, bytes, flag) = self.parts.iter().max_by_key(|p| p.1).copied().expect("parts are listed");
        Err(TrainError::Config(format!(
            "this run needs at least {} of memory before any activation ({what}: {}), more than the {} available: change {flag}",
            gib(self.total()),
            gib(bytes),
            gib(limit)
        )))
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_too_wide_for_memory_is_refused_naming_the_flag() {
        let cfg = TrainConfig::default();
        let e = MemoryEstimate::new(&cfg, 1 << 40, 3 * 32 * 32, 0, 1);
        let msg = e.check(16 << 30).unwrap_err().to_string();
        assert!(msg.contains("--model_name") && msg.contains("16.0 GiB available"), "{msg}");
        // WRN-28-10 (36.5 M parameters) fits easily.
        MemoryEstimate::new(&cfg, 36_500_000, 3 * 32 * 32, 150 << 20, 1).check(16 << 30).unwrap();
    }

    #[test]
    fn a_huge_prefetch_is_refused_naming_it() {
        let cfg = TrainConfig { prefetch: 64, batch_size: 1 << 20, ..TrainConfig::default() };
        let msg = MemoryEstimate::new(&cfg, 1000, 3 * 224 * 224, 0, 1).check(16 << 30).unwrap_err().to_string();
        assert!(msg.contains("--prefetch"), "{msg}");
    }
}
