//! What a layer's device path needs: its operands as kernel arguments (checked to be on the
//! layer's device), its buffers placed there, and the device's launcher, with every failure
//! turned into an error naming the layer.
//!
//! A leaf layer (and a block's residual sum, in `ringsam-models`) runs where its input is: `forward` starts with `if let Some(dev) =
//! OnDevice::of(&self.name, x)` and, on a device, runs the same operation through
//! `ringsam-kernels` that its CPU path runs through `ringsam-tensor`, writing the same buffers.

use std::sync::{Arc, MutexGuard};

use ringsam_kernels::launch::Elem;
use ringsam_kernels::{Buf, DeviceVec, Gpu, KernelError, Launcher};
use ringsam_tensor::{Tensor, TensorError};

use crate::NnError;

/// A layer's view of the device its input is on.
pub struct OnDevice<'a> {
    gpu: &'a Arc<Gpu>,
    layer: &'a str,
}

impl<'a> OnDevice<'a> {
    /// The device `x` is on, for `layer`; None when `x` is on the host (the CPU path runs).
    pub fn of(layer: &'a str, x: &'a Tensor) -> Option<Self> {
        x.gpu().map(|gpu| OnDevice { gpu, layer })
    }

    /// `t` as a kernel argument: it must be on this device (parameters, statistics and
    /// gradients live where the layer runs).
    pub fn buf(&self, t: &Tensor) -> Result<Buf<f32>, NnError> {
        match (t.gpu(), t.device_buf()) {
            (Some(g), Some(b)) if Gpu::same(g, self.gpu) => Ok(b),
            _ => {
                let place = t.gpu().map_or("the host".to_string(), |g| g.name().to_string());
                let why = format!("an operand is on {place} while the input is on {}", self.gpu.name());
                Err(self.error(TensorError::Placement { op: "the device path", why }))
            }
        }
    }

    /// `out` given `shape` on this device (its block reused when it fits), as a kernel argument.
    pub fn place(&self, out: &mut Tensor, shape: &[usize], like: &Tensor) -> Result<Buf<f32>, NnError> {
        out.place_like(shape, like).map_err(|e| self.error(e))?;
        self.buf(out)
    }

    /// The first `n` values of the scratch tensor `t`, grown on this device when it is shorter
    /// (never shrunk: the model's convolutions share it, the largest sets its size).
    pub fn scratch(&self, t: &mut Tensor, n: usize, like: &Tensor) -> Result<Buf<f32>, NnError> {
        if !(t.len() >= n && self.buf(t).is_ok()) {
            self.place(t, &[n], like)?;
        }
        Ok(self.buf(t)?.slice(0..n))
    }

    /// A buffer of `len` values on this device that the layer keeps (max pooling's argmax).
    pub fn alloc<T: Elem>(&self, len: usize) -> Result<DeviceVec<T>, NnError> {
        let source = |source| TensorError::Kernel { op: "allocating", device: self.gpu.name().to_string(), source };
        self.gpu.memory().alloc(len).map_err(|e| self.error(source(e)))
    }

    /// `v` if it is a buffer of `len` values on this device, else a new one (contents unspecified).
    pub fn keep<T: Elem>(&self, v: &mut Option<DeviceVec<T>>, len: usize) -> Result<Buf<T>, NnError> {
        // A DeviceVec does not say which device it is on; the layer's stays on the device of its
        // first device forward, which a model never changes.
        if v.as_ref().is_none_or(|b| b.len() != len) {
            *v = None; // free first: the cache may hand the block straight back
            *v = Some(self.alloc(len)?);
        }
        Ok(v.as_ref().expect("just placed").buf())
    }

    /// Runs `op` with the device's launcher.
    pub fn run<T>(&self, op: impl FnOnce(&mut Box<dyn Launcher + Send>) -> Result<T, KernelError>) -> Result<T, NnError> {
        let mut launcher: MutexGuard<'_, Box<dyn Launcher + Send>> = self.gpu.launcher();
        op(&mut launcher).map_err(|source| self.error(TensorError::Kernel { op: "a kernel", device: self.gpu.name().to_string(), source }))
    }

    fn error(&self, source: TensorError) -> NnError {
        NnError::Kernel { layer: self.layer.to_string(), source }
    }
}
