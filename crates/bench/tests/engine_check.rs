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

/// Whole models with their convolutions by the library (the host reference under emulation):
/// WideResNet mixes shapes the library fits with stride-2 ones it does not (asymmetric SAME
/// padding), all sharing one scratch buffer; EfficientNet's stride-1 depthwise convolutions go
/// to it as grouped ones, its stride-2 ones stay on the depthwise kernels.
#[test]
fn models_with_library_convolutions_agree_with_the_cpu() {
    let gpu = emulated_gpu();
    gpu.launcher().set_conv_impl(ConvImpl::Library).unwrap();
    let size = EngineSize::QUICK;
    let checks = [(size.wide_resnet, false), (size.efficient_net, true)]
        .map(|(model, frozen_bn)| engine::training_pass(&gpu, model, 3, size, frozen_bn, engine::Spread::Ulp).unwrap());
    let report = engine::report(&checks);
    eprintln!("{report}");
    assert!(checks.iter().all(engine::EngineCheck::passed), "{report}");
}
