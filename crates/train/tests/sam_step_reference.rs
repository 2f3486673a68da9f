//! The SAM step against an independent float64 recomputation, and ρ = 0 against plain SGD.
//!
//! The independent computation drives the model's forward/backward directly (the model's
//! gradients are themselves checked against Flax in ringsam-models) and redoes everything the
//! step adds — loss gradient, weight decay, ascent point, clipping, the Nesterov / momentum /
//! RMSProp update — in f64, written out here without the optim crate.

use ringsam_models::{ModelConfig, build};
use ringsam_nn::testing::assert_close;
use ringsam_nn::{Pass, Rng};
use ringsam_optim::OptimizerKind;
use ringsam_tensor::Tensor;
use ringsam_tensor::loss::{LossShape, softmax_cross_entropy_backward, softmax_cross_entropy_forward};
use ringsam_train::cheap_sam::SamSchedule;
use ringsam_train::{BatchShare, SamStep, StepConfig};

const MODEL: &str = "WideResnet10x1";

fn batch(n: usize, seed: u64) -> (Tensor, Vec<u32>) {
    let mut r = Rng::new(seed);
    (Tensor::from_vec(&[3, n, 8, 8], (0..3 * n * 64).map(|_| r.normal()).collect()).unwrap(), (0..n).map(|_| r.below(10) as u32).collect())
}

