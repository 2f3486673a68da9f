//! Pinned host buffers: host memory the device copies from directly (page-locked on a GPU,
//! `cuMemHostAlloc`), so a copy into device memory is asynchronous and runs at the link's
//! speed. A copy from pageable memory does neither: the driver stages it through its own pinned
//! buffer while the host waits, after every launch before it; for ResNet-50 at batch 256 that
//! was most of the 15 % of an H200 step spent outside kernels (docs/BENCHMARKS.md).
//!
//! A buffer with a copy from it still pending cannot be written: [`PinnedVec::host_mut`] waits
//! for the device first, so the host never overwrites values the copy has not read.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use crate::alloc::{Pool, RawAllocError, lock};
use crate::launch::{Elem, KernelError};

/// `len` values of `T` in pinned host memory of one device; freed when dropped.
pub struct PinnedVec<T: Elem> {
    addr: u64,
    len: usize,
    pending: bool,
    pool: Arc<Mutex<Pool>>,
    elem: PhantomData<T>,
}

// SAFETY: the buffer owns its memory (as a Vec would); the pool behind it is behind a Mutex.
unsafe impl<T: Elem> Send for PinnedVec<T> {}

impl<T: Elem> PinnedVec<T> {
    pub(crate) fn new(pool: Arc<Mutex<Pool>>, len: usize) -> Result<Self, KernelError> {
        let refused = |why: String| KernelError::Alloc { bytes: len.saturating_mul(size_of::<T>()), in_use: 0, cached: 0, why };
        let bytes = len.checked_mul(size_of::<T>()).ok_or_else(|| refused(format!("{len} values do not fit the address space")))?;
        let addr = if bytes == 0 {
            0
        } else {
            lock(&pool).raw.alloc_pinned(bytes).map_err(|e| match e {
                RawAllocError::OutOfMemory => refused("pinned host memory: out of memory".into()),
                RawAllocError::Driver(why) => refused(format!("pinned host memory: {why}")),
            })?
        };
        Ok(PinnedVec { addr, len, pending: false, pool, elem: PhantomData })
    }

    /// Its values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The values, to read.
    pub fn as_slice(&self) -> &[T] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `len` values of plain old data at `addr`, ours while `self` lives.
        unsafe { std::slice::from_raw_parts(self.addr as *const T, self.len) }
    }

    /// The values, to write: waits first for a pending copy from them to finish.
    pub fn host_mut(&mut self) -> Result<&mut [T], KernelError> {
        self.settle()?;
        if self.len == 0 {
            return Ok(&mut []);
        }
        // SAFETY: as in `as_slice`, and no copy reads them any more.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.addr as *mut T, self.len) })
    }

    /// Where the values are, for a copy into them ([`crate::DeviceMemory::read_async`]).
    pub(crate) fn as_mut_ptr(&mut self) -> *mut T {
        self.addr as *mut T
    }

    /// A copy from the buffer was queued ([`crate::DeviceVec::write_async`]).
    pub(crate) fn mark_pending(&mut self) {
        self.pending = true;
    }

    /// Records that every copy from the buffer has finished, so that the next write need not
    /// wait for the device: for a caller that waited for the whole stream after queueing them
    /// (the SAM step reads its report so), when writing the buffer again must not wait for
    /// work queued since (the step after it).
    ///
    /// # Safety
    /// The device must have finished every copy queued from this buffer: the caller waited for
    /// the stream (or the device) after the last [`crate::DeviceVec::write_async`] from it.
    pub unsafe fn assume_copied(&mut self) {
        self.pending = false;
    }

    /// Whether a copy from the buffer may still be running.
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    fn settle(&mut self) -> Result<(), KernelError> {
        if self.pending {
            lock(&self.pool).raw.synchronize()?;
            self.pending = false;
        }
        Ok(())
    }
}

impl<T: Elem> Drop for PinnedVec<T> {
    fn drop(&mut self) {
        // A failed wait leaves the memory allocated rather than freed under a running copy.
        if self.addr != 0 && self.settle().is_ok() {
            // SAFETY: our allocation, with no copy from it pending.
            unsafe { lock(&self.pool).raw.free_pinned(self.addr) };
        }
    }
}

impl<T: Elem> std::fmt::Debug for PinnedVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinnedVec<{}>({} values at {:#x})", std::any::type_name::<T>(), self.len, self.addr)
    }
}
