//! `ringsam bench step`: time SGD and SAM steps of a model on synthetic data, and the cheaper
//! SAM schedules (`--sam_every`, LookSAM) per step.
//!
//! Each variant gets one untimed warm-up step (it sizes every buffer), then `iters` timed steps,
//! SGD and SAM alternating; the report gives medians. A cheaper schedule is timed over whole
//! cycles of its period (one SAM step and the one-pass steps between, whatever the phase: the
//! cycle is that many consecutive global steps), one cycle per iteration after a warm-up cycle,
//! and reported per step. Both variants run in the same process on the
//! same thread pool, interleaved, so their ratio is meaningful; absolute numbers depend on the
//! machine. On a GPU (`--device cuda`) the step is the device's ([`DeviceStep`]) and the report
//! adds the caching allocator's peak memory; a model with a layer not yet on the device is refused
//! naming that layer.

use std::time::Instant;

use ringsam_models::ModelConfig;
use ringsam_nn::Rng;
use ringsam_tensor::{Device, Tensor, TensorError};
use serde::Serialize;

use ringsam_train::cheap_sam::SamSchedule;
use ringsam_train::device_step::DeviceStep;
use ringsam_train::step::StepReport;
use ringsam_train::{BatchShare, SamStep, StepConfig, TrainError};

/// What to benchmark.
#[derive(Clone, Debug)]
pub struct BenchStepConfig {
    /// Registry name.
    pub model: String,
    /// Images per step.
    pub batch: usize,
    /// Square image side.
    pub image_size: usize,
    /// Classes.
    pub num_classes: usize,
    /// Timed steps per variant.
    pub iters: usize,
    /// SAM radius for the SAM variant.
    pub rho: f32,
    /// Where to run.
    pub device: Device,
    /// A device's GEMMs (the CPU engine is FP32).
    pub precision: ringsam_kernels::Precision,
    /// A device's convolutions, when not its default.
    pub conv_impl: Option<ringsam_kernels::conv_library::ConvImpl>,
    /// After the timed steps, one more of each kind with every launch timed on the device
    /// ([`ringsam_kernels::profile`]) or every kernel call timed on the CPU
    /// ([`ringsam_tensor::profile`]): where the step's time goes.
    pub profile: bool,
    /// Cheaper SAM schedules to time beside SGD and SAM.
    pub cheaper: Vec<SamSchedule>,
}

/// One cheaper schedule's cost (medians over its timed cycles).
#[derive(Clone, Debug, Serialize)]
pub struct CheaperCost {
    /// `sam_every_5`, `looksam_5`, ….
    pub variant: String,
    /// Steps per cycle.
    pub period: u64,
    /// Median time per step over a cycle, milliseconds.
    pub ms_per_step: f64,
    /// `ms_per_step / sgd_ms`.
    pub over_sgd: f64,
    /// `ms_per_step / sam_ms`.
    pub over_sam: f64,
    /// Each timed cycle's time per step, ms.
    pub samples_ms: Vec<f64>,
}

