//! Finite-difference gradient checking for any [`Layer`].
//!
//! The scalar under test is `L = Σ_i out_i · v_i` for a fixed pseudo-random `v`, accumulated in
//! f64, so every output element contributes and `∂L/∂out = v` is what backward receives. Each
//! checked parameter or input value is moved by `±eps` and `(L₊ − L₋) / 2·eps` compared with the
//! analytic gradient: `|analytic − numeric| ≤ atol + rtol·|numeric|`.
//!
//! The forward runs in f32, so the numeric estimate carries round-off of about
//! `1e-7·|out|·√len / eps`; the tolerances in the tests are chosen above that and stated there.
//! Inputs near a kink (ReLU at 0, ties in max pooling) make the estimate meaningless; the tests
//! build inputs whose values are well separated from kinks.

use ringsam_tensor::Tensor;

use crate::{Layer, NnError, Pass, Rng};

/// Step and tolerances.
#[derive(Clone, Copy, Debug)]
pub struct GradCheckConfig {
    /// Finite-difference step.
    pub eps: f32,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// At most this many values are checked per buffer (evenly spaced) to bound the run time.
    pub max_per_buffer: usize,
}

impl Default for GradCheckConfig {
    fn default() -> Self {
        GradCheckConfig { eps: 1e-3, atol: 1e-3, rtol: 5e-3, max_per_buffer: 200 }
    }
}

/// What a passing check measured.
#[derive(Clone, Debug)]
pub struct GradCheckReport {
    /// Values compared.
    pub checked: usize,
    /// Largest `|analytic − numeric|`.
    pub max_abs_err: f64,
    /// Largest error relative to the allowance `atol + rtol·|numeric|` (≤ 1 on success).
    pub worst_ratio: f64,
}

/// Checks `layer`'s parameter gradients (the slice `params`) and input gradient at `x`.
///
/// `pass` must not update batch-norm statistics (`update_bn_stats == false`); `state` is restored
/// before every forward anyway. Returns `Err` with the worst offenders when a value is outside
/// tolerance.
pub fn check_layer(
    layer: &mut dyn Layer,
    params: &[f32],
    state: &mut [f32],
    x: &Tensor,
    pass: &Pass,
    cfg: &GradCheckConfig,
) -> Result<GradCheckReport, String> {
    let err = |e: NnError| e.to_string();
    let state0 = state.to_vec();
    let mut x = x.clone();
    // The layer takes its arena as tensors; `params` is perturbed in `p` and left as it was.
    let (mut p, mut st) = (Tensor::from(params.to_vec()), Tensor::from(state0.clone()));

    layer.forward(&p, &mut st, &x, pass).map_err(err)?;
    let mut rng = Rng::new(0x6AAD_C4EC);
    let v: Vec<f32> = (0..layer.output().len()).map(|_| rng.uniform_in(-1.0, 1.0)).collect();
    let dout = Tensor::from_vec(layer.output().shape(), v.clone()).map_err(|e| e.to_string())?;
    let mut grads = Tensor::from(vec![0.0; params.len()]);
    layer.backward(&p, &mut grads, &x, &dout).map_err(err)?;
    let (grads, dx) = (grads.as_slice().to_vec(), layer.dinput().as_slice().to_vec());

    let loss = |layer: &mut dyn Layer, params: &Tensor, state: &mut Tensor, x: &Tensor| -> Result<f64, String> {
        state.as_mut_slice().copy_from_slice(&state0);
        layer.forward(params, state, x, pass).map_err(err)?;
        Ok(layer.output().as_slice().iter().zip(&v).map(|(&o, &w)| o as f64 * w as f64).sum())
    };

    let mut failures = Vec::new();
    let mut report = GradCheckReport { checked: 0, max_abs_err: 0.0, worst_ratio: 0.0 };
    let mut compare = |what: &str, i: usize, analytic: f32, numeric: f64, report: &mut GradCheckReport| {
        let diff = (analytic as f64 - numeric).abs();
        let allowed = cfg.atol + cfg.rtol * numeric.abs();
        report.checked += 1;
        report.max_abs_err = report.max_abs_err.max(diff);
        report.worst_ratio = report.worst_ratio.max(diff / allowed);
        if diff > allowed {
            failures.push((diff / allowed, format!("{what}[{i}]: analytic {analytic:.6e}, numeric {numeric:.6e}")));
        }
    };

    for i in sample(params.len(), cfg.max_per_buffer) {
        let orig = params[i];
        p.as_mut_slice()[i] = orig + cfg.eps;
        let lp = loss(layer, &p, &mut st, &x)?;
        p.as_mut_slice()[i] = orig - cfg.eps;
        let lm = loss(layer, &p, &mut st, &x)?;
        p.as_mut_slice()[i] = orig;
        compare("param", i, grads[i], (lp - lm) / (2.0 * cfg.eps as f64), &mut report);
    }
    if !dx.is_empty() {
        for i in sample(x.len(), cfg.max_per_buffer) {
            let orig = x.as_slice()[i];
            x.as_mut_slice()[i] = orig + cfg.eps;
            let lp = loss(layer, &p, &mut st, &x)?;
            x.as_mut_slice()[i] = orig - cfg.eps;
            let lm = loss(layer, &p, &mut st, &x)?;
            x.as_mut_slice()[i] = orig;
            compare("input", i, dx[i], (lp - lm) / (2.0 * cfg.eps as f64), &mut report);
        }
    }
    state.copy_from_slice(&state0);
    if failures.is_empty() {
        Ok(report)
    } else {
        failures.sort_by(|a, b| b.0.total_cmp(&a.0));
        let worst: Vec<String> = failures.iter().take(5).map(|f| f.1.clone()).collect();
        Err(format!("{}: {} of {} values outside tolerance; worst: {}", layer.name(), failures.len(), report.checked, worst.join("; ")))
    }
}

/// Up to `max` evenly spaced indices in `0..len`.
fn sample(len: usize, max: usize) -> impl Iterator<Item = usize> {
    let step = len.div_ceil(max.max(1)).max(1);
    (0..len).step_by(step)
}
