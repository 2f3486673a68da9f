//! [`RawMemory`] on a GPU (feature `cuda`): the driver's `cuMemAlloc`, `cuMemFree`, copies and
//! memset, on the legacy default stream the launcher uses, so every copy is ordered with the
//! kernels around it. The one exception is [`RawMemory::read_async`]: a gradient bucket's copy
//! to the host runs on a side stream, after an event recorded on the default stream, so that
//! backward's later kernels do not wait for it (the stream is non-blocking: a blocking one would
//! synchronize with the legacy default stream and serialize the copy with the kernels again).
//! Only a GPU runs this file; the allocator above it is tested on [`crate::HostMemory`].

use std::sync::Arc;

use cudarc::driver::sys::{self, CUresult};
use cudarc::driver::{CudaContext, DriverError, result};

use crate::alloc::{CopyDone, RawAllocError, RawMemory};
use crate::launch::KernelError;

/// One GPU's memory, through its context (made current on whichever thread calls).
pub struct CudaMemory {
    ctx: Arc<CudaContext>,
    copy_stream: Option<SideStream>, // made by the first `read_async`
}

/// A stream of the context, destroyed with it.
struct SideStream(sys::CUstream);

// SAFETY: a stream handle may be used from any thread with its context current (which every
// call here makes so first).
unsafe impl Send for SideStream {}

impl CudaMemory {
    /// The memory of the context's GPU (the context of a [`crate::device::CudaLauncher`]).
    pub fn new(ctx: Arc<CudaContext>) -> Self {
        CudaMemory { ctx, copy_stream: None }
    }

    fn copy_stream(&mut self) -> Result<sys::CUstream, KernelError> {
        if self.copy_stream.is_none() {
            let stream = result::stream::create(result::stream::StreamKind::NonBlocking).map_err(copy_error("a copy stream"))?;
            self.copy_stream = Some(SideStream(stream));
        }
        Ok(self.copy_stream.as_ref().expect("just made").0)
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

    unsafe fn read_async(&mut self, addr: u64, dst: &mut [u8]) -> Result<Box<dyn CopyDone>, KernelError> {
        const WHAT: &str = "a copy to the host on the side stream";
        self.bind(WHAT)?;
        let side = self.copy_stream()?;
        let flags = sys::CUevent_flags::CU_EVENT_DISABLE_TIMING;
        let queued = Event::new(self.ctx.clone(), flags)?;
        // SAFETY: live handles of the bound context; the side stream waits for everything the
        // default stream (null) holds now, then copies; `done` marks the copy's end. The caller
        // keeps `dst` pinned and untouched until `done` says so.
        unsafe {
            result::event::record(queued.0, std::ptr::null_mut()).map_err(copy_error(WHAT))?;
            result::stream::wait_event(side, queued.0, sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT).map_err(copy_error(WHAT))?;
            result::memcpy_dtoh_async(dst, addr, side).map_err(copy_error(WHAT))?;
        }
        // The end's event blocks the waiting thread instead of spinning a core the ring needs,
        // and keeps no time.
        let done = Event::blocking(self.ctx.clone())
            // SAFETY: as above.
            .and_then(|done| unsafe { result::event::record(done.0, side) }.map(|()| done).map_err(copy_error(WHAT)));
        match done {
            Ok(done) => Ok(Box::new(done)),
            Err(e) => {
                // The copy is queued: wait for it (the caller also keeps `dst` on any error).
                // SAFETY: our live stream.
                let _ = unsafe { result::stream::synchronize(side) };
                Err(e)
            }
        }
    }
}

impl Drop for CudaMemory {
    fn drop(&mut self) {
        if let (Some(s), Ok(())) = (self.copy_stream.take(), self.ctx.bind_to_thread()) {
            // SAFETY: our stream; destroying it lets queued work finish first (the driver's rule).
            let _ = unsafe { result::stream::destroy(s.0) };
        }
    }
}

/// An event of a context, destroyed when dropped (a pending one is released when it completes).
struct Event(sys::CUevent, Arc<CudaContext>);

// SAFETY: as for SideStream.
unsafe impl Send for Event {}

impl Event {
    fn new(ctx: Arc<CudaContext>, flags: sys::CUevent_flags) -> Result<Self, KernelError> {
        let e = result::event::create(flags).map_err(copy_error("an event"))?;
        Ok(Event(e, ctx))
    }

    /// An event whose waiters sleep rather than spin, without timing (cudarc's flag type holds
    /// one flag, so the driver is called directly with both).
    fn blocking(ctx: Arc<CudaContext>) -> Result<Self, KernelError> {
        let flags = sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC as u32 | sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32;
        let mut e = std::mem::MaybeUninit::uninit();
        // SAFETY: a plain event creation in the bound context, into our out-pointer.
        unsafe { sys::cuEventCreate(e.as_mut_ptr(), flags).result() }.map_err(copy_error("an event"))?;
        // SAFETY: initialised by the successful call.
        Ok(Event(unsafe { e.assume_init() }, ctx))
    }
}

impl CopyDone for Event {
    fn is_done(&mut self) -> Result<bool, KernelError> {
        self.1.bind_to_thread().map_err(copy_error("an event"))?;
        // SAFETY: our live event.
        match unsafe { result::event::query(self.0) } {
            Ok(()) => Ok(true),
            Err(DriverError(CUresult::CUDA_ERROR_NOT_READY)) => Ok(false),
            Err(e) => Err(copy_error("a copy to the host")(e)),
        }
    }

    fn wait(&mut self) -> Result<(), KernelError> {
        self.1.bind_to_thread().map_err(copy_error("an event"))?;
        // SAFETY: our live event.
        unsafe { result::event::synchronize(self.0) }.map_err(copy_error("a copy to the host"))
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if self.1.bind_to_thread().is_ok() {
            // SAFETY: our event, destroyed once.
            let _ = unsafe { result::event::destroy(self.0) };
        }
    }
}
