//! One device as the engine's tensors hold it: its [`Launcher`] and its [`DeviceMemory`], behind
//! an `Arc` that every device tensor carries, so an operation finds where to run from its
//! operands (as PyTorch's tensors carry their device) and nothing global says which GPU is
//! current.
//!
//! The launcher sits behind a mutex only so that tensors stay `Send`: a replica runs its
//! operations one after another on its own device, so the lock is never contended.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::alloc::DeviceMemory;
use crate::gemm::SgemmCall;
use crate::launch::{Arg, Buf, KernelError, Launch, Launcher};
use crate::profile::KernelTimes;

/// A device: a launcher and the memory its kernels use.
pub struct Gpu {
    name: String,
    launcher: Mutex<Box<dyn Launcher + Send>>,
    memory: DeviceMemory,
}

impl Gpu {
    /// The device `name` (for messages) running kernels with `launcher` on `memory`.
    pub fn new(name: impl Into<String>, launcher: impl Launcher + Send + 'static, memory: DeviceMemory) -> Arc<Gpu> {
        Arc::new(Gpu { name: name.into(), launcher: Mutex::new(Box::new(launcher)), memory })
    }

    /// GPU `ordinal`: its kernels compiled and loaded, its GEMMs in `precision`, its memory behind
    /// the caching allocator.
    #[cfg(feature = "cuda")]
    pub fn cuda(ordinal: usize, precision: crate::Precision) -> Result<Arc<Gpu>, KernelError> {
        let launcher = crate::device::CudaLauncher::new(ordinal, precision)?;
        let name = format!("cuda:{ordinal} ({}, {precision})", launcher.device_name());
        let memory = launcher.memory();
        Ok(Gpu::new(name, launcher, memory))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its memory.
    pub fn memory(&self) -> &DeviceMemory {
        &self.memory
    }

    /// Its launcher, for the operations of this crate (`&mut *gpu.launcher()`).
    pub fn launcher(&self) -> MutexGuard<'_, Box<dyn Launcher + Send>> {
        // A launcher holds no invariant a panic in an operation could break.
        self.launcher.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `a` and `b` are the same device.
    pub fn same(a: &Arc<Gpu>, b: &Arc<Gpu>) -> bool {
        Arc::ptr_eq(a, b)
    }
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({})", self.name)
    }
}

/// A boxed launcher is a launcher, so the generic operations take the device's.
impl Launcher for Box<dyn Launcher + Send> {
    fn launch(&mut self, kernel: &'static str, at: Launch, args: &[Arg]) -> Result<(), KernelError> {
        (**self).launch(kernel, at, args)
    }
    fn reduction_scratch(&mut self) -> Result<(Buf<f64>, Buf<f64>), KernelError> {
        (**self).reduction_scratch()
    }
    fn read_f64(&mut self, buf: Buf<f64>) -> Result<Vec<f64>, KernelError> {
        (**self).read_f64(buf)
    }
    fn sgemm(&mut self, call: &SgemmCall) -> Result<(), KernelError> {
        (**self).sgemm(call)
    }
    fn set_profiling(&mut self, on: bool) {
        (**self).set_profiling(on)
    }
    fn take_profile(&mut self) -> Result<KernelTimes, KernelError> {
        (**self).take_profile()
    }
    fn library_conv(&mut self, call: &crate::conv_library::ConvCall) -> Result<(), KernelError> {
        (**self).library_conv(call)
    }
    fn library_takes(&mut self, sh: &crate::conv::ConvShape) -> bool {
        (**self).library_takes(sh)
    }
    fn library_refusals(&self) -> Vec<String> {
        (**self).library_refusals()
    }
    fn conv_impl(&self) -> crate::conv_library::ConvImpl {
        (**self).conv_impl()
    }
    fn set_conv_impl(&mut self, imp: crate::conv_library::ConvImpl) -> Result<(), KernelError> {
        (**self).set_conv_impl(imp)
    }
    fn precision(&self) -> crate::Precision {
        (**self).precision()
    }
    fn set_precision(&mut self, p: crate::Precision) -> Result<(), KernelError> {
        (**self).set_precision(p)
    }
}
