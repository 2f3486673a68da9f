//! The engine on a device against the engine on the CPU, whole models at a time: the device
//! check's `engine` part (`ringsam selftest engine --device cuda`) and, at [`EngineSize::QUICK`],
//! a CI test on the emulated device (`crates/bench/tests/engine_check.rs`), so what a GPU runs
//! has run before.
//!
//! Checks: for each model (a WideResNet, a PyramidNet with ShakeDrop, a Shake-Shake net, an
//! EfficientNet with batch norm frozen, SmallCnn, Resnet14: ResNet-50's blocks), one training pass (logits, every parameter gradient, the batch-norm
//! statistics, the ready marks the ring's buckets follow); then the step ([`DeviceStep`] against
//! [`SamStep`]: parameters, statistics, losses and norms after a few steps, error rates equal) as
//! SAM, SGD and ASAM with RMSProp and decoupled weight decay. GEMMs and batch-norm sums run in
//! another order on a device, so values are compared relative to max(|value|, 1), the CPU's
//! being the reference, within [`ENGINE_TOLERANCE`] or, where the computation amplifies rounding
//! more than that, [`SPREAD_FACTOR`] times what the CPU's own result moves by when its weights
//! move by one ulp ([`EngineCheck::spread`], measured in the same check). The GPU runs with TF32
//! off (cuBLAS's default math mode). One more pass runs with BF16 products
//! ([`Precision::Bf16`]), held to what BF16's rounding moves the CPU's result by ([`Spread::Bf16`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use ringsam_data::share::BatchShare;
use ringsam_kernels::conv_library::ConvImpl;
use ringsam_kernels::gemm::round_to_bf16;
use ringsam_kernels::{Gpu, Precision};
use ringsam_models::{ModelConfig, build};
use ringsam_nn::{Pass, Rng};
use ringsam_optim::OptimizerKind;
use ringsam_tensor::Tensor;
use ringsam_train::device_step::DeviceStep;
use ringsam_train::step::{Restore, SamStep, StepConfig, StepReport};

/// How far a device's result may be from the CPU's, relative to max(|value|, 1), at least.
pub const ENGINE_TOLERANCE: f64 = 1e-4;

/// Where the computation itself amplifies rounding, how many times the CPU's own spread (see
/// [`EngineCheck::spread`]) the device may differ by.
pub const SPREAD_FACTOR: f64 = 10.0;

/// What the check runs on.
#[derive(Clone, Copy, Debug)]
pub struct EngineSize {
    /// The WideResNet checked (the SAM step's model too).
    pub wide_resnet: &'static str,
    /// The PyramidNet checked (ShakeDrop).
    pub pyramid_net: &'static str,
    /// The Shake-Shake net checked.
    pub shake_shake: &'static str,
    /// The EfficientNet checked (depthwise convolutions, squeeze-excite, swish, drop-connect).
    pub efficient_net: &'static str,
    /// Image side.
    pub side: usize,
    /// Batch.
    pub batch: usize,
    /// SAM steps compared.
    pub steps: u64,
    /// Image side for Resnet14 (its stem divides by 4 before the first block); None skips it:
    /// its 8 M parameters and 2048-channel batch norms take ~110 s under emulation, so CI holds
    /// its layers to the CPU one by one instead (crates/nn/tests/device_layers.rs).
    pub resnet_side: Option<usize>,
}

impl EngineSize {
    /// Small enough for the emulated device in CI.
    pub const QUICK: EngineSize = EngineSize {
        wide_resnet: "WideResnet10x1",
        pyramid_net: "Pyramid_ShakeDrop_11x8",
        shake_shake: "ShakeShake_1x1",
        efficient_net: "efficientnet-test",
        side: 8,
        batch: 4,
        steps: 1,
        resnet_side: None,
    };
    /// The device check's: the WRN-16-2, CIFAR-sized.
    pub const FULL: EngineSize = EngineSize {
        wide_resnet: "WideResnet16x2",
        pyramid_net: "Pyramid_ShakeDrop_20x48",
        shake_shake: "ShakeShake_2x2",
        efficient_net: "efficientnet-b0",
        side: 32,
        batch: 32,
        steps: 3,
        resnet_side: Some(64),
    };
}

