//! Device memory as the engine uses it: one caching allocator per device, so that a training step
//! asks the driver for nothing once the first step has run.
//!
//! Why a cache: `cudaMalloc` and `cudaFree` cost tens of microseconds to milliseconds and `cudaFree`
//! synchronizes the device, while a step makes and drops hundreds of activation buffers. PyTorch's
//! allocator keeps freed blocks for reuse; this one does the same in the simplest form that fits a
//! trainer whose steps repeat the same shapes:
//! - a request is rounded up to its *class* ([`size_class`]: multiples of 512 B up to 1 MiB, above
//!   that multiples of an eighth of the size's power of two, so rounding wastes at most 12.5 %);
//!   a dropped block waits in its class's free list, and a request takes a cached block of its
//!   class before asking the device for a new one;
//! - blocks are never split or merged: from the second step on, a training loop asks for the
//!   classes it asked for before, so every request is a hit (the tests count the device's
//!   allocations to check it);
//! - when the device refuses an allocation, every cached block is given back to it and the request
//!   is tried once more; if that fails too, the error says what was asked for, what is in use and
//!   what had been cached;
//! - one stream for kernels and copies to the device: a block dropped on the host may be handed
//!   out again at once, because its next use is a launch on the same stream, ordered after every
//!   launch that used it before (PyTorch needs `record_stream` only for blocks shared across
//!   streams). The one exception, [`DeviceMemory::read_async`]'s side stream, is the caller's to
//!   wait for before the block it reads is written or dropped (a gradient bucket's copy out:
//!   the step waits for every one before anything writes the gradient again).

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::launch::{Buf, Elem, KernelError};
pub use crate::pinned::PinnedVec;

/// Largest class counted in 512-byte steps.
const SMALL_LIMIT: usize = 1 << 20;
/// The granularity of small classes (and the alignment every block has at least).
const SMALL_STEP: usize = 512;

/// The class a request of `bytes` is served from: the size of the block it gets.
pub fn size_class(bytes: usize) -> usize {
    if bytes <= SMALL_LIMIT {
        return bytes.max(1).div_ceil(SMALL_STEP) * SMALL_STEP;
    }
    // An eighth of the largest power of two not above `bytes`: at most 12.5 % rounding.
    let step = (1usize << (usize::BITS - 1 - bytes.leading_zeros())) / 8;
    bytes.div_ceil(step) * step
}

/// Why the device did not allocate.
#[derive(Debug)]
pub enum RawAllocError {
    /// It has no room.
    OutOfMemory,
    /// Anything else the driver said.
    Driver(String),
}

