//! Scratch memory shared by the layers of one model.
//!
//! Convolutions need an im2col buffer of `R·S·C/g × N·P·Q` values — for WRN-28-10 at batch 128
//! that is 755 MB in the first group. Layers run one at a time, so one buffer, sized by the
//! largest convolution, serves them all; giving each convolution its own would multiply the
//! memory by the number of convolutions (6 GB for WRN-28-10).
//!
//! The buffer sits behind a mutex only so that models stay `Send`; a model's layers never contend
//! for it (a replica runs its layers sequentially). A model on a device keeps its scratch there
//! ([`Workspace::lock_device`]), one buffer for the same reason.

use std::sync::{Arc, Mutex, MutexGuard};

use ringsam_tensor::Tensor;

/// A shared, growable `f32` scratch buffer, on the host and on the device. Cloning shares both.
#[derive(Clone, Debug, Default)]
pub struct Workspace(Arc<Mutex<Vec<f32>>>, Arc<Mutex<Tensor>>);

impl Workspace {
    /// An empty workspace; it grows on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Exclusive access for the duration of one kernel call.
    pub fn lock(&self) -> MutexGuard<'_, Vec<f32>> {
        // Scratch contents carry no invariant, so a panic elsewhere while holding it is harmless.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The device's scratch: a tensor the device path grows to the largest size asked of it.
    pub fn lock_device(&self) -> MutexGuard<'_, Tensor> {
        self.1.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Current capacity in values (for memory reports).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True before first use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
