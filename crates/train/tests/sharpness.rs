//! Sharpness diagnostics against independent references: the eigenvalues of a quadratic with a
//! known Hessian, and of a small network's dense finite-difference Hessian (every column a
//! central difference of its gradient, decomposed by Jacobi rotations); the m-sharpness against
//! its first-order expansion `ρ·‖∇L‖`.
//!
//! The network is written here (a 4-6-3 tanh MLP, 51 parameters): the zoo's smallest model has
//! 5 000 parameters, whose dense Hessian is too large to decompose in a test.

use ringsam_models::{Model, ModelConfig};
use ringsam_nn::{NnError, ParamLayout, Pass, StateLayout};
use ringsam_tensor::Tensor;
use ringsam_train::TrainError;
use ringsam_train::sharpness::jacobi::symmetric_eigen;
use ringsam_train::sharpness::{BatchLoss, SharpnessConfig, fd_step, hessian_eigenvalues, m_sharpness, measure};

const IN: usize = 4;
const HID: usize = 6;
const OUT: usize = 3;

/// `x (1, N, 2, 2)` flattened to 4 inputs → tanh(W1·x + b1) → W2·h + b2.
struct Mlp {
    layout: ParamLayout,
    state: StateLayout,
    hidden: Vec<f32>, // (N, HID), tanh outputs of the last forward
    logits: Tensor,
}

impl Mlp {
    fn new() -> Mlp {
        let mut layout = ParamLayout::new();
        layout.push("w1", &[IN, HID]);
        layout.push("b1", &[HID]);
        layout.push("w2", &[HID, OUT]);
        layout.push("b2", &[OUT]);
        Mlp { layout, state: ParamLayout::new(), hidden: Vec::new(), logits: Tensor::empty() }
    }

    /// Input `i` of example `e` (C = 1, so CNHW is N × 4).
    fn input(x: &Tensor, e: usize, i: usize) -> f32 {
        x.as_slice()[e * IN + i]
    }
}

impl Model for Mlp {
    fn name(&self) -> &str {
        "Mlp"
    }
    fn layout(&self) -> &ParamLayout {
        &self.layout
    }
    fn state_layout(&self) -> &StateLayout {
        &self.state
    }
    fn config(&self) -> ModelConfig {
        ModelConfig { num_classes: OUT, in_channels: 1 }
    }
    fn init(&self, params: &mut [f32], _state: &mut [f32], seed: u64) {
        let mut r = ringsam_nn::Rng::new(seed);
        params.iter_mut().for_each(|p| *p = r.normal() * 0.8);
    }
    fn forward(&mut self, w: &Tensor, _state: &mut Tensor, x: &Tensor, _pass: &Pass) -> Result<&Tensor, NnError> {
        let n = x.shape()[1];
        let (w1, b1, w2, b2) = (&w[0..24], &w[24..30], &w[30..48], &w[48..51]);
        self.hidden = (0..n * HID)
            .map(|eh| (b1[eh % HID] + (0..IN).map(|i| w1[i * HID + eh % HID] * Mlp::input(x, eh / HID, i)).sum::<f32>()).tanh())
            .collect();
        let logits = (0..n * OUT)
            .map(|eo| b2[eo % OUT] + (0..HID).map(|h| w2[h * OUT + eo % OUT] * self.hidden[eo / OUT * HID + h]).sum::<f32>())
            .collect();
        self.logits = Tensor::from_vec(&[n, OUT], logits).unwrap();
        Ok(&self.logits)
    }
    fn backward(&mut self, w: &Tensor, g: &mut Tensor, x: &Tensor, dlogits: &Tensor) -> Result<(), NnError> {
        let n = x.shape()[1];
        let d = dlogits.as_slice();
        for e in 0..n {
            for o in 0..OUT {
                g[48 + o] += d[e * OUT + o];
                for h in 0..HID {
                    g[30 + h * OUT + o] += d[e * OUT + o] * self.hidden[e * HID + h];
                }
            }
            for h in 0..HID {
                let t = self.hidden[e * HID + h];
                let dh = (0..OUT).map(|o| w[30 + h * OUT + o] * d[e * OUT + o]).sum::<f32>() * (1.0 - t * t);
                g[24 + h] += dh;
                for i in 0..IN {
                    g[i * HID + h] += dh * Mlp::input(x, e, i);
                }
            }
        }
        Ok(())
    }
    fn last_forward_macs(&self) -> usize {
        0
    }
    fn last_backward_macs(&self) -> usize {
        0
    }
}

