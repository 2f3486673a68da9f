//! Pinned host buffers and asynchronous copies, over host memory with a device whose copies stay
//! "in flight" until it is waited for: a write into a buffer a copy still reads must wait first,
//! a read from the device sees every copy queued before it, and values arrive intact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ringsam_kernels::alloc::RawAllocError;
use ringsam_kernels::{CopyDone, DeviceMemory, HostMemory, KernelError, RawMemory};

/// (destination, source, bytes) of each copy in flight, by address (all of it host memory here).
type Queue = Arc<Mutex<Vec<(usize, usize, usize)>>>;

/// Lands the first `n` copies queued, in order.
fn land(queue: &Queue, n: usize) {
    let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
    let n = n.min(q.len());
    for (dst, src, bytes) in q.drain(..n) {
        // SAFETY: queued by write_async or read_async, whose contracts keep both ranges alive
        // until the copy is waited for.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, bytes) };
    }
}

/// A read queued behind `ahead` other copies: waiting lands them and it.
struct DeferredRead {
    queue: Queue,
    dst: usize,
}

impl CopyDone for DeferredRead {
    fn is_done(&mut self) -> Result<bool, KernelError> {
        Ok(!self.queue.lock().unwrap().iter().any(|&(dst, _, _)| dst == self.dst))
    }
    fn wait(&mut self) -> Result<(), KernelError> {
        let at = self.queue.lock().unwrap().iter().position(|&(dst, _, _)| dst == self.dst);
        if let Some(i) = at {
            land(&self.queue, i + 1);
        }
        Ok(())
    }
}

/// Host memory whose asynchronous copies land only at the next `synchronize` (as a GPU's may),
/// counting the waits and the pinned blocks alive.
#[derive(Default)]
struct Deferred {
    host: HostMemory,
    queued: Queue, // copies not landed yet, in stream order
    waits: Arc<AtomicUsize>,
    pinned_alive: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl RawMemory for Deferred {
    fn alloc(&mut self, bytes: usize) -> Result<u64, RawAllocError> {
        self.host.alloc(bytes)
    }
    unsafe fn free(&mut self, addr: u64) {
        unsafe { self.host.free(addr) }
    }
    unsafe fn write(&mut self, addr: u64, src: &[u8]) -> Result<(), KernelError> {
        unsafe { self.host.write(addr, src) }
    }
    unsafe fn read(&mut self, addr: u64, dst: &mut [u8]) -> Result<(), KernelError> {
        self.synchronize()?; // a read waits for the stream
        unsafe { self.host.read(addr, dst) }
    }
    unsafe fn copy(&mut self, dst: u64, src: u64, bytes: usize) -> Result<(), KernelError> {
        unsafe { self.host.copy(dst, src, bytes) }
    }
    unsafe fn zero(&mut self, addr: u64, bytes: usize) -> Result<(), KernelError> {
        unsafe { self.host.zero(addr, bytes) }
    }
    fn alloc_pinned(&mut self, bytes: usize) -> Result<u64, RawAllocError> {
        self.pinned_alive.fetch_add(1, Ordering::SeqCst);
        self.host.alloc_pinned(bytes)
    }
    unsafe fn free_pinned(&mut self, addr: u64) {
        let busy = self.queued.lock().unwrap().iter().any(|&(dst, src, _)| dst as u64 == addr || src as u64 == addr);
        assert!(!busy, "pinned memory freed under a pending copy");
        self.pinned_alive.fetch_sub(1, Ordering::SeqCst);
        unsafe { self.host.free_pinned(addr) }
    }
    unsafe fn write_async(&mut self, addr: u64, src: &[u8]) -> Result<(), KernelError> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push("copy queued");
        self.queued.lock().unwrap().push((addr as usize, src.as_ptr() as usize, src.len()));
        Ok(())
    }
    unsafe fn read_async(&mut self, addr: u64, dst: &mut [u8]) -> Result<Box<dyn CopyDone>, KernelError> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push("read queued");
        self.queued.lock().unwrap().push((dst.as_mut_ptr() as usize, addr as usize, dst.len()));
        Ok(Box::new(DeferredRead { queue: self.queued.clone(), dst: dst.as_mut_ptr() as usize }))
    }
    fn synchronize(&mut self) -> Result<(), KernelError> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push("wait");
        self.waits.fetch_add(1, Ordering::SeqCst);
        land(&self.queued, usize::MAX);
        Ok(())
    }
}

