//! What only a GPU can run, as tests: the kernel self-test and the engine check on CUDA device 0.
//! Compiled whenever `--features cuda` is (CI builds and runs this file without a GPU); without
//! one, each test says how many CUDA checks it skipped and why, so a run never passes silently
//! for lack of a device. The device check (`scripts/device_check.sh`) runs the same checks at
//! full size from the binary.
#![cfg(feature = "cuda")]

use ringsam_bench::engine::{self, EngineSize};
use ringsam_kernels::{Gpu, Precision};
use ringsam_tensor::Device;

/// The GPU, or why there is none (printed as the skip's reason).
fn gpu() -> Result<usize, String> {
    let device: Device = "cuda".parse().map_err(|e| format!("{e}"))?;
    device.probe().map_err(|e| e.to_string())?;
    Ok(0)
}

#[test]
fn the_kernels_agree_with_the_cpu_engine_on_the_gpu() {
    let ordinal = match gpu() {
        Ok(o) => o,
        Err(why) => return eprintln!("1 CUDA test skipped (kernel self-test): no GPU: {why}"),
    };
    let mut launcher = ringsam_kernels::device::CudaLauncher::new(ordinal, Precision::Fp32).unwrap();
    let checks = ringsam_kernels::selftest::run(&mut launcher, 1 << 16, &ringsam_bench::kernels::cpu_reference()).unwrap();
    let report = ringsam_kernels::selftest::report(&checks);
    assert!(checks.iter().all(ringsam_kernels::selftest::Check::passed), "{report}");
}

#[test]
fn models_and_the_step_agree_with_the_cpu_engine_on_the_gpu() {
    let ordinal = match gpu() {
        Ok(o) => o,
        Err(why) => return eprintln!("1 CUDA test skipped (engine check): no GPU: {why}"),
    };
    let checks = engine::run(&Gpu::cuda(ordinal, Precision::Fp32).unwrap(), EngineSize::QUICK).unwrap();
    let report = engine::report(&checks);
    assert!(checks.iter().all(engine::EngineCheck::passed), "{report}");
}
