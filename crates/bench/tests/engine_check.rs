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
    assert_eq!(checks.len(), 9, "{report}");
    assert!(checks.iter().all(engine::EngineCheck::passed), "{report}");
}

/// A whole model with its convolutions by the library (the host reference under emulation):
/// WideResNet mixes shapes the library fits with stride-2 ones it does not (asymmetric SAME
/// padding), all sharing one scratch buffer.
#[test]
fn a_model_with_library_convolutions_agrees_with_the_cpu() {
    let gpu = emulated_gpu();
    gpu.launcher().set_conv_impl(ConvImpl::Library).unwrap();
    let check = engine::training_pass(&gpu, EngineSize::QUICK.wide_resnet, 3, EngineSize::QUICK, false).unwrap();
    let report = engine::report(std::slice::from_ref(&check));
    eprintln!("{report}");
    assert!(check.passed(), "{report}");
}
