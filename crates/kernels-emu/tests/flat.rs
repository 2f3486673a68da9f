//! The flat-buffer kernels (SAM's ascent, the base optimizers, clipping, weight decay, the EMA),
//! run under emulation, against the CPU engine (`ringsam-optim`). Element-wise results must be
//! the CPU's to the bit; norms, summed in double in another order, to 1e-12 relative.

use ringsam_kernels::flat::{self, OptimizerState};
use ringsam_kernels::{Buf, Launch};
use ringsam_kernels_emu::{Emu, host_buf};
use ringsam_optim::{BaseOptimizer, Ema, OptimizerKind};
use ringsam_rng::Rng;

/// Long enough for several reduction blocks with a few elements per thread; short enough that
/// one OS thread per emulated GPU thread stays quick.
const N: usize = 5_003;

fn normal(seed: u64, n: usize) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.normal()).collect()
}

fn buf(v: &[f32]) -> Buf<f32> {
    // SAFETY: every test keeps its vectors alive and untouched across its launches.
    unsafe { host_buf(v) }
}

fn assert_bitwise(what: &str, got: &[f32], want: &[f32]) {
    let differ = got.iter().zip(want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differ, 0, "{what}: {differ} of {} elements differ from the CPU engine's", want.len());
}

fn assert_norm(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= 1e-12 * want.abs(), "{what}: {got} vs the CPU's {want}");
}

#[test]
fn the_norm_and_the_sam_ascent_are_the_cpu_engines() {
    let (w, g) = (normal(1, N), normal(2, N));
    let (mut cpu, gpu) = (vec![0.0; N], vec![0.0; N]);
    let want = ringsam_optim::ascent_point(&mut cpu, &w, &g, 0.05);
    let mut emu = Emu::default();
    let got = flat::ascent_point(&mut emu, buf(&gpu), buf(&w), buf(&g), 0.05).unwrap();
    assert_norm("‖g‖", got, want);
    // The kernel itself, given the same scale, is bitwise the CPU's formula.
    let scale = (0.05f64 / got) as f32;
    let formula: Vec<f32> = w.iter().zip(&g).map(|(&w, &g)| w + scale * g).collect();
    assert_bitwise("w + ρ·g/‖g‖", &gpu, &formula);
    assert_eq!(emu.launches.iter().map(|l| l.0).collect::<Vec<_>>(), ["sum_squares_blocks", "sum_partials", "sam_ascent"]);
    assert!(emu.launches[0].1.grid > 1, "the reduction spans several blocks: {:?}", emu.launches[0].1);
}

#[test]
fn asam_matches_the_cpu_engine() {
    let (w, g) = (normal(3, N), normal(4, N));
    let (mut cpu, gpu) = (vec![0.0; N], vec![0.0; N]);
    let want = ringsam_optim::asam_ascent_point(&mut cpu, &w, &g, 0.5, 0.01);
    let got = flat::asam_ascent_point(&mut Emu::default(), buf(&gpu), buf(&w), buf(&g), 0.5, 0.01).unwrap();
    assert_norm("‖T·g‖", got, want);
    let scale = (0.5f64 / got) as f32;
    let formula: Vec<f32> = w
        .iter()
        .zip(&g)
        .map(|(&w, &g)| {
            let t = w.abs() + 0.01;
            w + scale * t * t * g
        })
        .collect();
    assert_bitwise("ASAM ascent", &gpu, &formula);
}

#[test]
fn a_zero_gradient_leaves_the_weights() {
    let (w, g, out) = (normal(5, 300), vec![0.0f32; 300], vec![7.0f32; 300]);
    let mut emu = Emu::default();
    assert_eq!(flat::ascent_point(&mut emu, buf(&out), buf(&w), buf(&g), 0.05).unwrap(), 0.0);
    assert_bitwise("ascent at g = 0", &out, &w);
    assert_eq!(flat::asam_ascent_point(&mut emu, buf(&out), buf(&w), buf(&g), 0.5, 0.01).unwrap(), 0.0);
}

