//! [`RawMemory`] on the host heap: what the emulated GPU's kernels read and write, and what the
//! allocator's tests count. An optional capacity makes "the device is full" testable.

use std::alloc::Layout;
use std::collections::HashMap;

use crate::alloc::{RawAllocError, RawMemory};
use crate::launch::KernelError;

/// Every block is aligned like a `cudaMalloc`'s (at least 256 bytes).
const ALIGN: usize = 256;

/// Host memory posing as a device's.
#[derive(Debug, Default)]
pub struct HostMemory {
    blocks: HashMap<u64, Layout>,
    pinned: HashMap<u64, Layout>,
    capacity: Option<usize>,
    used: usize,
}

impl HostMemory {
    /// Unbounded (the heap's own limit).
    pub fn new() -> Self {
        Self::default()
    }

    /// A device of `bytes` bytes: allocations past it are refused as out of memory.
    pub fn with_capacity(bytes: usize) -> Self {
        HostMemory { blocks: HashMap::new(), pinned: HashMap::new(), capacity: Some(bytes), used: 0 }
    }
}

// SAFETY: the blocks are plain heap memory owned by this value; no thread-bound state.
unsafe impl Send for HostMemory {}

impl RawMemory for HostMemory {
    fn alloc(&mut self, bytes: usize) -> Result<u64, RawAllocError> {
        if self.capacity.is_some_and(|cap| self.used + bytes > cap) {
            return Err(RawAllocError::OutOfMemory);
        }
        let layout = Layout::from_size_align(bytes.max(1), ALIGN).map_err(|e| RawAllocError::Driver(e.to_string()))?;
        // SAFETY: a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err(RawAllocError::OutOfMemory);
        }
        self.blocks.insert(ptr as u64, layout);
        self.used += bytes;
        Ok(ptr as u64)
    }

    unsafe fn free(&mut self, addr: u64) {
        if let Some(layout) = self.blocks.remove(&addr) {
            self.used -= layout.size();
            // SAFETY: allocated above with this layout and removed from the table: freed once.
            unsafe { std::alloc::dealloc(addr as *mut u8, layout) };
        }
    }

    unsafe fn write(&mut self, addr: u64, src: &[u8]) -> Result<(), KernelError> {
        // SAFETY: the caller's contract: `src.len()` allocated bytes at `addr`.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), addr as *mut u8, src.len()) };
        Ok(())
    }

    unsafe fn read(&mut self, addr: u64, dst: &mut [u8]) -> Result<(), KernelError> {
        // SAFETY: the caller's contract: `dst.len()` allocated bytes at `addr`.
        unsafe { std::ptr::copy_nonoverlapping(addr as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    unsafe fn copy(&mut self, dst: u64, src: u64, bytes: usize) -> Result<(), KernelError> {
        // SAFETY: the caller's contract: two allocated, disjoint ranges.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, bytes) };
        Ok(())
    }

    unsafe fn zero(&mut self, addr: u64, bytes: usize) -> Result<(), KernelError> {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::write_bytes(addr as *mut u8, 0, bytes) };
        Ok(())
    }

    fn alloc_pinned(&mut self, bytes: usize) -> Result<u64, RawAllocError> {
        // Host memory is what the emulation copies from anyway; pinned blocks do not count
        // against the device's capacity (they are the host's).
        let layout = Layout::from_size_align(bytes.max(1), ALIGN).map_err(|e| RawAllocError::Driver(e.to_string()))?;
        // SAFETY: a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err(RawAllocError::OutOfMemory);
        }
        self.pinned.insert(ptr as u64, layout);
        Ok(ptr as u64)
    }

    unsafe fn free_pinned(&mut self, addr: u64) {
        if let Some(layout) = self.pinned.remove(&addr) {
            // SAFETY: allocated by `alloc_pinned` with this layout, removed from the map once.
            unsafe { std::alloc::dealloc(addr as *mut u8, layout) };
        }
    }

    unsafe fn write_async(&mut self, addr: u64, src: &[u8]) -> Result<(), KernelError> {
        // Done at once: the emulation's stream has always finished.
        // SAFETY: the caller's contract, as `write`'s.
        unsafe { self.write(addr, src) }
    }

    fn synchronize(&mut self) -> Result<(), KernelError> {
        Ok(())
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        for (addr, layout) in self.blocks.drain().chain(self.pinned.drain()) {
            // SAFETY: each block was allocated with its layout and is freed once, here.
            unsafe { std::alloc::dealloc(addr as *mut u8, layout) };
        }
    }
}
