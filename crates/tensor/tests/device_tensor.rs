//! Tensors on a device (the emulated one): copies both ways, buffers placed where their input
//! is and reused from step to step, and clear errors where host memory is asked of a device.

use ringsam_kernels_emu::emulated_gpu;
use ringsam_tensor::{Tensor, TensorError};

#[test]
fn a_tensor_goes_to_the_device_and_back_unchanged() {
    let gpu = emulated_gpu();
    let host = Tensor::from_vec(&[2, 3], vec![1.0, -2.0, 3.5, 0.0, 7.25, -1e-3]).unwrap();
    let dev = host.to_gpu(&gpu).unwrap();
    assert!(!dev.is_host() && dev.shape() == [2, 3] && dev.device_buf().unwrap().len() == 6);
    let copy = dev.try_clone().unwrap();
    assert_ne!(copy.device_buf().unwrap().addr(), dev.device_buf().unwrap().addr());
    assert_eq!(copy.to_host().unwrap().as_slice(), host.as_slice());
    assert_eq!(Tensor::zeros_on(&[4], &gpu).unwrap().to_host().unwrap().as_slice(), &[0.0; 4]);
}

#[test]
fn buffers_are_placed_like_their_input_and_reused() {
    let gpu = emulated_gpu();
    let x = Tensor::zeros_on(&[8, 4], &gpu).unwrap();
    let mut out = Tensor::empty();
    for _ in 0..3 {
        out.place_like(&[4, 8], &x).unwrap();
    }
    assert_eq!(out.gpu().map(|g| g.name()), Some("emulated GPU"));
    let s = gpu.memory().stats();
    assert_eq!((s.device_allocs, s.reuses), (2, 0), "x and out, once each: {s:?}");
    // A new size frees the old block before asking for the new one: the same class (512 B)
    // comes straight back from the cache.
    out.place_like(&[16], &x).unwrap();
    let s = gpu.memory().stats();
    assert_eq!((s.device_allocs, s.reuses, s.in_use), (2, 1, 1024), "{s:?}");
    // Placed like a host tensor, the buffer comes back to the host.
    out.place_like(&[3], &Tensor::empty()).unwrap();
    assert!(out.is_host() && out.len() == 3);
}

#[test]
fn host_memory_asked_of_a_device_tensor_is_a_named_error() {
    let dev = Tensor::zeros_on(&[2, 1, 2, 2], &emulated_gpu()).unwrap();
    let err = dev.to_nchw().unwrap_err();
    assert!(matches!(err, TensorError::Placement { op: "Tensor::to_nchw", .. }), "{err}");
    assert!(err.to_string().contains("on emulated GPU"), "{err}");
}

#[test]
#[should_panic(expected = "the tensor is on emulated GPU")]
fn the_unchecked_host_slice_of_a_device_tensor_panics_with_its_place() {
    let _ = Tensor::zeros_on(&[1], &emulated_gpu()).unwrap().as_slice();
}