#[test]
fn every_base_optimizer_updates_as_the_cpu_engine() {
    let kinds = [
        OptimizerKind::Nesterov { beta: 0.9 },
        OptimizerKind::Momentum { beta: 0.9 },
        OptimizerKind::RmsProp { beta: 0.9, beta2: 0.99, eps: 1e-3 },
    ];
    for kind in kinds {
        let mut cpu = BaseOptimizer::new(kind, N);
        let gpu = BaseOptimizer::new(kind, N);
        let (mut w_cpu, w_gpu) = (normal(6, N), normal(6, N));
        let mut emu = Emu::default();
        let state = OptimizerState {
            momentum: buf(&gpu.momentum),
            second_moment: (!gpu.second_moment.is_empty()).then(|| buf(&gpu.second_moment)),
        };
        for step in 0..3 {
            let g = normal(10 + step, N);
            cpu.update(&mut w_cpu, &g, 0.1);
            flat::update(&mut emu, kind, buf(&w_gpu), buf(&g), state, 0.1).unwrap();
        }
        assert_bitwise(&format!("{kind:?}: weights"), &w_gpu, &w_cpu);
        assert_bitwise(&format!("{kind:?}: momentum"), &gpu.momentum, &cpu.momentum);
        assert_bitwise(&format!("{kind:?}: second moment"), &gpu.second_moment, &cpu.second_moment);
    }
}

#[test]
fn rmsprop_without_its_second_moment_is_refused() {
    let (w, g, m) = (vec![0.0f32; 4], vec![0.0f32; 4], vec![0.0f32; 4]);
    let kind = OptimizerKind::RmsProp { beta: 0.9, beta2: 0.99, eps: 1e-3 };
    let state = OptimizerState { momentum: buf(&m), second_moment: None };
    assert!(flat::update(&mut Emu::default(), kind, buf(&w), buf(&g), state, 0.1).is_err());
}

#[test]
fn clipping_weight_decay_and_the_ema_are_the_cpu_engines() {
    let mut emu = Emu::default();
    // Clipping: a long gradient is scaled to the threshold, a short one left.
    for max in [1.0f32, 1e6] {
        let (mut cpu, gpu) = (normal(20, N), normal(20, N));
        let want = ringsam_optim::clip_by_global_norm(&mut cpu, max);
        let got = flat::clip_by_global_norm(&mut emu, buf(&gpu), max).unwrap();
        assert_norm("clip's norm", got, want);
        let s = if got >= max as f64 { (max as f64 / got) as f32 } else { 1.0 };
        let formula: Vec<f32> = normal(20, N).iter().map(|&v| if s == 1.0 { v } else { v * s }).collect();
        assert_bitwise(&format!("clipped to {max}"), &gpu, &formula);
    }
    // The L2 term over decayed ranges only.
    let w = normal(21, N);
    let (mut cpu, gpu) = (normal(22, N), normal(22, N));
    let ranges = [0..100, 400..N];
    ringsam_optim::weight_decay::add_l2_gradient(&mut cpu, &w, 5e-4, &ranges);
    flat::add_l2_gradient(&mut emu, buf(&gpu), buf(&w), 5e-4, &ranges).unwrap();
    assert_bitwise("g + wd·w", &gpu, &cpu);
    // The EMA, past its warm-up.
    let (p0, p1) = (normal(23, N), normal(24, N));
    let mut cpu = Ema::new(0.999, 2, &p0, &[]);
    let gpu = p0.clone();
    for (step, p) in [(1, &p1), (5, &p0)] {
        let d = cpu.decay_at(step);
        cpu.update(step, p, &[]);
        flat::ema_update(&mut emu, buf(&gpu), buf(p), d).unwrap();
    }
    assert_bitwise("EMA", &gpu, &cpu.params);
}

#[test]
fn launch_shapes_cover_every_element_and_bound_the_partials() {
    for n in [1, 255, 256, 257, 1 << 20, 1 << 30] {
        let e = Launch::elementwise(n);
        assert!(e.grid >= 1 && e.block == ringsam_kernels::launch::BLOCK);
        let r = Launch::reduction(n);
        assert!(r.grid as usize <= ringsam_kernels::launch::MAX_PARTIALS && r.grid >= 1, "{n}: {r:?}");
    }
}
