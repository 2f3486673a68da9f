//! Initializers as the reference uses them (docs/SAM.md, "Initialisation and batch norm").
//!
//! - Convolution kernels: Kaiming-normal with `mode = fan_out`, gain 2 — JAX's
//!   `variance_scaling(2.0, 'fan_out', 'normal')`, which in jax 0.2 draws a plain (untruncated)
//!   normal with variance `2 / fan_out`, `fan_out = R·S·K` for an HWIO kernel.
//! - The classifier: `U(−1/√classes, 1/√classes)` (the reference's `dense_layer_init_fn`).
//! - Batch norm: scale 1, bias 0; running mean 0, variance 1. Dense bias: 0.
//!
//! The draws come from our [`Rng`], not JAX's PRNG: a ringsam model has the reference's
//! distribution, not its exact bits (the reference always initialises from `PRNGKey(0)`).

use crate::Rng;

/// Fills an HWIO kernel `(R, S, Cin, K)` with N(0, 2/(R·S·K)).
pub fn kaiming_normal_fan_out(w: &mut [f32], shape: &[usize], rng: &mut Rng) {
    let fan_out: usize = match shape {
        [.., k] if shape.len() >= 2 => shape[..shape.len() - 2].iter().product::<usize>() * k,
        _ => shape.iter().product(),
    };
    let std = (2.0 / fan_out as f64).sqrt() as f32;
    w.iter_mut().for_each(|v| *v = std * rng.normal());
}

/// Fills a dense kernel `(in, out)` with U(−1/√out, 1/√out).
pub fn dense_uniform(w: &mut [f32], out_features: usize, rng: &mut Rng) {
    let a = 1.0 / (out_features as f32).sqrt();
    w.iter_mut().for_each(|v| *v = rng.uniform_in(-a, a));
}

/// JAX's truncated normal for variance scaling: N(0, 1) cut at ±2 and divided by 0.87962566
/// (its standard deviation), so the result has unit variance; times `std`.
pub fn truncated_normal(w: &mut [f32], std: f32, rng: &mut Rng) {
    const CUT_STD: f32 = 0.879_625_7;
    for v in w.iter_mut() {
        let z = loop {
            let z = rng.normal();
            if z.abs() <= 2.0 {
                break z;
            }
        };
        *v = std * z / CUT_STD;
    }
}

/// `variance_scaling(scale, mode, 'truncated_normal')`: variance `scale / fan`.
pub fn variance_scaling_truncated(w: &mut [f32], scale: f64, fan: usize, rng: &mut Rng) {
    truncated_normal(w, (scale / fan.max(1) as f64).sqrt() as f32, rng);
}

/// Fills with a constant.
pub fn constant(w: &mut [f32], v: f32) {
    w.fill(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_normal_has_the_asked_variance_and_no_tails() {
        let mut w = vec![0.0; 200_000];
        variance_scaling_truncated(&mut w, 2.0, 50, &mut Rng::new(3));
        let var = w.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / w.len() as f64;
        assert!((var - 0.04).abs() < 0.001, "variance {var}");
        let bound = 2.0 * 0.2 / 0.879_625_7;
        assert!(w.iter().all(|v| v.abs() <= bound + 1e-6));
    }

    #[test]
    fn kaiming_fan_out_variance() {
        let shape = [3, 3, 16, 32];
        let mut w = vec![0.0; 3 * 3 * 16 * 32];
        kaiming_normal_fan_out(&mut w, &shape, &mut Rng::new(1));
        let var = w.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / w.len() as f64;
        let want = 2.0 / (3.0 * 3.0 * 32.0);
        assert!((var / want - 1.0).abs() < 0.05, "var {var} want {want}");
    }
}
