//! [`RawMemory`] on a GPU (feature `cuda`): the driver's `cuMemAlloc`, `cuMemFree`, copies and
//! memset, on the legacy default stream the launcher uses, so every copy is ordered with the
//! kernels around it. Only a GPU runs this file; the allocator above it is tested on
//! [`crate::HostMemory`].

use std::sync::Arc;

use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaContext, DriverError, result};

use crate::alloc::{RawAllocError, RawMemory};
use crate::launch::KernelError;

/// One GPU's memory, through its context (made current on whichever thread calls).
pub struct CudaMemory {
    ctx: Arc<CudaContext>,
}

impl CudaMemory {
    /// The memory of the context's GPU (the context of a [`crate::device::CudaLauncher`]).
    pub fn new(ctx: Arc<CudaContext>) -> Self {
        CudaMemory { ctx }
    }

    fn bind(&self, what: &'static str) -> Result<(), KernelError> {
        self.ctx.bind_to_thread().map_err(copy_error(what))
    }
}

fn copy_error(what: &'static str) -> impl Fn(DriverError) -> KernelError {
    move |e| KernelError::Read { what, why: e.to_string() }
}

impl RawMemory for CudaMemory {
    fn alloc(&mut self, bytes: usize) -> Result<u64, RawAllocError> {
        self.ctx.bind_to_thread().map_err(|e| RawAllocError::Driver(e.to_string()))?;
        // SAFETY: a plain allocation in the bound context.
        match unsafe { result::malloc_sync(bytes) } {
            Ok(addr) => Ok(addr),
            Err(DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY)) => Err(RawAllocError::OutOfMemory),
            Err(e) => Err(RawAllocError::Driver(e.to_string())),
        }
    }

    unsafe fn free(&mut self, addr: u64) {
        // A failure here leaves the block allocated until the context goes: nothing to undo.
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: the caller's contract: our allocation, unused by any pending launch.
            let _ = unsafe { result::free_sync(addr) };
        }
    }

    unsafe fn write(&mut self, addr: u64, src: &[u8]) -> Result<(), KernelError> {
        self.bind("a copy to the device")?;
        // SAFETY: the caller's contract: `src.len()` bytes allocated at `addr`.
        unsafe { result::memcpy_htod_sync(addr, src) }.map_err(copy_error("a copy to the device"))
    }

    unsafe fn read(&mut self, addr: u64, dst: &mut [u8]) -> Result<(), KernelError> {
        self.bind("a device buffer")?;
        // SAFETY: the caller's contract: `dst.len()` bytes allocated at `addr`.
        unsafe { result::memcpy_dtoh_sync(dst, addr) }.map_err(copy_error("a device buffer"))
    }

    unsafe fn copy(&mut self, dst: u64, src: u64, bytes: usize) -> Result<(), KernelError> {
        self.bind("a copy on the device")?;
        // SAFETY: the caller's contract: two allocated, disjoint ranges on this device.
        unsafe { result::memcpy_dtod_sync(dst, src, bytes) }.map_err(copy_error("a copy on the device"))
    }

    unsafe fn zero(&mut self, addr: u64, bytes: usize) -> Result<(), KernelError> {
        self.bind("zeroing a device buffer")?;
        // SAFETY: the caller's contract: `bytes` bytes allocated at `addr`.
        unsafe { result::memset_d8_sync(addr, 0, bytes) }.map_err(copy_error("zeroing a device buffer"))
    }

    fn alloc_pinned(&mut self, bytes: usize) -> Result<u64, RawAllocError> {
        self.ctx.bind_to_thread().map_err(|e| RawAllocError::Driver(e.to_string()))?;
        // SAFETY: a plain page-locked allocation in the bound context (no flags: portable to
        // this context only, which is the one copying).
        match unsafe { result::malloc_host(bytes, 0) } {
            Ok(ptr) => Ok(ptr as u64),
            Err(DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY)) => Err(RawAllocError::OutOfMemory),
            Err(e) => Err(RawAllocError::Driver(e.to_string())),
        }
    }

    unsafe fn free_pinned(&mut self, addr: u64) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: the caller's contract: from `alloc_pinned`, no copy pending.
            let _ = unsafe { result::free_host(addr as *mut std::ffi::c_void) };
        }
    }

    unsafe fn write_async(&mut self, addr: u64, src: &[u8]) -> Result<(), KernelError> {
        self.bind("a copy to the device")?;
        // The legacy default stream (null), the one the launcher uses: the copy is ordered after
        // every launch before it and before every launch after it.
        // SAFETY: the caller's contract: `src` is pinned and left alone until `synchronize`.
        unsafe { result::memcpy_htod_async(addr, src, std::ptr::null_mut()) }.map_err(copy_error("a copy to the device"))
    }

    fn synchronize(&mut self) -> Result<(), KernelError> {
        self.bind("waiting for the device")?;
        result::ctx::synchronize().map_err(copy_error("waiting for the device"))
    }
}
