//! The SAM step on the emulated device against the CPU's `SamStep`: the same model, the same
//! batches, three steps, then the parameters, statistics and reports compared. GEMMs and
//! batch-norm sums run in another order on a device, so values agree within a bound, not bitwise.

use ringsam_data::share::BatchShare;
use ringsam_kernels_emu::emulated_gpu;
use ringsam_models::ModelConfig;
use ringsam_nn::Rng;
use ringsam_optim::OptimizerKind;
use ringsam_tensor::Tensor;
use ringsam_train::device_step::DeviceStep;
use ringsam_train::step::{SamStep, StepConfig};

fn batch(n: usize, seed: u64) -> (Tensor, Vec<u32>) {
    let mut r = Rng::new(seed);
    let x = Tensor::from_vec(&[3, n, 8, 8], (0..3 * n * 64).map(|_| r.normal()).collect()).unwrap();
    (x, (0..n).map(|_| r.below(10) as u32).collect())
}

fn worst(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(&a, &b)| (a - b).abs() as f64 / (b.abs() as f64).max(1.0)).fold(0.0, f64::max)
}

/// `steps` steps of `cfg` on both (few: the emulated device runs a block's threads as OS
/// threads, which costs seconds per pass); returns the worst relative difference of the parameters and
/// statistics, and of the reported losses and norms.
fn compare(cfg: StepConfig, steps: u64) -> (f64, f64) {
    let model = ModelConfig::default();
    let mut cpu = SamStep::new("WideResnet10x1", &model, cfg, None, BatchShare::alone(1)).unwrap();
    let mut dev = DeviceStep::new("WideResnet10x1", &model, cfg, &emulated_gpu()).unwrap();
    let mut reports = 0.0f64;
    for step in 0..steps {
        let (x, labels) = batch(4, 10 + step);
        let (a, b) = (cpu.step(&x, &labels, 0.1).unwrap(), dev.step(&x, &labels, 0.1).unwrap());
        assert_eq!(a.error_rate, b.error_rate, "step {step}");
        let rel = |x: f64, y: f64| (x - y).abs() / y.abs().max(1e-30);
        for (x, y) in [
            (b.loss as f64, a.loss as f64),
            (b.grad_norm, a.grad_norm),
            (b.ascent_grad_norm, a.ascent_grad_norm),
            (b.param_norm, a.param_norm),
        ] {
            reports = reports.max(rel(x, y));
        }
    }
    let values = worst(&dev.params().unwrap(), cpu.params()).max(worst(&dev.state().unwrap(), cpu.state()));
    eprintln!("{cfg:?}\n  parameters and statistics within {values:.1e}, losses and norms within {reports:.1e}");
    (values, reports)
}

#[test]
fn sam_with_weight_decay_and_clipping_matches_the_cpu_step() {
    let cfg = StepConfig { rho: 0.05, weight_decay: 5e-4, gradient_clipping: 1.0, label_smoothing: 0.1, ..StepConfig::default() };
    let (values, reports) = compare(cfg, 2);
    assert!(values <= 1e-5 && reports <= 1e-5, "{values:e} {reports:e}");
}

#[test]
fn sgd_asam_decoupled_decay_and_the_other_optimizers_match_the_cpu_step() {
    for cfg in [
        StepConfig { rho: 0.0, optimizer: OptimizerKind::Momentum { beta: 0.9 }, ..StepConfig::default() },
        StepConfig {
            rho: 0.5,
            adaptive: true,
            decoupled_weight_decay: true,
            weight_decay: 0.1,
            optimizer: OptimizerKind::RmsProp { beta: 0.9, beta2: 0.9, eps: 1e-3 },
            ..StepConfig::default()
        },
    ] {
        let (values, reports) = compare(cfg, 1);
        assert!(values <= 1e-5 && reports <= 1e-5, "{cfg:?}: {values:e} {reports:e}");
    }
}
