//! `ringsam selftest`: the GPU engine checked against the CPU engine, on the GPU in hand. The
//! device check (scripts/device_check.sh) runs it; the same checks run under emulation in CI
//! (crates/kernels-emu), so a GPU run only adds what needs the GPU.

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::process::usage;

/// `ringsam selftest …`.
#[derive(Subcommand, Debug)]
pub enum SelftestCommand {
    /// The CUDA kernels (the optimizers and SAM, norms, activations, the loss, dropout, batch
    /// norm, pooling, im2col, the dense bias, per-example scaling, error counts, cuBLAS's SGEMM as
    /// the engine calls it, convolutions through GEMM, the dense layer, the caching allocator)
    /// against the CPU engine: bitwise where the arithmetic allows, 1e-6 where the GPU's exp
    /// rounds differently, 1e-5 for batch norm and GEMMs, norms to 1e-12; with device timings.
    Kernels(SelftestKernelsArgs),
}

/// `ringsam selftest kernels`.
#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct SelftestKernelsArgs {
    /// The GPU: cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Elements per buffer (WRN-28-10 has 36.5 M parameters); 1 to 2^28.
    #[arg(long, default_value_t = 1 << 24, value_parser = clap::value_parser!(u64).range(1..=1 << 28))]
    pub elements: u64,
}

/// Runs the kernel self-test; fails (exit 1) when any check disagrees with the CPU engine.
pub fn cmd_selftest_kernels(args: &SelftestKernelsArgs) -> Result<()> {
    let device: ringsam_tensor::Device = args.device.parse().map_err(|e| usage(format!("--device: {e}")))?;
    run_on(device, args.elements as usize)
}

#[cfg(feature = "cuda")]
fn run_on(device: ringsam_tensor::Device, elements: usize) -> Result<()> {
    use anyhow::Context;
    let ringsam_tensor::Device::Cuda(ordinal) = device else {
        return Err(usage("selftest kernels checks a GPU: give --device cuda or cuda:N"));
    };
    device.probe()?;
    let mut gpu = ringsam_kernels::device::CudaLauncher::new(ordinal).context("loading the kernels")?;
    eprintln!("selftest kernels: {} ({elements} elements per buffer)", gpu.device_name());
    let cpu = ringsam_bench::kernels::cpu_reference();
    let mut checks = ringsam_kernels::selftest::run(&mut gpu, elements, &cpu).context("running the checks")?;
    let memory = ringsam_kernels::DeviceMemory::new(gpu.memory());
    checks.push(ringsam_kernels::selftest::memory(&memory, elements).context("checking device memory")?);
    print!("{}", ringsam_kernels::selftest::report(&checks));
    let failed = checks.iter().filter(|c| !c.passed()).count();
    anyhow::ensure!(failed == 0, "{failed} of {} kernel checks disagree with the CPU engine", checks.len());
    println!("selftest kernels: all {} checks agree with the CPU engine", checks.len());
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn run_on(_device: ringsam_tensor::Device, _elements: usize) -> Result<()> {
    Err(usage("selftest kernels needs a GPU: this ringsam was built without --features cuda"))
}
