//! The device check's `engine` part on the emulated device, at the size CI affords: whole models
//! and the SAM step held to the CPU engine by the same code a GPU runs
//! (`ringsam selftest engine --device cuda`).

use ringsam_bench::engine::{self, EngineSize};
use ringsam_kernels::conv_library::ConvImpl;
use ringsam_kernels_emu::emulated_gpu;

#[test]
fn models_and_the_sam_step_on_the_emulated_device_agree_with_the_cpu() {
    let checks = engine::run(&emulated_gpu(), EngineSize::QUICK).unwrap();
    let report = engine::report(&checks);
    eprintln!("{report}");
    assert_eq!(checks.len(), 10, "{report}");
    assert!(checks.iter().all(engine::EngineCheck::passed), "{report}");
}

/// A whole model with its convolutions by the library (the host reference under emulation):
/// WideResNet mixes shapes the library fits with stride-2 ones it does not (asymmetric SAME
/// padding), all sharing one scratch buffer. (EfficientNet's depthwise convolutions by the
/// library agreed within 5.2e-8 too, but its pass costs ~35 s here: the kernel self-test's
/// depthwise case and `flat.rs`'s dispatch test keep that path checked in CI.)
#[test]
fn a_model_with_library_convolutions_agrees_with_the_cpu() {
    let gpu = emulated_gpu();
    gpu.launcher().set_conv_impl(ConvImpl::Library).unwrap();
    let check = engine::training_pass(&gpu, EngineSize::QUICK.wide_resnet, 3, EngineSize::QUICK, false, engine::Spread::Ulp).unwrap();
    let report = engine::report(std::slice::from_ref(&check));
    eprintln!("{report}");
    assert!(check.passed(), "{report}");
}

/// The BF16 pass leaves the device as it found it, library convolutions included: the library
/// refuses BF16, so precision must be set back before the convolution.
#[test]
fn the_bf16_pass_sets_the_device_back() {
    let gpu = emulated_gpu();
    gpu.launcher().set_conv_impl(ConvImpl::Library).unwrap();
    let check = engine::bf16_pass(&gpu, EngineSize::QUICK).unwrap();
    assert!(check.passed(), "{}", engine::report(std::slice::from_ref(&check)));
    let l = gpu.launcher();
    assert_eq!((l.conv_impl(), l.precision()), (ConvImpl::Library, ringsam_kernels::Precision::Fp32));
}