/// CE(ls) gradient at `w` (f32 model), returned as f64, plus the new BN state.
fn grad(w: &[f32], state: &mut [f32], x: &Tensor, labels: &[u32], ls: f32, pass: Pass) -> Vec<f64> {
    let mut m = build(MODEL, &ModelConfig::default()).unwrap();
    let (w, mut st) = (Tensor::from(w.to_vec()), Tensor::from(state.to_vec()));
    let logits = m.forward(&w, &mut st, x, &pass).unwrap().clone();
    state.copy_from_slice(&st);
    let (n, k) = (labels.len(), 10);
    let sh = LossShape { n, k };
    let (mut l, mut p, mut d) = (vec![0.0; n], vec![0.0; n * k], vec![0.0; n * k]);
    softmax_cross_entropy_forward(&mut l, &mut p, logits.as_slice(), labels, ls, &sh).unwrap();
    softmax_cross_entropy_backward(&mut d, &p, labels, ls, 1.0 / n as f32, &sh).unwrap();
    let mut g = Tensor::from(vec![0.0; w.len()]);
    m.backward(&w, &mut g, x, &Tensor::from_vec(&[n, k], d).unwrap()).unwrap();
    g.iter().map(|&v| v as f64).collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn check(kind: OptimizerKind, rho: f32, clip: f32) {
    check_schedule(kind, rho, clip, SamSchedule::Every(1), 3);
}

/// `steps` steps of the schedule against the f64 recomputation. LookSAM's reused direction is
/// recomputed in the paper's form, `g_s − ‖g_s‖·cos θ·g/‖g‖`.
fn check_schedule(kind: OptimizerKind, rho: f32, clip: f32, schedule: SamSchedule, steps: u64) {
    let cfg = StepConfig {
        rho,
        weight_decay: 1e-3,
        label_smoothing: 0.1,
        gradient_clipping: clip,
        optimizer: kind,
        schedule,
        ..StepConfig::default()
    };
    let mut st = SamStep::new(MODEL, &ModelConfig::default(), cfg, None, BatchShare::alone(1)).unwrap();
    let (x, labels) = batch(6, 1);
    let lr = 0.05f64;
    // Independent f64 state.
    let mut w: Vec<f64> = st.params().iter().map(|&v| v as f64).collect();
    let mut m = vec![0.0f64; w.len()];
    let mut v2 = vec![1.0f64; w.len()];
    let mut state = st.state().to_vec();
    let mut g_v = vec![0.0f64; w.len()];
    for step in 0..steps {
        let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let mut g = grad(&w32, &mut state, &x, &labels, 0.1, Pass::train(0, step));
        g.iter_mut().zip(&w).for_each(|(g, w)| *g += 1e-3 * w);
        if rho > 0.0 && schedule.sam_at(step) {
            let n = norm(&g);
            let w_adv: Vec<f32> = w.iter().zip(&g).map(|(w, g)| (w + rho as f64 * g / n) as f32).collect();
            let mut frozen = state.clone();
            let mut g_s = grad(&w_adv, &mut frozen, &x, &labels, 0.1, Pass::train_frozen_stats(0, step));
            g_s.iter_mut().zip(&w_adv).for_each(|(g, w)| *g += 1e-3 * *w as f64);
            let cos = g_s.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>() / (norm(&g_s) * n);
            g_v = g_s.iter().zip(&g).map(|(s, g)| s - norm(&g_s) * cos * g / n).collect();
            g = g_s;
        } else if let SamSchedule::LookSam { alpha, .. } = schedule {
            let scale = alpha as f64 * norm(&g) / norm(&g_v);
            g.iter_mut().zip(&g_v).for_each(|(g, v)| *g += scale * v);
        }
        let n = norm(&g);
        if clip > 0.0 && n >= clip as f64 {
            g.iter_mut().for_each(|g| *g *= clip as f64 / n);
        }
        for i in 0..w.len() {
            match kind {
                OptimizerKind::Nesterov { beta } => {
                    m[i] = beta as f64 * m[i] + g[i];
                    w[i] -= lr * (g[i] + beta as f64 * m[i]);
                }
                OptimizerKind::Momentum { beta } => {
                    m[i] = beta as f64 * m[i] + g[i];
                    w[i] -= lr * m[i];
                }
                OptimizerKind::RmsProp { beta, beta2, eps } => {
                    v2[i] = beta2 as f64 * v2[i] + (1.0 - beta2 as f64) * g[i] * g[i];
                    m[i] = beta as f64 * m[i] + g[i] / (v2[i] + eps as f64).sqrt();
                    w[i] -= lr * m[i];
                }
            }
        }
        st.step(&x, &labels, lr as f32).unwrap();
    }
    let want: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    assert_close(&format!("{kind:?} rho {rho} clip {clip} {schedule:?}: parameters after {steps} steps"), st.params(), &want, 2e-5, 1e-4);
    assert_close("running statistics (pass 1 only)", st.state(), &state, 1e-5, 1e-4);
}

#[test]
fn sam_nesterov_matches_f64() {
    check(OptimizerKind::Nesterov { beta: 0.9 }, 0.05, 0.0);
}

#[test]
fn sam_with_clipping_matches_f64() {
    check(OptimizerKind::Nesterov { beta: 0.9 }, 0.05, 0.5);
}

#[test]
fn momentum_and_rmsprop_match_f64() {
    check(OptimizerKind::Momentum { beta: 0.9 }, 0.05, 0.0);
    check(OptimizerKind::RmsProp { beta: 0.9, beta2: 0.9, eps: 1e-3 }, 0.0, 0.0);
}

#[test]
fn sam_every_k_matches_f64() {
    check_schedule(OptimizerKind::Nesterov { beta: 0.9 }, 0.05, 0.0, SamSchedule::Every(2), 5);
}

#[test]
fn looksam_matches_f64() {
    check_schedule(OptimizerKind::Nesterov { beta: 0.9 }, 0.05, 0.0, SamSchedule::LookSam { k: 3, alpha: 0.7 }, 6);
    check_schedule(OptimizerKind::Momentum { beta: 0.9 }, 0.05, 0.5, SamSchedule::LookSam { k: 2, alpha: 1.5 }, 4);
}

/// ρ = 0 is plain SGD, bit for bit: one pass, the same gradient, the same update.
#[test]
fn rho_zero_is_plain_sgd_bit_for_bit() {
    let cfg = StepConfig { rho: 0.0, weight_decay: 1e-3, gradient_clipping: 0.0, ..StepConfig::default() };
    let mut st = SamStep::new(MODEL, &ModelConfig::default(), cfg, None, BatchShare::alone(1)).unwrap();
    let (x, labels) = batch(6, 2);
    let mut w = Tensor::from(st.params().to_vec());
    let mut state = Tensor::from(st.state().to_vec());
    let mut mom = vec![0.0f32; w.len()];
    let mut model = build(MODEL, &ModelConfig::default()).unwrap();
    for step in 0..3u64 {
        let logits = model.forward(&w, &mut state, &x, &Pass::train(0, step)).unwrap().clone();
        let sh = LossShape { n: 6, k: 10 };
        let (mut l, mut p, mut d) = (vec![0.0; 6], vec![0.0; 60], vec![0.0; 60]);
        softmax_cross_entropy_forward(&mut l, &mut p, logits.as_slice(), &labels, 0.0, &sh).unwrap();
        softmax_cross_entropy_backward(&mut d, &p, &labels, 0.0, 1.0 / 6.0, &sh).unwrap();
        let mut g = Tensor::from(vec![0.0f32; w.len()]);
        model.backward(&w, &mut g, &x, &Tensor::from_vec(&[6, 10], d).unwrap()).unwrap();
        for i in 0..w.len() {
            g[i] += 1e-3 * w[i];
            mom[i] = 0.9 * mom[i] + g[i];
            w[i] -= 0.05 * (g[i] + 0.9 * mom[i]);
        }
        st.step(&x, &labels, 0.05).unwrap();
    }
    assert!(st.params() == w.as_slice(), "rho = 0 differs from plain SGD");
    assert!(st.state() == state.as_slice());
}

/// m-sharpness: with sam_m = N the step is ordinary SAM; with smaller chunks it differs.
#[test]
fn sam_m_chunks_change_the_step() {
    let (x, labels) = batch(8, 3);
    let run = |m: Option<usize>| {
        let mut st = SamStep::new(
            MODEL,
            &ModelConfig::default(),
            StepConfig { sam_m: m, rho: 0.05, ..StepConfig::default() },
            None,
            BatchShare::alone(1),
        )
        .unwrap();
        st.step(&x, &labels, 0.05).unwrap();
        st.params().to_vec()
    };
    let whole = run(None);
    assert!(run(Some(8)) == whole);
    assert!(run(Some(2)) != whole);
}

/// Mixup through both SAM passes: the loss is `λ·CE(y) + (1 − λ)·CE(y reversed)`, so each pass's
/// gradient is the λ-weighted sum of the two plain gradients, recomputed here in f64 from the
/// plain loss alone (the mixed loss itself is checked against finite differences in the tensor
/// crate).
#[test]
fn mixup_sam_step_matches_f64() {
    let (rho, wd, ls, lambda, lr) = (0.05f64, 1e-3f64, 0.1f32, 0.7f32, 0.05f64);
    let cfg = StepConfig { rho: rho as f32, weight_decay: wd as f32, label_smoothing: ls, gradient_clipping: 0.0, ..StepConfig::default() };
    let mut st = SamStep::new(MODEL, &ModelConfig::default(), cfg, None, BatchShare::alone(1)).unwrap();
    let (x, labels) = batch(6, 3);
    let partner: Vec<u32> = labels.iter().rev().copied().collect();
    let w: Vec<f64> = st.params().iter().map(|&v| v as f64).collect();
    let state0 = st.state().to_vec();
    let mixed = |w32: &[f32], pass: Pass, state: &[f32]| -> Vec<f64> {
        let a = grad(w32, &mut state.to_vec(), &x, &labels, ls, pass);
        let b = grad(w32, &mut state.to_vec(), &x, &partner, ls, pass);
        a.iter().zip(&b).map(|(a, b)| lambda as f64 * a + (1.0 - lambda as f64) * b).collect()
    };
    let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let mut g = mixed(&w32, Pass::train(0, 0), &state0);
    g.iter_mut().zip(&w).for_each(|(g, w)| *g += wd * w);
    let n = norm(&g);
    let w_adv: Vec<f32> = w.iter().zip(&g).map(|(w, g)| (w + rho * g / n) as f32).collect();
    // Pass 2 reads the statistics pass 1 left: one forward in training mode from state0.
    let mut after_pass1 = state0.clone();
    grad(&w32, &mut after_pass1, &x, &labels, ls, Pass::train(0, 0));
    let mut g2 = mixed(&w_adv, Pass::train_frozen_stats(0, 0), &after_pass1);
    g2.iter_mut().zip(&w_adv).for_each(|(g, w)| *g += wd * *w as f64);
    // Nesterov's first step: w − lr·(1 + β)·g.
    let want: Vec<f32> = w.iter().zip(&g2).map(|(w, g)| (w - lr * 1.9 * g) as f32).collect();
    st.step_mixed(&x, &labels, Some((&partner[..], lambda)), lr as f32).unwrap();
    assert_close("parameters after one mixup SAM step", st.params(), &want, 2e-5, 1e-4);
}