/// One check's outcome.
#[derive(Clone, Debug)]
pub struct EngineCheck {
    /// What was compared.
    pub name: String,
    /// The largest relative difference from the CPU.
    pub worst: f64,
    /// The same measure between two CPU runs whose weights differ by one ulp (every third
    /// weight times 1 + 2⁻²³): how much this computation amplifies rounding. A device sums in
    /// another order, so it can differ by as much; three SAM steps of WRN-16-2 at lr 0.1 from
    /// its initialisation move by ~5e-3 on the CPU alone (measured), one training pass by ~1e-6.
    /// Under [`Spread::Bf16`], between the CPU's run and one on weights and input rounded to BF16.
    pub spread: f64,
    /// What `spread` perturbed.
    pub perturbed: Spread,
    /// Whether everything else (ready marks, error rates, placement) agreed; under BF16, also
    /// that the device's result moved by more than FP32's rounding would.
    pub agreed: bool,
    /// Seconds the device took.
    pub seconds: f64,
}

impl EngineCheck {
    /// The difference allowed: [`ENGINE_TOLERANCE`], or [`SPREAD_FACTOR`] times the CPU's own
    /// spread where that is larger.
    pub fn tolerance(&self) -> f64 {
        ENGINE_TOLERANCE.max(SPREAD_FACTOR * self.spread)
    }

    /// Within tolerance and agreeing.
    pub fn passed(&self) -> bool {
        self.agreed && self.worst <= self.tolerance()
    }
}

/// What the CPU's own spread ([`EngineCheck::spread`]) perturbs: the rounding the device's result
/// is measured against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// Every third weight by one ulp: FP32's rounding, for a device computing in FP32.
    Ulp,
    /// The weights and the input rounded to BF16: for a device whose GEMMs take BF16 operands
    /// ([`Precision::Bf16`]), which must then also differ from the CPU by more than
    /// [`ENGINE_TOLERANCE`] (else it did not round).
    Bf16,
}

/// `p` with every third value moved by one ulp (relative 2⁻²³).
fn nudged(p: &[f32]) -> Vec<f32> {
    p.iter().enumerate().map(|(i, &v)| if i % 3 == 0 { v * (1.0 + f32::EPSILON) } else { v }).collect()
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal()).collect()
}

fn worst(got: &[f32], want: &[f32]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    got.iter()
        .zip(want)
        .map(|(&a, &b)| (a - b).abs() as f64 / (b.abs() as f64).max(1.0))
        .fold(0.0, |m, r| if r.is_nan() { f64::INFINITY } else { m.max(r) })
}

/// Every check on `gpu` at `size`.
pub fn run(gpu: &Arc<Gpu>, size: EngineSize) -> Result<Vec<EngineCheck>, String> {
    let mut checks = Vec::new();
    let resnet = size.resnet_side.map(|side| ("Resnet14", 3, side));
    let models = [
        (size.wide_resnet, 3, size.side),
        (size.pyramid_net, 3, size.side),
        (size.shake_shake, 3, size.side),
        (size.efficient_net, 3, size.side),
        ("SmallCnn", 1, size.side),
    ];
    for (model, channels, side) in models.into_iter().chain(resnet) {
        let at = EngineSize { side, ..size };
        // EfficientNet's batch statistics over few values (its maps shrink 32-fold) make its
        // training pass ill-conditioned: on the CPU alone, weights moved by one ulp move
        // efficientnet-test's gradients by ~6e-3 at 16×16. With batch norm frozen (finetuning,
        // its main use) they move by ~2e-7; the other models check training-mode batch norm.
        let frozen_bn = model == size.efficient_net;
        checks.push(training_pass(gpu, model, channels, at, frozen_bn, Spread::Ulp).map_err(|e| format!("{model}: {e}"))?);
    }
    checks.push(bf16_pass(gpu, size)?);
    for (label, cfg) in step_configs() {
        checks.push(sam_steps(gpu, size, label, cfg).map_err(|e| format!("the SAM step ({label}): {e}"))?);
    }
    Ok(checks)
}