/// Memory as a device provides it: the driver's `cuMemAlloc` family on a GPU, the heap under
/// emulation ([`crate::host_memory::HostMemory`]). Addresses are what kernels are given.
pub trait RawMemory: Send {
    /// `bytes` new bytes (`bytes > 0`), aligned to at least 256.
    fn alloc(&mut self, bytes: usize) -> Result<u64, RawAllocError>;
    /// Gives `addr` back to the device.
    ///
    /// # Safety
    /// `addr` came from `alloc` and has not been freed; no launch still to run uses it.
    unsafe fn free(&mut self, addr: u64);
    /// Copies `src` to `addr`, after every launch before it.
    ///
    /// # Safety
    /// `addr` starts at least `src.len()` allocated bytes.
    unsafe fn write(&mut self, addr: u64, src: &[u8]) -> Result<(), KernelError>;
    /// Copies `dst.len()` bytes from `addr` into `dst`, after every launch before it.
    ///
    /// # Safety
    /// `addr` starts at least `dst.len()` allocated bytes.
    unsafe fn read(&mut self, addr: u64, dst: &mut [u8]) -> Result<(), KernelError>;
    /// Copies `bytes` bytes from `src` to `dst` on the device, in stream order.
    ///
    /// # Safety
    /// Both start at least `bytes` allocated bytes, and the ranges do not overlap.
    unsafe fn copy(&mut self, dst: u64, src: u64, bytes: usize) -> Result<(), KernelError>;
    /// Sets `bytes` bytes at `addr` to zero, in stream order.
    ///
    /// # Safety
    /// `addr` starts at least `bytes` allocated bytes.
    unsafe fn zero(&mut self, addr: u64, bytes: usize) -> Result<(), KernelError>;
    /// `bytes` bytes of host memory the device copies from directly (page-locked on a GPU), for
    /// [`RawMemory::write_async`].
    fn alloc_pinned(&mut self, bytes: usize) -> Result<u64, RawAllocError>;
    /// Gives pinned memory back.
    ///
    /// # Safety
    /// `addr` came from `alloc_pinned`, and no copy from it is pending (`synchronize` since).
    unsafe fn free_pinned(&mut self, addr: u64);
    /// Copies `src` (pinned memory) to `addr` in stream order, returning before the copy is done.
    ///
    /// # Safety
    /// `addr` starts at least `src.len()` allocated bytes; `src` lies in memory from
    /// `alloc_pinned` and is neither written nor freed until `synchronize` has returned.
    unsafe fn write_async(&mut self, addr: u64, src: &[u8]) -> Result<(), KernelError>;
    /// Waits until every copy and launch so far has finished.
    fn synchronize(&mut self) -> Result<(), KernelError>;
    /// Copies `dst.len()` bytes at `addr` into `dst` (pinned memory) once every launch and copy
    /// queued so far has finished, on a side stream that later launches do not wait for (a GPU's
    /// backward goes on while a gradient bucket leaves), and returns before the copy is done.
    /// The default copies at once: right for a device whose stream has always finished.
    ///
    /// # Safety
    /// `addr` starts at least `dst.len()` allocated bytes; `dst` lies in memory from
    /// `alloc_pinned` and is neither read, written nor freed until the returned handle says the
    /// copy is done.
    unsafe fn read_async(&mut self, addr: u64, dst: &mut [u8]) -> Result<Box<dyn CopyDone>, KernelError> {
        // SAFETY: the caller's contract, as `read`'s.
        unsafe { self.read(addr, dst) }?;
        Ok(Box::new(Finished))
    }
}

/// A copy [`RawMemory::read_async`] started.
pub trait CopyDone: Send {
    /// Whether it has finished, without waiting.
    fn is_done(&mut self) -> Result<bool, KernelError>;
    /// Waits until it has finished.
    fn wait(&mut self) -> Result<(), KernelError>;
}

/// A copy that finished before its handle was made.
struct Finished;

impl CopyDone for Finished {
    fn is_done(&mut self) -> Result<bool, KernelError> {
        Ok(true)
    }

    fn wait(&mut self) -> Result<(), KernelError> {
        Ok(())
    }
}

/// What the allocator has done, for `bench step`'s memory report and the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes of blocks held by buffers now (class sizes, so rounding counts).
    pub in_use: usize,
    /// The most `in_use` has been.
    pub peak_in_use: usize,
    /// Bytes taken from the device now: in use plus cached.
    pub reserved: usize,
    /// The most `reserved` has been: the device memory the run needed.
    pub peak_reserved: usize,
    /// Allocations asked of the device.
    pub device_allocs: u64,
    /// Requests served from the cache.
    pub reuses: u64,
    /// Times the cache was emptied because the device was full.
    pub flushes: u64,
}

/// The cache and the device behind it; buffers hold it through an `Arc` and give their block back
/// when dropped.
pub(crate) struct Pool {
    pub(crate) raw: Box<dyn RawMemory>,
    free: BTreeMap<usize, Vec<u64>>,
    stats: MemoryStats,
}

impl Pool {
    fn take(&mut self, bytes: usize) -> Result<(u64, usize), KernelError> {
        let class = size_class(bytes);
        if let Some(addr) = self.free.get_mut(&class).and_then(Vec::pop) {
            self.stats.reuses += 1;
            return Ok(self.in_use(addr, class, false));
        }
        let addr = match self.raw.alloc(class) {
            Ok(addr) => addr,
            Err(RawAllocError::OutOfMemory) => {
                let cached = self.stats.reserved - self.stats.in_use;
                self.release_cached();
                self.stats.flushes += 1;
                self.raw.alloc(class).map_err(|e| self.refused(bytes, cached, e))?
            }
            Err(e) => return Err(self.refused(bytes, 0, e)),
        };
        self.stats.device_allocs += 1;
        Ok(self.in_use(addr, class, true))
    }