fn data(n: usize) -> (Tensor, Vec<u32>) {
    let mut r = ringsam_nn::Rng::new(5);
    let x: Vec<f32> = (0..n * IN).map(|_| r.normal()).collect();
    let labels = (0..n).map(|e| ((x[e * IN] + x[e * IN + 1] > 0.0) as u32) + (x[e * IN + 2] > 0.5) as u32).collect();
    (Tensor::from_vec(&[1, n, 2, 2], x).unwrap(), labels)
}

/// `tol` above the f32 noise of the differenced gradients (the estimates jitter at ~10⁻⁵).
fn config(eigs: usize) -> SharpnessConfig {
    SharpnessConfig { eigs, iters: 300, tol: 1e-4, m: 8, rho: 0.05, seed: 1, frozen_bn: false }
}

#[test]
fn a_quadratic_gives_its_hessians_eigenvalues() {
    // L(w) = ½ wᵀAw with A = B·diag(λ)·Bᵀ, B orthogonal (a product of Givens rotations); ∇L = Aw.
    let dim = 30;
    let lambdas: Vec<f64> = (0..dim).map(|i| [40.0, 25.0, 16.0, 9.0, 4.0].get(i).copied().unwrap_or(1.0 / (1 + i) as f64)).collect();
    let mut b: Vec<f64> = (0..dim * dim).map(|i| (i / dim == i % dim) as u8 as f64).collect();
    for (p, q, t) in [(0, 7, 0.7), (1, 2, 1.1), (3, 29, -0.4), (4, 0, 0.3), (2, 11, 2.0)] {
        let (c, s) = (f64::cos(t), f64::sin(t));
        for r in 0..dim {
            let (bp, bq) = (b[r * dim + p], b[r * dim + q]);
            (b[r * dim + p], b[r * dim + q]) = (c * bp - s * bq, s * bp + c * bq);
        }
    }
    let a: Vec<f64> = (0..dim * dim).map(|ij| (0..dim).map(|k| b[ij / dim * dim + k] * lambdas[k] * b[ij % dim * dim + k]).sum()).collect();
    let w: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
    let got = hessian_eigenvalues(&w, &config(5), |at, g| {
        for (r, g) in g.iter_mut().enumerate() {
            *g = (0..dim).map(|c| a[r * dim + c] * at[c] as f64).sum::<f64>() as f32;
        }
        Ok(())
    })
    .unwrap();
    for (g, want) in got.values.iter().zip(&lambdas) {
        // The stated tolerance: f32 gradients differenced over ε = 10⁻³·max(1, ‖w‖).
        assert!((g - want).abs() <= 1e-3 * want, "{:?} against {:?}", got.values, &lambdas[..5]);
    }
}

/// The network's dense Hessian: column j = (∇L(w + ε·e_j) − ∇L(w − ε·e_j)) / (the distance
/// moved, after rounding to f32).
fn dense_hessian(loss: &mut BatchLoss<'_>, w: &[f32], x: &Tensor, labels: &[u32]) -> Vec<f64> {
    let (p, eps) = (w.len(), fd_step(w));
    let mut h = vec![0.0; p * p];
    let (mut gp, mut gm) = (vec![0.0f32; p], vec![0.0f32; p]);
    for j in 0..p {
        let (mut plus, mut minus) = (w.to_vec(), w.to_vec());
        plus[j] = (w[j] as f64 + eps) as f32;
        minus[j] = (w[j] as f64 - eps) as f32;
        loss.eval(&Tensor::from(plus.clone()), x, labels, Some(&mut gp)).unwrap();
        loss.eval(&Tensor::from(minus.clone()), x, labels, Some(&mut gm)).unwrap();
        let moved = plus[j] as f64 - minus[j] as f64;
        (0..p).for_each(|i| h[i * p + j] = (gp[i] as f64 - gm[i] as f64) / moved);
    }
    h
}