/// The WideResNet's training pass with BF16 products in every GEMM (so in every im2col
/// convolution), batch norm frozen: in training mode at the quick size, BF16's rounding of the
/// weights and input alone moves the CPU's gradients by ~0.3 (it divides by the deviations of 256
/// values), frozen by ~2e-2 (measured), which leaves room to see a wrong result. The device's
/// precision and convolution are set back afterwards.
pub fn bf16_pass(gpu: &Arc<Gpu>, size: EngineSize) -> Result<EngineCheck, String> {
    let (precision, conv) = {
        let l = gpu.launcher(); // one guard: a second in the same expression would deadlock
        (l.precision(), l.conv_impl())
    };
    let err = |e: ringsam_kernels::KernelError| format!("BF16 products: {e}");
    // The library refuses BF16: leave it first, and take it back last.
    {
        let mut l = gpu.launcher();
        l.set_conv_impl(ConvImpl::Gemm).and_then(|()| l.set_precision(Precision::Bf16)).map_err(err)?;
    }
    let check = training_pass(gpu, size.wide_resnet, 3, size, true, Spread::Bf16).map_err(|e| format!("BF16 products: {e}"));
    let mut l = gpu.launcher();
    l.set_precision(precision).and_then(|()| l.set_conv_impl(conv)).map_err(err)?;
    check
}

type Outcome = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<usize>);

/// One training pass of `model` on the CPU and on `gpu` (logits, every gradient, the statistics
/// and the ready marks compared).
pub fn training_pass(
    gpu: &Arc<Gpu>,
    model: &str,
    channels: usize,
    size: EngineSize,
    frozen_bn: bool,
    spread: Spread,
) -> Result<EngineCheck, Box<dyn std::error::Error>> {
    let mut m = build(model, &ModelConfig { num_classes: 10, in_channels: channels })?;
    let (mut p, mut s) = (vec![0.0; m.layout().total()], vec![0.0; m.state_layout().total()]);
    m.init(&mut p, &mut s, 0);
    let (n, side) = (size.batch, size.side);
    let x = Tensor::from_vec(&[channels, n, side, side], values(channels * n * side * side, 1))?;
    let dl = Tensor::from_vec(&[n, 10], values(n * 10, 2).iter().map(|v| v * 0.1).collect())?;
    let pass = Pass::train(3, 5).with_frozen_bn(frozen_bn);
    let mut run = |params: Tensor, mut state: Tensor, x: &Tensor, dl: &Tensor| -> Result<Outcome, Box<dyn std::error::Error>> {
        let logits = m.forward(&params, &mut state, x, &pass)?.to_host()?.as_slice().to_vec();
        let mut grads = params.try_clone()?; // non-zero: backward accumulates
        let mut marks = Vec::new();
        m.backward_notify(&params, &mut grads, x, dl, &mut |_, at| marks.push(at))?;
        Ok((logits, grads.to_host()?.as_slice().to_vec(), state.to_host()?.as_slice().to_vec(), marks))
    };
    let cpu = run(Tensor::from(p.clone()), Tensor::from(s.clone()), &x, &dl)?;
    let moved = match spread {
        Spread::Ulp => run(Tensor::from(nudged(&p)), Tensor::from(s.clone()), &x, &dl)?,
        Spread::Bf16 => {
            let xb = Tensor::from_vec(x.shape(), x.as_slice().iter().map(|&v| round_to_bf16(v)).collect())?;
            run(Tensor::from(p.iter().map(|&v| round_to_bf16(v)).collect::<Vec<_>>()), Tensor::from(s.clone()), &xb, &dl)?
        }
    };
    let on = |t: &Tensor| t.to_gpu(gpu);
    let (pd, sd, xd, dld) = (on(&Tensor::from(p))?, on(&Tensor::from(s))?, on(&x)?, on(&dl)?);
    let t = Instant::now();
    let dev = run(pd, sd, &xd, &dld)?;
    let seconds = t.elapsed().as_secs_f64();
    let differ = |a: &Outcome| worst(&a.0, &cpu.0).max(worst(&a.1, &cpu.1)).max(worst(&a.2, &cpu.2));
    let (r, moved_by) = (differ(&dev), differ(&moved));
    let frozen = if frozen_bn { " (batch norm frozen)" } else { "" };
    let bf16 = if spread == Spread::Bf16 { ", BF16 products" } else { "" };
    let name = format!(
        "{model} training pass{frozen}{bf16}, batch {n} at {side}×{side}: logits, {} gradients, {} statistics",
        cpu.1.len(),
        cpu.2.len()
    );
    let rounded = spread == Spread::Ulp || r > ENGINE_TOLERANCE;
    Ok(EngineCheck { name, worst: r, spread: moved_by, perturbed: spread, agreed: dev.3 == cpu.3 && rounded, seconds })
}