/// Medians of one benchmark run (the `--json` object).
#[derive(Clone, Debug, Serialize)]
pub struct BenchStepReport {
    /// Model name.
    pub model: String,
    /// Images per step.
    pub batch: usize,
    /// Image side.
    pub image_size: usize,
    /// Engine threads.
    pub threads: usize,
    /// Median SGD step, milliseconds.
    pub sgd_ms: f64,
    /// Median SAM step, milliseconds.
    pub sam_ms: f64,
    /// SGD images per second.
    pub sgd_images_per_s: f64,
    /// SAM images per second.
    pub sam_images_per_s: f64,
    /// `sam_ms / sgd_ms`.
    pub sam_over_sgd: f64,
    /// Forward multiply-adds per step (whole batch).
    pub forward_gmacs: f64,
    /// GFLOP/s reached by the SGD step: 2 FLOPs per multiply-add of forward and backward
    /// (convolutions and dense layers; element-wise work is not counted).
    pub sgd_gflops_per_s: f64,
    /// Each timed SGD step, ms.
    pub sgd_samples_ms: Vec<f64>,
    /// Each timed SAM step, ms.
    pub sam_samples_ms: Vec<f64>,
    /// Where it ran.
    pub device: String,
    /// In which precision its GEMMs ran.
    pub precision: String,
    /// How its convolutions ran: the CPU engine's, or a device's (`gemm`: im2col and cuBLAS;
    /// `cudnn`).
    pub conv: String,
    /// The convolution shapes the device's library refused, with the reason (they ran by im2col).
    pub conv_refused: Vec<String>,
    /// On a device: the most memory its buffers held at once (the caching allocator's peak in
    /// use), MB.
    pub peak_memory_mb: Option<f64>,
    /// On a device: the most it took from the device (in use plus cached), MB.
    pub peak_reserved_mb: Option<f64>,
    /// With `profile`: the profiled SGD step's and SAM step's kernel tables.
    pub profile: Option<[String; 2]>,
    /// The cheaper schedules, per step.
    pub cheaper: Vec<CheaperCost>,
}

/// The step timed: the CPU engine's or a device's.
enum Stepper {
    Cpu(Box<SamStep>),
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))] // made only for a CUDA device
    Device(Box<DeviceStep>),
}

impl Stepper {
    fn new(cfg: &BenchStepConfig, model: &ModelConfig, step: StepConfig) -> Result<Stepper, TrainError> {
        match cfg.device {
            Device::Cpu => Ok(Stepper::Cpu(Box::new(SamStep::new(&cfg.model, model, step, None, BatchShare::alone(1))?))),
            #[cfg(feature = "cuda")]
            Device::Cuda(ordinal) => {
                let gpu = ringsam_kernels::Gpu::cuda(ordinal, cfg.precision).map_err(|source| TensorError::Kernel {
                    op: "loading the kernels",
                    device: cfg.device.to_string(),
                    source,
                })?;
                if let Some(imp) = cfg.conv_impl {
                    gpu.launcher().set_conv_impl(imp).map_err(|source| TensorError::Kernel {
                        op: "choosing the convolutions",
                        device: cfg.device.to_string(),
                        source,
                    })?;
                }
                Ok(Stepper::Device(Box::new(DeviceStep::new(&cfg.model, model, step, &gpu)?)))
            }
        }
    }

    fn set_rho(&mut self, rho: f32) {
        match self {
            Stepper::Cpu(s) => s.set_rho(rho),
            Stepper::Device(s) => s.set_rho(rho),
        }
    }

    fn set_schedule(&mut self, schedule: SamSchedule) -> Result<(), TrainError> {
        match self {
            Stepper::Cpu(s) => s.set_schedule(schedule),
            Stepper::Device(s) => s.set_schedule(schedule),
        }
    }

    fn step(&mut self, x: &Tensor, labels: &[u32]) -> Result<StepReport, TrainError> {
        match self {
            Stepper::Cpu(s) => s.step(x, labels, 0.01),
            Stepper::Device(s) => s.step(x, labels, 0.01, None),
        }
    }

    fn model(&self) -> &dyn ringsam_models::Model {
        match self {
            Stepper::Cpu(s) => s.model(),
            Stepper::Device(s) => s.model(),
        }
    }

    fn profile(&mut self, x: &Tensor, labels: &[u32], rho: f32) -> Result<[String; 2], TrainError> {
        match self {
            Stepper::Device(s) => profile_steps(s, x, labels, rho),
            Stepper::Cpu(s) => profile_cpu_steps(s, x, labels, rho),
        }
    }

    /// Peak in use and peak reserved, MB (a device's).
    fn memory(&self) -> (Option<f64>, Option<f64>) {
        match self {
            Stepper::Cpu(_) => (None, None),
            Stepper::Device(s) => {
                let m = s.memory();
                (Some(m.peak_in_use as f64 / 1e6), Some(m.peak_reserved as f64 / 1e6))
            }
        }
    }

