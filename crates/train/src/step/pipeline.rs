//! A step in three calls, so that a trainer hands over the next batch while a device computes
//! this step: [`SamStep::stage`], [`SamStep::launch`], [`SamStep::finish`].
//!
//! On a GPU they are the device step's own: `stage` copies the batch into a pinned slot on the
//! host's cores, `launch` queues its copy to the device and every launch of the step, `finish`
//! waits and reads the report. The trainer stages batch i + 1 between `launch` and `finish` of
//! step i, so neither that copy nor the wait for the loader leaves the device idle. On the CPU
//! `launch` runs the whole step and `stage` only keeps the batch: the same calls, nothing to
//! overlap.

use ringsam_tensor::Tensor;

use super::{SamStep, StepReport, mixup_on_gpu};
use crate::TrainError;

/// The next step's batch, handed over.
pub(super) enum Staged {
    /// On the CPU: the batch itself, until the step runs.
    Host { x: Tensor, labels: Vec<u32>, mix: Option<(Vec<u32>, f32)> },
    /// On a device: in its pinned slot already ([`crate::device_step::DeviceStep::stage`]).
    Device,
}

/// A step launched and not yet finished.
pub(super) enum Launched {
    /// On the CPU: run, its report kept.
    Host(StepReport),
    /// On a device: queued.
    Device,
}

fn out_of_order(what: &str) -> TrainError {
    TrainError::Runtime(format!("SamStep: {what}"))
}

impl SamStep {
    /// Hands over the next step's batch: `x (C, N, H, W)`, `labels`, and mixup's partner labels
    /// and λ (see [`SamStep::step_mixed`]). A batch staged and never launched is replaced.
    pub fn stage(&mut self, x: Tensor, labels: Vec<u32>, mix: Option<(Vec<u32>, f32)>) -> Result<(), TrainError> {
        self.staged = None;
        self.staged = Some(match &mut self.device {
            Some(_) if mix.is_some() => return Err(mixup_on_gpu()),
            Some(d) => {
                d.stage(&x, &labels)?;
                Staged::Device
            }
            None => Staged::Host { x, labels, mix },
        });
        Ok(())
    }

    /// Starts the step on the staged batch at learning rate `lr`: on a device, queued without
    /// waiting; on the CPU, run.
    pub fn launch(&mut self, lr: f32) -> Result<(), TrainError> {
        if self.launched.is_some() {
            return Err(out_of_order("a step launched before the one before it finished"));
        }
        self.launched = Some(match self.staged.take() {
            None => return Err(out_of_order("a step launched with no batch staged")),
            Some(Staged::Device) => {
                let peers = self.sync.as_mut().map(|s| &mut s.cluster);
                self.device.as_mut().ok_or_else(|| out_of_order("a batch staged on a device the step left"))?.launch(lr, peers)?;
                Launched::Device
            }
            Some(Staged::Host { x, labels, mix }) => {
                let mix = mix.as_ref().map(|(partners, lambda)| (&partners[..], *lambda));
                Launched::Host(self.step_mixed(&x, &labels, mix, lr)?)
            }
        });
        Ok(())
    }

    /// The launched step's report, once it has finished (on a device: the step's one wait).
    pub fn finish(&mut self) -> Result<StepReport, TrainError> {
        match self.launched.take() {
            None => Err(out_of_order("a step finished that was not launched")),
            Some(Launched::Host(report)) => Ok(report),
            Some(Launched::Device) => {
                let peers = self.sync.as_mut().map(|s| &mut s.cluster);
                let report =
                    self.device.as_mut().ok_or_else(|| out_of_order("a step launched on a device the step left"))?.finish(peers)?;
                (self.step, self.host_stale) = (self.step + 1, true);
                Ok(report)
            }
        }
    }
}