    fn in_use(&mut self, addr: u64, class: usize, new: bool) -> (u64, usize) {
        let s = &mut self.stats;
        s.in_use += class;
        s.peak_in_use = s.peak_in_use.max(s.in_use);
        if new {
            s.reserved += class;
            s.peak_reserved = s.peak_reserved.max(s.reserved);
        }
        (addr, class)
    }

    fn refused(&self, bytes: usize, cached: usize, e: RawAllocError) -> KernelError {
        let why = match e {
            RawAllocError::OutOfMemory => "out of device memory".to_string(),
            RawAllocError::Driver(why) => why,
        };
        KernelError::Alloc { bytes, in_use: self.stats.in_use, cached, why }
    }

    fn give_back(&mut self, addr: u64, class: usize) {
        self.stats.in_use -= class;
        self.free.entry(class).or_default().push(addr);
    }

    fn release_cached(&mut self) {
        for (class, addrs) in std::mem::take(&mut self.free) {
            for addr in addrs {
                // SAFETY: a cached block: allocated here, held by no buffer; any launch that used
                // it was enqueued before this call, and any side-stream read of it waited for
                // (see the module docs).
                unsafe { self.raw.free(addr) };
                self.stats.reserved -= class;
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Every buffer holds the pool, so only cached blocks are left.
        self.release_cached();
    }
}

pub(crate) fn lock(pool: &Mutex<Pool>) -> MutexGuard<'_, Pool> {
    // The pool's updates cannot panic halfway (no allocation or callback between their steps).
    pool.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One device's memory: a handle to its caching allocator. Cloning shares it.
#[derive(Clone)]
pub struct DeviceMemory {
    pool: Arc<Mutex<Pool>>,
}

impl DeviceMemory {
    /// The allocator over `raw`.
    pub fn new(raw: impl RawMemory + 'static) -> Self {
        let pool = Pool { raw: Box::new(raw), free: BTreeMap::new(), stats: MemoryStats::default() };
        DeviceMemory { pool: Arc::new(Mutex::new(pool)) }
    }

    /// A buffer of `len` values whose contents are whatever the block held before: for outputs a
    /// kernel writes whole.
    pub fn alloc<T: Elem>(&self, len: usize) -> Result<DeviceVec<T>, KernelError> {
        let bytes = len.checked_mul(size_of::<T>()).ok_or(KernelError::Alloc {
            bytes: usize::MAX,
            in_use: 0,
            cached: 0,
            why: format!("{len} values do not fit the address space"),
        })?;
        let (addr, class) = if bytes == 0 { (0, 0) } else { lock(&self.pool).take(bytes)? };
        Ok(DeviceVec { addr, len, class, pool: self.pool.clone(), elem: PhantomData })
    }

    /// A buffer of `len` zeros.
    pub fn zeros<T: Elem>(&self, len: usize) -> Result<DeviceVec<T>, KernelError> {
        let v = self.alloc(len)?;
        // SAFETY: the buffer's own block, at least its byte length.
        unsafe { lock(&self.pool).raw.zero(v.addr, v.bytes()) }?;
        Ok(v)
    }

    /// A buffer holding a copy of `host`.
    pub fn upload<T: Elem>(&self, host: &[T]) -> Result<DeviceVec<T>, KernelError> {
        let mut v = self.alloc(host.len())?;
        v.write(host)?;
        Ok(v)
    }

    /// A pinned host buffer of `len` values ([`PinnedVec`]): what batches are copied in from.
    pub fn pinned<T: Elem>(&self, len: usize) -> Result<PinnedVec<T>, KernelError> {
        PinnedVec::new(self.pool.clone(), len)
    }

    /// Starts copying the device values at `src` into `dst` (pinned, of the same length) after
    /// everything queued so far, on a side stream that later launches do not wait for
    /// ([`RawMemory::read_async`]); `dst` comes back, filled, from [`PendingRead::wait`]. The
    /// caller queues nothing that writes `src` before that wait (the values read would be
    /// undefined; host memory is safe either way, as `dst` is held until then).
    pub fn read_async<T: Elem>(&self, src: Buf<T>, mut dst: PinnedVec<T>) -> Result<PendingRead<T>, KernelError> {
        if src.len() != dst.len() {
            return Err(KernelError::Length { op: "DeviceMemory::read_async", got: dst.len(), want: src.len() });
        }
        if src.is_empty() {
            return Ok(PendingRead { dst: Some(dst), done: Box::new(Finished) });
        }
        let bytes = src.len() * size_of::<T>();
        // SAFETY: `src` is a live device buffer of `bytes` bytes (the Buf contract); `dst` is
        // pinned memory of the same size, held by the PendingRead until the copy is done.
        let done = unsafe {
            let dst_bytes = std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), bytes);
            lock(&self.pool).raw.read_async(src.addr(), dst_bytes)
        };
        match done {
            Ok(done) => Ok(PendingRead { dst: Some(dst), done }),
            Err(e) => {
                // The copy may have been queued before the failure: `dst` is leaked rather than
                // freed under it (a driver error, not a path a run takes).
                std::mem::forget(dst);
                Err(e)
            }
        }
    }