    /// How its convolutions ran, and the shapes the device's library refused (run by im2col).
    fn conv(&self) -> (String, Vec<String>) {
        match self {
            Stepper::Cpu(_) => ("engine".into(), Vec::new()),
            Stepper::Device(s) => {
                let l = s.gpu().launcher();
                (l.conv_impl().to_string(), l.library_refusals())
            }
        }
    }
}

/// One SGD step and one SAM step (radius `rho`) of the CPU engine with every kernel call timed
/// ([`ringsam_tensor::profile`]): each one's table of kernels, by layer kind and pass.
pub fn profile_cpu_steps(s: &mut SamStep, x: &Tensor, labels: &[u32], rho: f32) -> Result<[String; 2], TrainError> {
    let mut tables = [String::new(), String::new()];
    for (table, rho) in tables.iter_mut().zip([0.0, rho]) {
        s.set_rho(rho);
        ringsam_tensor::profile::start();
        let t = Instant::now();
        let stepped = s.step(x, labels, 0.01);
        let wall = t.elapsed().as_secs_f64();
        let times = ringsam_tensor::profile::stop();
        stepped?;
        *table = times.table(wall, 30);
    }
    Ok(tables)
}

/// One SGD step and one SAM step (radius `rho`) of `s` with every launch timed on its device:
/// each one's table of kernels ([`ringsam_kernels::KernelTimes::table`]).
pub fn profile_steps(s: &mut DeviceStep, x: &Tensor, labels: &[u32], rho: f32) -> Result<[String; 2], TrainError> {
    let gpu = s.gpu().clone();
    let err = |source| TrainError::Tensor(TensorError::Kernel { op: "profiling", device: gpu.name().to_string(), source });
    let mut tables = [String::new(), String::new()];
    for (table, rho) in tables.iter_mut().zip([0.0, rho]) {
        s.set_rho(rho);
        gpu.launcher().set_profiling(true);
        let t = Instant::now();
        let stepped = s.step(x, labels, 0.01, None);
        let wall = t.elapsed().as_secs_f64();
        let times = gpu.launcher().take_profile();
        gpu.launcher().set_profiling(false);
        stepped?;
        *table = times.map_err(err)?.table(wall, 25);
    }
    Ok(tables)
}