/// The steps compared: SAM as the reference runs it, plain SGD, SAM finetuning (batch norm
/// frozen to its running statistics), and ASAM with the other optimizer and decoupled weight decay.
fn step_configs() -> [(&'static str, StepConfig); 4] {
    let sam = StepConfig { rho: 0.05, weight_decay: 5e-4, gradient_clipping: 1.0, label_smoothing: 0.1, ..StepConfig::default() };
    let rmsprop = OptimizerKind::RmsProp { beta: 0.9, beta2: 0.9, eps: 1e-3 };
    [
        ("SAM ρ 0.05, wd, clip, ε 0.1", sam),
        ("SGD, momentum", StepConfig { rho: 0.0, optimizer: OptimizerKind::Momentum { beta: 0.9 }, ..StepConfig::default() }),
        ("SAM, batch norm frozen (finetuning)", StepConfig { frozen_bn: true, ..sam }),
        (
            "ASAM ρ 0.5, RMSProp, decoupled wd",
            StepConfig {
                rho: 0.5,
                adaptive: true,
                decoupled_weight_decay: true,
                weight_decay: 0.1,
                optimizer: rmsprop,
                ..StepConfig::default()
            },
        ),
    ]
}

/// [`DeviceStep`] against [`SamStep`] under `cfg`.
fn sam_steps(gpu: &Arc<Gpu>, size: EngineSize, label: &str, cfg: StepConfig) -> Result<EngineCheck, Box<dyn std::error::Error>> {
    let model = ModelConfig::default();
    let mut cpu = SamStep::new(size.wide_resnet, &model, cfg, None, BatchShare::alone(1))?;
    let mut moved = SamStep::new(size.wide_resnet, &model, cfg, None, BatchShare::alone(1))?;
    let optim: HashMap<String, Vec<f32>> = cpu.optim_state().into_iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
    moved.restore(Restore { params: &nudged(cpu.params()), state: cpu.state(), optim: &optim, step: 0 })?;
    let mut dev = DeviceStep::new(size.wide_resnet, &model, cfg, gpu)?;
    let (mut r, mut spread, mut agreed, mut seconds) = (0.0f64, 0.0f64, true, 0.0);
    let rel = |x: f64, y: f64| (x - y).abs() / y.abs().max(1e-30);
    let differ = |b: &StepReport, a: &StepReport| {
        [(b.loss as f64, a.loss as f64), (b.grad_norm, a.grad_norm), (b.ascent_grad_norm, a.ascent_grad_norm), (b.param_norm, a.param_norm)]
            .into_iter()
            .fold(0.0f64, |m, (x, y)| m.max(rel(x, y)))
    };
    for step in 0..size.steps {
        let (n, side) = (size.batch, size.side);
        let x = Tensor::from_vec(&[3, n, side, side], values(3 * n * side * side, 10 + step))?;
        let labels: Vec<u32> = (0..n).map(|i| ((i as u64 * 7 + step) % 10) as u32).collect();
        let a = cpu.step(&x, &labels, 0.1)?;
        let m = moved.step(&x, &labels, 0.1)?;
        let t = Instant::now();
        let b = dev.step(&x, &labels, 0.1, None)?;
        seconds += t.elapsed().as_secs_f64();
        agreed &= a.error_rate == b.error_rate;
        (r, spread) = (r.max(differ(&b, &a)), spread.max(differ(&m, &a)));
    }
    r = r.max(worst(&dev.params()?, cpu.params())).max(worst(&dev.state()?, cpu.state()));
    spread = spread.max(worst(moved.params(), cpu.params())).max(worst(moved.state(), cpu.state()));
    let name = format!("{} step ×{} ({label}) vs the CPU's", size.wide_resnet, size.steps);
    Ok(EngineCheck { name, worst: r, spread, perturbed: Spread::Ulp, agreed, seconds: seconds / size.steps as f64 })
}

/// The checks as a table, one line each.
pub fn report(checks: &[EngineCheck]) -> String {
    checks
        .iter()
        .map(|c| {
            let verdict = if c.passed() { "ok" } else { "DIFFERS" };
            let (worst, tol, spread, ms) = (c.worst, c.tolerance(), c.spread, c.seconds * 1e3);
            let by = if c.perturbed == Spread::Bf16 { "BF16" } else { "1-ulp" };
            format!("{verdict:<8} max rel {worst:.1e} (≤ {tol:.0e}; CPU's {by} spread {spread:.1e})  {ms:>9.3} ms  {}\n", c.name)
        })
        .collect()
}
