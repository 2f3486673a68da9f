//! Where a tensor lives.
//!
//! `Cpu` always works. `Cuda(ordinal)` exists only when the crate is built with the `cuda` feature
//! (cudarc with dynamic loading: the build needs no CUDA toolkit). CUDA kernels are not written
//! yet: on CUDA every tensor operation returns [`TensorError::CudaNotImplemented`], and before that
//! [`Device::probe`] turns a missing driver or library into a clear error instead of the panic
//! cudarc raises on first use of an absent library.

use std::fmt;
use std::str::FromStr;

use crate::TensorError;

/// A compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// The host CPU; storage is an ndarray, kernels are in this crate.
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (feature `cuda`).
    #[cfg(feature = "cuda")]
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            #[cfg(feature = "cuda")]
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for Device {
    type Err = TensorError;

    /// Accepts `cpu`, `cuda` and `cuda:N`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| TensorError::Device { name: s.to_string(), why: why.to_string() };
        match s {
            "cpu" => Ok(Device::Cpu),
            _ if s == "cuda" || s.starts_with("cuda:") => {
                let ordinal = match s.strip_prefix("cuda:") {
                    None => 0,
                    Some(n) => n.parse::<usize>().map_err(|_| err("expected cuda:N with N a GPU ordinal"))?,
                };
                cuda_device(ordinal).map_err(|why| err(&why))
            }
            _ => Err(err("expected cpu, cuda or cuda:N")),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device, String> {
    Ok(Device::Cuda(ordinal))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> Result<Device, String> {
    Err("this ringsam was built without CUDA support (rebuild with `--features cuda`)".into())
}

impl Device {
    /// The CUDA GPUs this host has (`ringsam launch --gpus all`); an error says what is missing
    /// (a build without CUDA, a library, the driver).
    pub fn cuda_count() -> Result<usize, TensorError> {
        let err = |why: String| TensorError::Device { name: "cuda".into(), why };
        #[cfg(feature = "cuda")]
        return cuda_probe::count().map_err(err);
        #[cfg(not(feature = "cuda"))]
        return Err(err(cuda_device(0).expect_err("no CUDA in this build")));
    }

    /// Checks that the device can be used at all, before any kernel touches it.
    ///
    /// For CUDA this loads the driver, cuBLAS, cuDNN and NVRTC libraries one by one and reports the
    /// first one that is missing, then checks that the ordinal names an existing GPU.
    pub fn probe(self) -> Result<(), TensorError> {
        match self {
            Device::Cpu => Ok(()),
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => {
                crate::device::cuda_probe::probe(ordinal).map_err(|why| TensorError::Device { name: self.to_string(), why })
            }
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda_probe {
    //! Probing CUDA without letting cudarc panic.
    //!
    //! cudarc's dynamically loaded symbols panic on first use when their library is absent, so
    //! each `is_culib_present` check runs before any call into that library.

    /// A library's name for messages, and a check that it can be loaded.
    type LibraryCheck = (&'static str, fn() -> bool);

    pub(super) fn probe(ordinal: usize) -> Result<(), String> {
        let count = count()?;
        if ordinal >= count {
            return Err(format!("GPU ordinal {ordinal} does not exist ({count} GPU(s) visible)"));
        }
        Ok(())
    }

    /// The GPUs the driver sees, once every library loads.
    pub(super) fn count() -> Result<usize, String> {
        // SAFETY: `is_culib_present` only tries to dlopen the library; it calls nothing in it.
        let libs: [LibraryCheck; 4] = [
            ("the CUDA driver (libcuda.so)", || unsafe { cudarc::driver::sys::is_culib_present() }),
            ("cuBLAS (libcublas.so)", || unsafe { cudarc::cublas::sys::is_culib_present() }),
            ("cuDNN (libcudnn.so)", || unsafe { cudarc::cudnn::sys::is_culib_present() }),
            ("NVRTC (libnvrtc.so)", || unsafe { cudarc::nvrtc::sys::is_culib_present() }),
        ];
        for (name, present) in libs {
            if !present() {
                return Err(format!("{name} was not found: install the NVIDIA driver and CUDA 13 libraries, or use --device cpu"));
            }
        }
        cudarc::driver::result::init().map_err(|e| format!("cuInit failed: {e}"))?;
        let count = cudarc::driver::result::device::get_count().map_err(|e| format!("counting GPUs: {e}"))?;
        Ok(count.max(0) as usize)
    }
}