/// Runs the benchmark; `progress` is called with a line before each phase.
pub fn run(cfg: &BenchStepConfig, mut progress: impl FnMut(&str)) -> Result<BenchStepReport, TrainError> {
    if cfg.batch == 0 || cfg.iters == 0 || cfg.image_size == 0 {
        return Err(TrainError::Config("batch, iters and image size must be positive".into()));
    }
    cfg.device.probe()?;
    if cfg.device == Device::Cpu && cfg.precision != ringsam_kernels::Precision::Fp32 {
        return Err(TrainError::Config(format!("--precision {}: the CPU engine computes in fp32", cfg.precision)));
    }
    let model_cfg = ModelConfig { num_classes: cfg.num_classes, in_channels: 3 };
    let mut rng = Rng::new(1);
    let (n, s) = (cfg.batch, cfg.image_size);
    let x = Tensor::from_vec(&[3, n, s, s], (0..3 * n * s * s).map(|_| rng.normal()).collect())?;
    let labels: Vec<u32> = (0..n).map(|_| rng.below(cfg.num_classes as u64) as u32).collect();

    // One model serves both variants (only ρ differs), so the benchmark holds one set of
    // activations. Both are warmed up first, then timed in alternation (SGD, SAM, SGD, ...) so that
    // a change in machine conditions during the run affects both alike.
    let mut st = Stepper::new(cfg, &model_cfg, StepConfig { rho: 0.0, weight_decay: 5e-4, ..StepConfig::default() })?;
    progress("warm-up steps");
    for rho in [0.0, cfg.rho] {
        st.set_rho(rho);
        st.step(&x, &labels)?;
    }
    let (mut sgd, mut sam) = (Vec::with_capacity(cfg.iters), Vec::with_capacity(cfg.iters));
    let mut macs = (0, 0);
    for i in 0..cfg.iters {
        progress(&format!("step {}/{} (SGD, then SAM)", i + 1, cfg.iters));
        for (rho, samples) in [(0.0, &mut sgd), (cfg.rho, &mut sam)] {
            st.set_rho(rho);
            let t = Instant::now();
            st.step(&x, &labels)?; // on a device, it ends reading the step's scalars: all done
            samples.push(t.elapsed().as_secs_f64() * 1e3);
            if rho == 0.0 {
                macs = (st.model().last_forward_macs(), st.model().last_backward_macs());
            }
        }
    }
    let (macs, backward_macs) = macs;
    let (sgd_ms, sam_ms) = (median(&sgd), median(&sam));
    let cheaper = time_cheaper(&mut st, cfg, &x, &labels, [sgd_ms, sam_ms], &mut progress)?;
    let (peak_memory_mb, peak_reserved_mb) = st.memory();
    let profile = if cfg.profile {
        progress("profiled steps (SGD, then SAM)");
        Some(st.profile(&x, &labels, cfg.rho)?)
    } else {
        None
    };
    let step_flops = 2.0 * (macs + backward_macs) as f64;
    Ok(BenchStepReport {
        model: cfg.model.clone(),
        batch: n,
        image_size: s,
        threads: ringsam_tensor::threads::current(),
        sgd_ms,
        sam_ms,
        sgd_images_per_s: n as f64 / (sgd_ms / 1e3),
        sam_images_per_s: n as f64 / (sam_ms / 1e3),
        sam_over_sgd: sam_ms / sgd_ms,
        forward_gmacs: macs as f64 / 1e9,
        sgd_gflops_per_s: step_flops / (sgd_ms / 1e3) / 1e9,
        sgd_samples_ms: sgd,
        sam_samples_ms: sam,
        device: cfg.device.to_string(),
        precision: cfg.precision.to_string(),
        conv: st.conv().0,
        conv_refused: st.conv().1,
        peak_memory_mb,
        peak_reserved_mb,
        profile,
        cheaper,
    })
}

/// Times each cheaper schedule over whole cycles (see the module docs), alternating them.
fn time_cheaper(
    st: &mut Stepper,
    cfg: &BenchStepConfig,
    x: &Tensor,
    labels: &[u32],
    [sgd_ms, sam_ms]: [f64; 2],
    progress: &mut impl FnMut(&str),
) -> Result<Vec<CheaperCost>, TrainError> {
    let cycle = |st: &mut Stepper, schedule: SamSchedule| -> Result<f64, TrainError> {
        st.set_schedule(schedule)?;
        let t = Instant::now();
        for _ in 0..schedule.period() {
            st.step(x, labels)?;
        }
        Ok(t.elapsed().as_secs_f64() * 1e3 / schedule.period() as f64)
    };
    st.set_rho(cfg.rho);
    let mut samples = vec![Vec::with_capacity(cfg.iters); cfg.cheaper.len()];
    for i in 0..=cfg.iters {
        for (schedule, times) in cfg.cheaper.iter().zip(&mut samples) {
            progress(&format!("cycle {i}/{} of {}", cfg.iters, schedule.label()));
            let ms = cycle(st, *schedule)?;
            if i > 0 {
                times.push(ms); // cycle 0 warms up (LookSAM's buffers, its first direction)
            }
        }
    }
    st.set_schedule(SamSchedule::Every(1))?;
    Ok(cfg
        .cheaper
        .iter()
        .zip(samples)
        .map(|(s, times)| {
            let ms = median(&times);
            CheaperCost {
                variant: s.label(),
                period: s.period(),
                ms_per_step: ms,
                over_sgd: ms / sgd_ms,
                over_sam: ms / sam_ms,
                samples_ms: times,
            }
        })
        .collect())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 { s[m] } else { (s[m - 1] + s[m]) / 2.0 }
}
