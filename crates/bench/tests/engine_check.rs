//! The device check's `engine` part on the emulated device, at the size CI affords: whole models
//! and the SAM step held to the CPU engine by the same code a GPU runs
//! (`ringsam selftest engine --device cuda`).

use ringsam_bench::engine::{self, EngineSize};
use ringsam_kernels_emu::emulated_gpu;

#[test]
fn models_and_the_sam_step_on_the_emulated_device_agree_with_the_cpu() {
    let checks = engine::run(&emulated_gpu(), EngineSize::QUICK).unwrap();
    let report = engine::report(&checks);
    eprintln!("{report}");
    assert_eq!(checks.len(), 8, "{report}");
    assert!(checks.iter().all(engine::EngineCheck::passed), "{report}");
}

#[test]
fn a_model_with_a_layer_not_yet_on_the_device_is_refused_naming_it() {
    use ringsam_models::{ModelConfig, build};
    use ringsam_nn::Pass;
    use ringsam_tensor::Tensor;
    let gpu = emulated_gpu();
    let mut m = build("efficientnet-test", &ModelConfig { num_classes: 10, in_channels: 3 }).unwrap();
    let p = Tensor::zeros_on(&[m.layout().total()], &gpu).unwrap();
    let mut s = Tensor::zeros_on(&[m.state_layout().total()], &gpu).unwrap();
    let x = Tensor::zeros_on(&[3, 1, 64, 64], &gpu).unwrap();
    let err = m.forward(&p, &mut s, &x, &Pass::eval()).unwrap_err().to_string();
    assert!(err.contains("layer MBConvBlock") && err.contains("not implemented on CUDA yet"), "{err}");
}
