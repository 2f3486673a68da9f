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
    assert_eq!(checks.len(), 9, "{report}");
    assert!(checks.iter().all(engine::EngineCheck::passed), "{report}");
}
