//! Cheaper SAM (docs/SAM.md, "Cheaper SAM"): which steps take SAM's two passes, and LookSAM's
//! reused direction for the one-pass steps between them.
//!
//! `--sam_every K` runs the SAM step when the global step is a multiple of K and plain SGD (the
//! ρ = 0 step, one pass) otherwise. LookSAM (`--looksam_k k`, Liu et al. 2022) runs SAM on the
//! same steps, keeps the part of the SAM gradient its SGD gradient does not explain
//! ([`ringsam_optim::looksam`]), and adds it back, at each step's gradient scale, on the steps
//! between. Both key on the global step, so every replica, and a resumed run, agrees on which
//! steps are SAM steps; the first step of a run (step 0) is always one.
//!
//! Data-parallel, the direction is computed from gradients already averaged over the world (the
//! ascent gradient with `sync_perturbations`, which LookSAM requires, and the descent gradient),
//! so every replica holds the same one, and the steps between add it after their one exchange.
//! It is training state: checkpoints and recovery from memory carry it as the optimizer buffer
//! [`DIRECTION_BUFFER`]. A checkpoint without one (written by a run without LookSAM) restores a
//! zero direction: the steps up to the next SAM step are then plain SGD.

use ringsam_optim::looksam::{add_reused, orthogonal_part};

use crate::config::TrainConfig;

/// The optimizer-buffer name LookSAM's direction is saved under.
pub const DIRECTION_BUFFER: &str = "looksam_direction";

/// Which steps take SAM's two passes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamSchedule {
    /// SAM when the global step is a multiple of K (1: every step), plain SGD otherwise.
    Every(u64),
    /// LookSAM: SAM when the global step is a multiple of `k`; the steps between add the reused
    /// direction with weight `alpha`.
    LookSam {
        /// Period of the SAM steps.
        k: u64,
        /// Weight of the reused direction, relative to the step's gradient norm.
        alpha: f32,
    },
}

impl SamSchedule {
    /// The schedule `cfg` asks for (validated: K ≥ 1, k ≥ 2).
    pub fn from_config(cfg: &TrainConfig) -> SamSchedule {
        match cfg.looksam_k {
            Some(k) => SamSchedule::LookSam { k, alpha: cfg.looksam_alpha },
            None => SamSchedule::Every(cfg.sam_every),
        }
    }

    /// Whether global step `step` takes SAM's two passes (when ρ > 0).
    pub fn sam_at(self, step: u64) -> bool {
        match self {
            SamSchedule::Every(k) | SamSchedule::LookSam { k, .. } => step.is_multiple_of(k.max(1)),
        }
    }

    /// Steps per cycle of one SAM step and the one-pass steps after it.
    pub fn period(self) -> u64 {
        match self {
            SamSchedule::Every(k) | SamSchedule::LookSam { k, .. } => k.max(1),
        }
    }

    /// A short name for tables: `sam`, `sam_every_5`, `looksam_5`.
    pub fn label(self) -> String {
        match self {
            SamSchedule::Every(1) => "sam".into(),
            SamSchedule::Every(k) => format!("sam_every_{k}"),
            SamSchedule::LookSam { k, .. } => format!("looksam_{k}"),
        }
    }
}

/// LookSAM's state: the ascent gradient of the SAM step in progress, and the direction kept for
/// the steps between (see the module docs).
#[derive(Clone, Debug)]
pub struct ReusedDirection {
    alpha: f32,
    ascent: Vec<f32>,    // g of the SAM step in progress
    direction: Vec<f32>, // g_v; zeros: none yet
    norm: f64,           // ‖g_v‖
}

impl ReusedDirection {
    /// No direction yet, for `n` parameters.
    pub fn new(alpha: f32, n: usize) -> ReusedDirection {
        ReusedDirection { alpha, ascent: Vec::new(), direction: vec![0.0; n], norm: 0.0 }
    }

    /// Sets α (benchmarks switch between schedules).
    pub fn set_alpha(&mut self, alpha: f32) {
        self.alpha = alpha;
    }

    /// A SAM step's pass 1 is done: `g` is its gradient (the ascent direction).
    pub fn remember_ascent(&mut self, g: &[f32]) {
        self.ascent.clear();
        self.ascent.extend_from_slice(g);
    }

    /// Its pass 2 is done: `g_s` is the gradient at the ascent point; the direction becomes the
    /// part of `g_s` orthogonal to the remembered `g`.
    pub fn keep_from(&mut self, g_s: &[f32]) {
        self.norm = orthogonal_part(&mut self.direction, g_s, &self.ascent);
        if self.norm == 0.0 {
            self.direction.fill(0.0); // parallel up to rounding: none kept, and none saved
        }
    }

    /// A one-pass step: adds `α·(‖g‖/‖g_v‖)·g_v` to its gradient `g`; returns `‖g‖` before.
    pub fn add_to(&self, g: &mut [f32]) -> f64 {
        add_reused(g, &self.direction, self.norm, self.alpha)
    }

    /// The direction (zeros before the first SAM step).
    pub fn direction(&self) -> &[f32] {
        &self.direction
    }

    /// Takes a saved direction, or none (zeros; see the module docs). Lengths are the caller's.
    pub fn restore(&mut self, saved: Option<&[f32]>) {
        match saved {
            Some(d) => self.direction.copy_from_slice(d),
            None => self.direction.fill(0.0),
        }
        self.norm = ringsam_optim::global_norm(&self.direction);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sam_steps_are_the_multiples_of_the_period() {
        let every = SamSchedule::Every(3);
        let got: Vec<bool> = (0..7).map(|s| every.sam_at(s)).collect();
        assert_eq!(got, [true, false, false, true, false, false, true]);
        assert!((0..5).all(|s| SamSchedule::Every(1).sam_at(s)));
        let look = SamSchedule::LookSam { k: 2, alpha: 0.7 };
        assert!(look.sam_at(0) && !look.sam_at(1) && look.sam_at(2));
        assert_eq!([every.label(), SamSchedule::Every(1).label(), look.label()], ["sam_every_3", "sam", "looksam_2"]);
    }

    #[test]
    fn the_direction_is_kept_reused_and_restored() {
        let mut r = ReusedDirection::new(1.0, 2);
        let mut g = vec![1.0f32, 0.0];
        assert_eq!(r.add_to(&mut g), 1.0);
        assert_eq!(g, [1.0, 0.0], "no direction before the first SAM step");
        r.remember_ascent(&[2.0, 0.0]);
        r.keep_from(&[1.0, 3.0]); // g_v = (0, 3)
        assert_eq!(r.direction(), [0.0, 3.0]);
        let mut g = vec![0.0f32, 4.0];
        r.add_to(&mut g); // + 1·(4/3)·(0, 3)
        assert_eq!(g, [0.0, 8.0]);
        let saved = r.direction().to_vec();
        let mut fresh = ReusedDirection::new(1.0, 2);
        fresh.restore(Some(&saved));
        let mut g2 = vec![0.0f32, 4.0];
        fresh.add_to(&mut g2);
        assert_eq!(g2, g, "a restored direction acts as the original");
        fresh.restore(None);
        assert_eq!(fresh.direction(), [0.0, 0.0]);
    }
}