#[test]
fn a_small_network_matches_its_dense_finite_difference_hessian() {
    let mut model = Mlp::new();
    let mut w = vec![0.0f32; 51];
    model.init(&mut w, &mut [], 3);
    let (x, labels) = data(64);
    let mut loss = BatchLoss::new(&mut model, &[], 0, 0, false);
    // Near a minimum, where the top of the spectrum is positive (as after training).
    let mut g = vec![0.0f32; 51];
    for _ in 0..500 {
        loss.eval(&Tensor::from(w.clone()), &x, &labels, Some(&mut g)).unwrap();
        w.iter_mut().zip(&g).for_each(|(w, g)| *w -= 0.5 * g);
    }
    let h = dense_hessian(&mut loss, &w, &x, &labels);
    let (dense, _) = symmetric_eigen(&h, 51);
    let report = measure(&mut loss, &w, &x, &labels, &config(5), &mut |_| {}).unwrap();
    assert!(report.converged, "{report:?} (dense: {:?})", &dense[..8]);
    // The iteration finds the eigenvalues of largest magnitude; here the top five are positive
    // and larger than any negative one (checked, so the comparison is meaningful).
    let most_negative = dense.last().copied().unwrap();
    assert!(dense[4] > most_negative.abs(), "dense spectrum {dense:?}");
    for (got, want) in report.eigenvalues.iter().zip(&dense) {
        assert!(
            (got - want).abs() <= 2e-3 * dense[0],
            "power iteration {:?} against the dense Hessian's {:?}",
            report.eigenvalues,
            &dense[..5]
        );
    }
    let ratio = report.ratio().unwrap();
    assert!((ratio - dense[0] / dense[4]).abs() <= 1e-2 * ratio);
    let names: Vec<String> = report.scalars().into_iter().map(|(k, _)| k).collect();
    assert!(names.contains(&"sharpness/lambda_1_over_lambda_5".to_string()) && names.contains(&"sharpness/m_sharpness".to_string()));
}

#[test]
fn m_sharpness_is_rho_times_the_gradient_norm_to_first_order() -> Result<(), TrainError> {
    let mut model = Mlp::new();
    let mut w = vec![0.0f32; 51];
    model.init(&mut w, &mut [], 4);
    let (x, labels) = data(32);
    let mut loss = BatchLoss::new(&mut model, &[], 0, 0, false);
    // One chunk of 32: L(w + ρ·g/‖g‖) − L(w) = ρ‖g‖ + O(ρ²).
    let mut g = vec![0.0f32; 51];
    loss.eval(&Tensor::from(w.clone()), &x, &labels, Some(&mut g))?;
    let rho = 1e-3;
    let first_order = rho as f64 * ringsam_optim::global_norm(&g);
    let got = m_sharpness(&mut loss, &w, &x, &labels, 32, rho)?;
    assert!((got - first_order).abs() <= 0.02 * first_order, "{got} against ρ‖g‖ = {first_order}");
    // Chunks of 8 each ascend on their own gradient: each chunk's increase is ρ‖g_s‖ to first
    // order, and the mean of those is at least ρ‖g‖ (the norm is convex).
    let by_chunk = m_sharpness(&mut loss, &w, &x, &labels, 8, rho)?;
    let mut chunk_norms = 0.0;
    for s in 0..4 {
        let (xs, ys) = chunk(&x, &labels, s * 8, 8);
        loss.eval(&Tensor::from(w.clone()), &xs, &ys, Some(&mut g))?;
        chunk_norms += rho as f64 * ringsam_optim::global_norm(&g) / 4.0;
    }
    assert!((by_chunk - chunk_norms).abs() <= 0.02 * chunk_norms && by_chunk >= got, "{by_chunk} against {chunk_norms} (m = 32: {got})");
    Ok(())
}

fn chunk(x: &Tensor, labels: &[u32], lo: usize, m: usize) -> (Tensor, Vec<u32>) {
    (Tensor::from_vec(&[1, m, 2, 2], x.as_slice()[lo * IN..(lo + m) * IN].to_vec()).unwrap(), labels[lo..lo + m].to_vec())
}