    /// Copies `src` (pinned, of `dst`'s length) into the device values at `dst`, in stream order,
    /// without waiting: [`DeviceVec::write_async`] for part of a buffer.
    pub fn write_async_to<T: Elem>(&self, dst: Buf<T>, src: &mut PinnedVec<T>) -> Result<(), KernelError> {
        if src.len() != dst.len() {
            return Err(KernelError::Length { op: "DeviceMemory::write_async_to", got: src.len(), want: dst.len() });
        }
        if dst.is_empty() {
            return Ok(());
        }
        src.mark_pending();
        // SAFETY: `dst` is a live device buffer (the Buf contract); `src` is pinned memory of
        // its length, marked pending, so neither written nor freed before a `synchronize`.
        unsafe { lock(&self.pool).raw.write_async(dst.addr(), as_bytes(src.as_slice())) }
    }

    /// What the allocator has done so far.
    pub fn stats(&self) -> MemoryStats {
        lock(&self.pool).stats
    }

    /// Gives every cached block back to the device (between runs; the allocator does it by
    /// itself when the device is full).
    pub fn release_cached(&self) {
        lock(&self.pool).release_cached();
    }
}

/// A copy from the device into pinned memory, running ([`DeviceMemory::read_async`]). Dropped
/// unwaited, it waits: the pinned buffer is not freed under the copy.
pub struct PendingRead<T: Elem> {
    dst: Option<PinnedVec<T>>, // taken by `wait`
    done: Box<dyn CopyDone>,
}

impl<T: Elem> PendingRead<T> {
    /// Whether the values are in, without waiting.
    pub fn is_done(&mut self) -> Result<bool, KernelError> {
        self.done.is_done()
    }

    /// Waits for the copy; the pinned buffer comes back holding the values.
    pub fn wait(mut self) -> Result<PinnedVec<T>, KernelError> {
        self.done.wait()?;
        let mut dst = self.dst.take().expect("taken only here");
        // SAFETY: the read was queued after every copy from `dst` before it (it waits for the
        // stream they run on), so now that it is done, so are they.
        unsafe { dst.assume_copied() };
        Ok(dst)
    }
}

impl<T: Elem> Drop for PendingRead<T> {
    fn drop(&mut self) {
        if let Some(mut dst) = self.dst.take() {
            match self.done.wait() {
                // SAFETY: as in `wait`: the copies from `dst` ran before this one.
                Ok(()) => unsafe { dst.assume_copied() },
                // The copy may still be writing it: leaked rather than freed under it.
                Err(_) => std::mem::forget(dst),
            }
        }
    }
}

/// `len` values of `T` in device memory, from a [`DeviceMemory`]; dropping it returns the block
/// to the cache.
pub struct DeviceVec<T: Elem> {
    addr: u64,
    len: usize,
    class: usize,
    pool: Arc<Mutex<Pool>>,
    elem: PhantomData<T>,
}

