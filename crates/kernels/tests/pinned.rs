//! Pinned host buffers and asynchronous copies, over host memory with a device whose copies stay
//! "in flight" until it is waited for: a write into a buffer a copy still reads must wait first,
//! and values arrive intact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ringsam_kernels::alloc::RawAllocError;
use ringsam_kernels::{DeviceMemory, HostMemory, KernelError, RawMemory};

/// Host memory whose asynchronous copies land only at the next `synchronize` (as a GPU's may),
/// counting the waits and the pinned blocks alive.
#[derive(Default)]
struct Deferred {
    host: HostMemory,
    queued: Vec<(u64, usize, usize)>, // (destination, source address, bytes)
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
        assert!(self.queued.iter().all(|&(_, src, _)| src as u64 != addr), "pinned memory freed under a pending copy");
        self.pinned_alive.fetch_sub(1, Ordering::SeqCst);
        unsafe { self.host.free_pinned(addr) }
    }
    unsafe fn write_async(&mut self, addr: u64, src: &[u8]) -> Result<(), KernelError> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push("copy queued");
        self.queued.push((addr, src.as_ptr() as usize, src.len()));
        Ok(())
    }
    fn synchronize(&mut self) -> Result<(), KernelError> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).push("wait");
        self.waits.fetch_add(1, Ordering::SeqCst);
        for (dst, src, bytes) in self.queued.drain(..) {
            // SAFETY: queued by write_async, whose contract keeps both ranges alive until now.
            unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst as *mut u8, bytes) };
        }
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
