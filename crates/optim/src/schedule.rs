//! Learning-rate schedules: pure functions of the global step.
//!
//! - cosine (the reference's default): `lr·½(1 + cos(π·t/T))`, decaying to 0 at the last step;
//! - exponential (the reference's `lr_schedule=exponential`): `lr·exp(−e/λ)` with `e` in epochs and
//!   `λ = −E/ln(0.012)`, so the last epoch runs at 1.2 % of `lr`;
//! - constant.
//!
//! Optional linear warm-up multiplies by `min(1, step/warmup)` — over warm-up steps the schedule
//! itself still runs on the global step, as the reference's flax schedules do. With zero warm-up
//! the factor is exactly 1. (The reference's exponential schedule computes `min(t/0, 1)`, which is
//! NaN at step 0 — `0/0` — and 1 after; ringsam uses 1 from step 0, i.e. the intended value.)

use std::f64::consts::PI;

/// The shape of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// Half-cosine to zero.
    Cosine,
    /// Exponential decay to 1.2 % at the end.
    Exponential,
    /// Flat.
    Constant,
}

/// A complete schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// Shape.
    pub kind: ScheduleKind,
    /// Peak learning rate.
    pub base_lr: f64,
    /// Steps per epoch.
    pub steps_per_epoch: u64,
    /// Epochs in the run.
    pub epochs: u64,
    /// Linear warm-up steps (0: none).
    pub warmup_steps: u64,
}

impl LrSchedule {
    /// The learning rate at global step `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        let total = (self.steps_per_epoch * self.epochs).max(1) as f64;
        let s = step as f64;
        let shape = match self.kind {
            ScheduleKind::Cosine => 0.5 + 0.5 * (PI * (s / total).min(1.0)).cos(),
            ScheduleKind::Exponential => {
                let lambda = -(self.epochs.max(1) as f64) / 0.012f64.ln();
                (-(s / self.steps_per_epoch.max(1) as f64) / lambda).exp()
            }
            ScheduleKind::Constant => 1.0,
        };
        let warm = if self.warmup_steps == 0 { 1.0 } else { (s / self.warmup_steps as f64).min(1.0) };
        self.base_lr * shape * warm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind, warmup: u64) -> LrSchedule {
        LrSchedule { kind, base_lr: 0.1, steps_per_epoch: 10, epochs: 20, warmup_steps: warmup }
    }

    #[test]
    fn cosine_starts_at_lr_and_ends_at_zero() {
        let s = sched(ScheduleKind::Cosine, 0);
        assert_eq!(s.lr_at(0), 0.1);
        assert!((s.lr_at(100) - 0.05).abs() < 1e-12);
        assert!(s.lr_at(200).abs() < 1e-12);
    }

    #[test]
    fn exponential_is_finite_at_step_zero_and_ends_at_1_2_percent() {
        let s = sched(ScheduleKind::Exponential, 0);
        assert_eq!(s.lr_at(0), 0.1);
        assert!((s.lr_at(200) / 0.1 - 0.012).abs() < 1e-9);
    }

    #[test]
    fn warmup_is_linear() {
        let s = sched(ScheduleKind::Constant, 10);
        assert_eq!(s.lr_at(0), 0.0);
        assert!((s.lr_at(5) - 0.05).abs() < 1e-12);
        assert_eq!(s.lr_at(10), 0.1);
    }
}
