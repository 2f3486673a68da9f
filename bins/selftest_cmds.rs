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
    /// The engine on a GPU against the CPU engine: whole models' training passes (logits, every
    /// gradient, batch-norm statistics) and the SAM step, within 1e-4 of max(|value|, 1), TF32 off.
    Engine(SelftestEngineArgs),
}

/// `ringsam selftest engine`.
#[derive(Args, Debug)]
#[command(rename_all = "snake_case")]
pub struct SelftestEngineArgs {
    /// The GPU: cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// full: WideResnet16x2 at 32×32, batch 32, 3 SAM steps (the device check's); quick: what CI
    /// runs under emulation.
    #[arg(long, default_value = "full", value_parser = ["full", "quick"])]
    pub size: String,
    /// The GPU's convolutions: gemm (im2col and cuBLAS; the default, checked on a GPU) or cudnn
    /// (not yet run on a GPU).
    #[arg(long, value_name = "IMPL")]
    pub conv_impl: Option<String>,
}

/// Runs the engine self-test; fails (exit 1) when a check disagrees with the CPU engine.
pub fn cmd_selftest_engine(args: &SelftestEngineArgs) -> Result<()> {
    let device: ringsam_tensor::Device = args.device.parse().map_err(|e| usage(format!("--device: {e}")))?;
    let size = if args.size == "quick" { ringsam_bench::engine::EngineSize::QUICK } else { ringsam_bench::engine::EngineSize::FULL };
    let conv_impl = crate::train_args::conv_impl_for(&args.device, args.conv_impl.as_deref())?;
    engine_on(device, size, conv_impl)
}

#[cfg(feature = "cuda")]
fn engine_on(
    device: ringsam_tensor::Device,
    size: ringsam_bench::engine::EngineSize,
    conv_impl: Option<ringsam_kernels::conv_library::ConvImpl>,
) -> Result<()> {
    use anyhow::Context;
    let ringsam_tensor::Device::Cuda(ordinal) = device else {
        return Err(usage("selftest engine checks a GPU: give --device cuda or cuda:N"));
    };
    device.probe()?;
    let gpu = ringsam_kernels::Gpu::cuda(ordinal, ringsam_kernels::Precision::Fp32).context("loading the kernels")?;
    if let Some(imp) = conv_impl {
        gpu.launcher().set_conv_impl(imp).with_context(|| format!("--conv_impl {imp}"))?;
    }
    eprintln!("selftest engine: {} ({size:?}), convolutions {}", gpu.name(), gpu.launcher().conv_impl());
    let checks = ringsam_bench::engine::run(&gpu, size).map_err(anyhow::Error::msg)?;
    print!("{}", ringsam_bench::engine::report(&checks));
    for refused in gpu.launcher().library_refusals() {
        println!("by im2col, refused by the convolution library: {refused}");
    }
    let m = gpu.memory().stats();
    println!(
        "device memory: peak in use {:.1} MB, peak reserved {:.1} MB, {} device allocations",
        m.peak_in_use as f64 / 1e6,
        m.peak_reserved as f64 / 1e6,
        m.device_allocs
    );
    let failed = checks.iter().filter(|c| !c.passed()).count();
    anyhow::ensure!(failed == 0, "{failed} of {} engine checks disagree with the CPU engine", checks.len());
    println!("selftest engine: all {} checks agree with the CPU engine", checks.len());
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn engine_on(
    _device: ringsam_tensor::Device,
    _size: ringsam_bench::engine::EngineSize,
    _conv_impl: Option<ringsam_kernels::conv_library::ConvImpl>,
) -> Result<()> {
    Err(usage("selftest engine needs a GPU: this ringsam was built without --features cuda"))
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
    let mut gpu = ringsam_kernels::device::CudaLauncher::new(ordinal, ringsam_kernels::Precision::Fp32).context("loading the kernels")?;
    eprintln!("selftest kernels: {} ({elements} elements per buffer)", gpu.device_name());
    let cpu = ringsam_bench::kernels::cpu_reference();
    let mut checks = ringsam_kernels::selftest::run(&mut gpu, elements, &cpu).context("running the checks")?;
    let memory = gpu.memory(); // the caching allocator (it holds only cuDNN's workspace so far)
    checks.push(ringsam_kernels::selftest::memory(&memory, elements).context("checking device memory")?);
    print!("{}", ringsam_kernels::selftest::report(&checks));
    for refused in ringsam_kernels::Launcher::library_refusals(&gpu) {
        println!("refused by the convolution library: {refused}");
    }
    let failed = checks.iter().filter(|c| !c.passed()).count();
    anyhow::ensure!(failed == 0, "{failed} of {} kernel checks disagree with the CPU engine", checks.len());
    println!("selftest kernels: all {} checks agree with the CPU engine", checks.len());
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn run_on(_device: ringsam_tensor::Device, _elements: usize) -> Result<()> {
    Err(usage("selftest kernels needs a GPU: this ringsam was built without --features cuda"))
}