impl<T: Elem> DeviceVec<T> {
    /// Its values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn bytes(&self) -> usize {
        self.len * size_of::<T>()
    }

    /// The buffer as a kernel argument. It stays valid while `self` lives.
    pub fn buf(&self) -> Buf<T> {
        // SAFETY: our block holds `len` values for as long as `self` lives; kernels given the
        // Buf run in stream order before any reuse of the block (see the module docs).
        unsafe { Buf::new(self.addr, self.len) }
    }

    /// Copies `host` (of the buffer's length) in.
    pub fn write(&mut self, host: &[T]) -> Result<(), KernelError> {
        if host.len() != self.len {
            return Err(KernelError::Length { op: "DeviceVec::write", got: host.len(), want: self.len });
        }
        if self.len == 0 {
            return Ok(());
        }
        // SAFETY: Elem is plain old data; the block holds `len` values.
        unsafe { lock(&self.pool).raw.write(self.addr, as_bytes(host)) }
    }

    /// Copies `src` (of the buffer's length) in, in stream order, without waiting for the copy:
    /// the host goes on launching while it runs. `src` stays unwritable until it has finished
    /// ([`PinnedVec::host_mut`] waits).
    pub fn write_async(&mut self, src: &mut PinnedVec<T>) -> Result<(), KernelError> {
        if src.len() != self.len {
            return Err(KernelError::Length { op: "DeviceVec::write_async", got: src.len(), want: self.len });
        }
        if self.len == 0 {
            return Ok(());
        }
        src.mark_pending();
        // SAFETY: the block holds `len` values; `src` is pinned memory of the same length, and
        // marked pending, so it is neither written nor freed before a `synchronize`.
        unsafe { lock(&self.pool).raw.write_async(self.addr, as_bytes(src.as_slice())) }
    }

    /// Copies the values out, after every launch before this call.
    pub fn download(&self) -> Result<Vec<T>, KernelError> {
        let mut host = vec![T::default(); self.len];
        if self.len > 0 {
            // SAFETY: as in `write`.
            unsafe { lock(&self.pool).raw.read(self.addr, as_bytes_mut(&mut host)) }?;
        }
        Ok(host)
    }

    /// A new buffer holding a copy of this one, copied on the device.
    pub fn duplicate(&self) -> Result<DeviceVec<T>, KernelError> {
        let copy = DeviceMemory { pool: self.pool.clone() }.alloc::<T>(self.len)?;
        if self.len > 0 {
            // SAFETY: two distinct live blocks of `bytes()` bytes each.
            unsafe { lock(&self.pool).raw.copy(copy.addr, self.addr, self.bytes()) }?;
        }
        Ok(copy)
    }

    /// Sets every value to zero, in stream order.
    pub fn fill_zero(&mut self) -> Result<(), KernelError> {
        if self.len == 0 {
            return Ok(());
        }
        // SAFETY: our block, at least `bytes()` long.
        unsafe { lock(&self.pool).raw.zero(self.addr, self.bytes()) }
    }
}

impl<T: Elem> Drop for DeviceVec<T> {
    fn drop(&mut self) {
        if self.class > 0 {
            lock(&self.pool).give_back(self.addr, self.class);
        }
    }
}

impl<T: Elem> std::fmt::Debug for DeviceVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceVec<{}>({} values at {:#x})", std::any::type_name::<T>(), self.len, self.addr)
    }
}

pub(crate) fn as_bytes<T: Elem>(v: &[T]) -> &[u8] {
    // SAFETY: Elem is plain old data without padding (its safety contract).
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

fn as_bytes_mut<T: Elem>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; every bit pattern is a valid T.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn classes_round_up_by_at_most_an_eighth_above_a_mebibyte() {
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(512), 512);
        assert_eq!(size_class(513), 1024);
        assert_eq!(size_class(1 << 20), 1 << 20);
        assert_eq!(size_class((1 << 20) + 1), (1 << 20) + (1 << 17));
        for bytes in [(1 << 20) + 1, 3 << 20, 100_000_000, (1 << 30) + 7] {
            let class = size_class(bytes);
            assert!(class >= bytes && class - bytes <= bytes / 8, "{bytes} → {class}");
            assert_eq!(size_class(class), class, "a class is its own class");
        }
    }
}
