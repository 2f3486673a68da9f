//! The caching allocator over host memory: what a training step's pattern of buffers costs the
//! device, what a full device does, and that contents travel intact.

use ringsam_kernels::alloc::size_class;
use ringsam_kernels::{DeviceMemory, HostMemory, KernelError};

/// One "step": the sizes a small network's forward and backward ask for, dropped at its end.
fn step(mem: &DeviceMemory) -> Vec<ringsam_kernels::DeviceVec<f32>> {
    [64 * 32 * 32 * 16, 64 * 32 * 32 * 16, 64 * 16 * 16 * 32, 64 * 10, 3 * 3 * 16 * 32, 7, 0]
        .into_iter()
        .map(|n| mem.alloc::<f32>(n).unwrap())
        .collect()
}

#[test]
fn after_the_first_step_every_request_is_served_from_the_cache() {
    let mem = DeviceMemory::new(HostMemory::new());
    drop(step(&mem));
    let first = mem.stats();
    assert_eq!(first.device_allocs, 6, "the empty buffer takes no block: {first:?}");
    for _ in 0..5 {
        drop(step(&mem));
    }
    let later = mem.stats();
    assert_eq!(later.device_allocs, first.device_allocs, "{later:?}");
    assert_eq!(later.reuses, 5 * 6);
    assert_eq!(later.in_use, 0);
    assert_eq!(later.peak_reserved, first.peak_reserved);
    assert_eq!(later.reserved, first.reserved, "blocks stay cached");
}

#[test]
fn peaks_count_class_sizes_and_fall_back_with_drops() {
    let mem = DeviceMemory::new(HostMemory::new());
    let a = mem.alloc::<f32>(1000).unwrap(); // 4000 B → 4096
    let b = mem.alloc::<f64>(3).unwrap(); // 24 B → 512
    assert_eq!(mem.stats().in_use, size_class(4000) + size_class(24));
    drop(a);
    let s = mem.stats();
    assert_eq!((s.in_use, s.peak_in_use, s.reserved), (512, 4096 + 512, 4096 + 512));
    drop(b);
    mem.release_cached();
    assert_eq!(mem.stats().reserved, 0);
}

#[test]
fn values_round_trip_and_zeros_are_zero() {
    let mem = DeviceMemory::new(HostMemory::new());
    let host: Vec<f32> = (0..1234).map(|i| i as f32 * 0.5 - 7.0).collect();
    let v = mem.upload(&host).unwrap();
    assert_eq!(v.download().unwrap(), host);
    drop(v);
    // The same block comes back holding the old values; zeros must clear them.
    let z = mem.zeros::<f32>(1234).unwrap();
    assert_eq!(mem.stats().reuses, 1);
    assert!(z.download().unwrap().iter().all(|&x| x == 0.0));
    let dup = z.duplicate().unwrap();
    assert_eq!(dup.download().unwrap(), vec![0.0; 1234]);
    let mut w = mem.alloc::<u32>(3).unwrap();
    assert!(matches!(w.write(&[1, 2]), Err(KernelError::Length { got: 2, want: 3, .. })));
    w.write(&[1, 2, 3]).unwrap();
    assert_eq!(w.download().unwrap(), vec![1, 2, 3]);
}

#[test]
fn a_full_device_first_gets_the_cache_back_then_a_clear_error() {
    let mem = DeviceMemory::new(HostMemory::with_capacity(3 << 20));
    let big = mem.alloc::<f32>(512 * 1024).unwrap(); // 2 MiB
    drop(big); // cached
    // 1.5 MiB does not fit beside the cached 2 MiB: the cache is flushed and the request served.
    let c = mem.alloc::<f32>(384 * 1024).unwrap();
    let s = mem.stats();
    assert_eq!((s.flushes, s.reserved), (1, 3 << 19), "{s:?}");
    // Another 2 MiB cannot fit at all: the error names the request and what is held.
    let err = mem.alloc::<f32>(512 * 1024).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("allocating 2097152 bytes") && text.contains("1572864 in use") && text.contains("out of device memory"),
        "{text}"
    );
    drop(c);
}