#[test]
fn a_batch_copied_asynchronously_arrives_and_its_buffer_is_rewritten_only_after_a_wait() {
    let raw = Deferred::default();
    let (waits, alive, log) = (raw.waits.clone(), raw.pinned_alive.clone(), raw.log.clone());
    let mem = DeviceMemory::new(raw);
    let mut staged = mem.pinned::<f32>(1000).unwrap();
    let mut dev = mem.alloc::<f32>(1000).unwrap();
    for step in 0..3 {
        let values: Vec<f32> = (0..1000).map(|i| (step * 1000 + i) as f32).collect();
        staged.host_mut().unwrap().copy_from_slice(&values);
        dev.write_async(&mut staged).unwrap();
        assert!(staged.is_pending());
        assert_eq!(dev.download().unwrap(), values, "step {step}");
    }
    // Each download waits; each later host_mut waits again (the buffer cannot see the download's
    // wait: a second wait on an idle device is cheap, a missed one is a race).
    let expect = ["copy queued", "wait", "wait", "copy queued", "wait", "wait", "copy queued", "wait"];
    assert_eq!(*log.lock().unwrap(), expect);
    // A write right after a copy waits first.
    staged.host_mut().unwrap().fill(7.0);
    dev.write_async(&mut staged).unwrap();
    let before = waits.load(Ordering::SeqCst);
    staged.host_mut().unwrap()[0] = 8.0;
    assert_eq!(waits.load(Ordering::SeqCst), before + 1, "host_mut waited for the pending copy");
    assert!(!staged.is_pending());
    assert_eq!(dev.download().unwrap(), vec![7.0; 1000], "the copy read the values before the rewrite");
    // Dropping a buffer with a copy pending waits, then frees.
    dev.write_async(&mut staged).unwrap();
    drop(staged);
    assert_eq!(alive.load(Ordering::SeqCst), 0);
    assert_eq!(dev.download().unwrap()[0], 8.0);
}

#[test]
fn a_copy_of_the_wrong_length_is_refused_and_nothing_is_queued() {
    let raw = Deferred::default();
    let log = raw.log.clone();
    let mem = DeviceMemory::new(raw);
    let mut staged = mem.pinned::<u32>(10).unwrap();
    let mut dev = mem.alloc::<u32>(11).unwrap();
    let err = dev.write_async(&mut staged).unwrap_err();
    assert!(matches!(err, KernelError::Length { got: 10, want: 11, .. }), "{err}");
    assert!(!staged.is_pending());
    assert!(log.lock().unwrap().is_empty());
    let empty = mem.pinned::<f32>(0).unwrap();
    assert!(empty.is_empty() && empty.as_slice().is_empty());
}

#[test]
fn a_read_to_pinned_memory_sees_the_copies_queued_before_it_and_lands_when_waited_for() {
    let raw = Deferred::default();
    let waits = raw.waits.clone();
    let mem = DeviceMemory::new(raw);
    let dev = mem.zeros::<f32>(8).unwrap();
    let mut staged = mem.pinned::<f32>(3).unwrap();
    staged.host_mut().unwrap().copy_from_slice(&[1.0, 2.0, 3.0]);
    // Into part of the buffer (a bucket's results going back), then read that part out.
    mem.write_async_to(dev.buf().slice(4..7), &mut staged).unwrap();
    let mut bucket = mem.pinned::<f32>(4).unwrap();
    bucket.host_mut().unwrap().fill(-1.0);
    let mut pending = mem.read_async(dev.buf().slice(3..7), bucket).unwrap();
    assert!(!pending.is_done().unwrap(), "the read is queued behind the write");
    let bucket = pending.wait().unwrap();
    assert_eq!(bucket.as_slice(), [0.0, 1.0, 2.0, 3.0]);
    assert_eq!(waits.load(Ordering::SeqCst), 0, "waiting for a read does not wait for the whole device");
    // The bucket goes back to the device, and the next read into it lands after that copy has
    // read it: waiting for the read settles the bucket without waiting for the device.
    let mut bucket = bucket;
    mem.write_async_to(dev.buf().slice(0..4), &mut bucket).unwrap();
    assert!(bucket.is_pending());
    let bucket = mem.read_async(dev.buf().slice(4..8), bucket).unwrap().wait().unwrap();
    assert!(!bucket.is_pending());
    assert_eq!(bucket.as_slice(), [1.0, 2.0, 3.0, 0.0]);
    assert_eq!(waits.load(Ordering::SeqCst), 0);
    assert_eq!(dev.download().unwrap(), [0.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 0.0]);
    // Nothing to read is read at once (a zero-length pinned buffer has no memory to copy into).
    let empty = mem.read_async(dev.buf().slice(0..0), mem.pinned::<f32>(0).unwrap()).unwrap().wait().unwrap();
    assert!(empty.is_empty());
    // Lengths must match.
    let short = mem.pinned::<f32>(2).unwrap();
    let err = mem.read_async(dev.buf().slice(0..3), short).err().expect("a read of another length");
    assert!(matches!(err, KernelError::Length { got: 2, want: 3, .. }), "{err}");
    let err = mem.write_async_to(dev.buf().slice(0..2), &mut staged).unwrap_err();
    assert!(matches!(err, KernelError::Length { got: 3, want: 2, .. }), "{err}");
}
