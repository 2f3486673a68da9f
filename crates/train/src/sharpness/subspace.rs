//! The top eigenvalues of a symmetric operator known only through its products with vectors (the
//! loss Hessian, through Hessian-vector products): subspace iteration, the block form of power
//! iteration, with a Rayleigh–Ritz step each round.
//!
//! For `k` eigenvalues it iterates `b = k + OVERSAMPLE` vectors. Each round multiplies the
//! orthonormal columns of `V` by the operator (`W = H·V`, `b` products), takes the Ritz values
//! and vectors of `Vᵀ·H·V`, and makes the next `V` from `W` rotated onto the Ritz vectors and
//! orthonormalised. The Ritz values converge to the eigenvalues of largest magnitude, the i-th
//! at the rate `|λ_{b+1}/λ_i|`: the extra vectors keep λk converging when λk and λ{k+1} are close
//! (a network's spectrum is crowded there), and λ1 converges at least as fast as plain power
//! iteration would. It stops when none of the top `k` moved by more than `tol·|λ1|` in a round,
//! or after `max_iters` rounds (`converged` says which). Without convergence, the estimates are
//! the mean of the last half of the rounds' Ritz values, and `spread` says how far λ1 ranged over
//! them: products that are not quite linear (finite differences across ReLU kinks, see
//! [`super`]) make the Ritz values jitter around their value rather than settle.
//!
//! Vectors are stored in f32 (a WRN-28-10 has 36 M parameters); every dot product accumulates
//! in f64.

use rayon::prelude::*;

use super::jacobi::symmetric_eigen;

/// Vectors iterated beyond the eigenvalues asked for (see the module docs).
pub const OVERSAMPLE: usize = 2;

/// What the iteration found.
#[derive(Clone, Debug, PartialEq)]
pub struct Eigenvalues {
    /// The estimates, largest first (the eigenvalues of largest magnitude, sorted by value).
    pub values: Vec<f64>,
    /// Rounds run.
    pub iterations: usize,
    /// Operator products made.
    pub products: usize,
    /// Whether the last round moved no estimate by more than the tolerance.
    pub converged: bool,
    /// Without convergence, λ1's range over the rounds averaged, relative to their mean (0 when
    /// converged).
    pub spread: f64,
}

/// Runs the iteration (see the module docs) for `k` eigenvalues of the `dim`-dimensional
/// operator `apply(v, out)` (`out = H·v`), from a start drawn with `seed`.
pub fn top_eigenvalues<E>(
    dim: usize,
    k: usize,
    max_iters: usize,
    tol: f64,
    seed: u64,
    mut apply: impl FnMut(&[f32], &mut [f32]) -> Result<(), E>,
) -> Result<Eigenvalues, E> {
    let want = k.min(dim).max(1);
    let k = (want + OVERSAMPLE).min(dim);
    let mut rng = ringsam_rng::Rng::new(seed);
    let mut v: Vec<Vec<f32>> = (0..k).map(|_| (0..dim).map(|_| rng.normal()).collect()).collect();
    orthonormalise(&mut v);
    let mut w = vec![vec![0.0f32; dim]; k];
    let (mut history, mut products) = (Vec::<Vec<f64>>::new(), 0);
    for round in 1..=max_iters.max(1) {
        for (vi, wi) in v.iter().zip(w.iter_mut()) {
            apply(vi, wi)?;
            products += 1;
        }
        let t: Vec<f64> = (0..k * k).map(|ij| dot(&v[ij / k], &w[ij % k])).collect();
        let (values, vectors) = symmetric_eigen(&t, k);
        let scale = values[0].abs().max(f64::MIN_POSITIVE); // λ1's magnitude
        let previous = history.last().map_or(&[][..], Vec::as_slice);
        let moved = previous.iter().zip(&values).take(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let converged = previous.len() == want && moved <= tol * scale;
        history.push(values[..want].to_vec());
        if converged {
            return Ok(Eigenvalues { values: values[..want].to_vec(), iterations: round, products, converged, spread: 0.0 });
        }
        if round == max_iters.max(1) {
            let last = &history[history.len() / 2..];
            let mean: Vec<f64> = (0..want).map(|i| last.iter().map(|v| v[i]).sum::<f64>() / last.len() as f64).collect();
            let (lo, hi) = last.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v[0]), hi.max(v[0])));
            let spread = if mean[0] != 0.0 { (hi - lo) / mean[0].abs() } else { 0.0 };
            return Ok(Eigenvalues { values: mean, iterations: round, products, converged, spread });
        }
        // The next basis: W rotated onto the Ritz vectors (column i ≈ the i-th eigenvector).
        for (vi, u) in v.iter_mut().zip(&vectors) {
            vi.par_iter_mut().enumerate().for_each(|(j, x)| *x = u.iter().zip(&w).map(|(&c, wc)| c * wc[j] as f64).sum::<f64>() as f32);
        }
        orthonormalise(&mut v);
    }
    unreachable!("the loop returns in its last round")
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.par_chunks(1 << 16).zip(b.par_chunks(1 << 16)).map(|(a, b)| a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>()).sum()
}

/// Modified Gram–Schmidt, twice (once is not enough in f32 when columns are nearly parallel, as
/// they become when the iteration converges). A column that vanishes is replaced by a unit vector
/// orthogonal to the others' span as far as one more pass can make it.
fn orthonormalise(v: &mut [Vec<f32>]) {
    for _pass in 0..2 {
        for i in 0..v.len() {
            let (done, rest) = v.split_at_mut(i);
            let vi = &mut rest[0];
            for u in done.iter() {
                let c = dot(u, vi) as f32;
                vi.par_iter_mut().zip(u.par_iter()).for_each(|(x, &y)| *x -= c * y);
            }
            let n = dot(vi, vi).sqrt();
            if n > 0.0 {
                let s = (1.0 / n) as f32;
                vi.par_iter_mut().for_each(|x| *x *= s);
            } else {
                let dim = vi.len();
                vi.iter_mut().enumerate().for_each(|(j, x)| *x = if j == i % dim { 1.0 } else { 0.0 });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// H = Q·diag(λ)·Qᵀ with a random orthogonal Q (Householder reflections), applied exactly.
    fn operator(dim: usize, lambdas: &[f64]) -> Vec<f64> {
        let mut rng = ringsam_rng::Rng::new(11);
        let mut q: Vec<f64> = (0..dim * dim).map(|i| if i / dim == i % dim { 1.0 } else { 0.0 }).collect();
        for _ in 0..3 {
            let u: Vec<f64> = (0..dim).map(|_| rng.normal() as f64).collect();
            let uu: f64 = u.iter().map(|x| x * x).sum();
            // Q ← Q·(I − 2uuᵀ/uᵀu)
            for r in 0..dim {
                let qu: f64 = (0..dim).map(|c| q[r * dim + c] * u[c]).sum();
                for c in 0..dim {
                    q[r * dim + c] -= 2.0 * qu * u[c] / uu;
                }
            }
        }
        (0..dim * dim).map(|ij| (0..dim).map(|k| q[(ij / dim) * dim + k] * lambdas[k] * q[(ij % dim) * dim + k]).sum()).collect()
    }

    #[test]
    fn finds_the_top_eigenvalues_of_a_known_operator() {
        let dim = 60;
        let lambdas: Vec<f64> = (0..dim).map(|i| if i < 6 { [50.0, 30.0, 20.0, 12.0, 8.0, 2.0][i] } else { 1.0 / (i as f64) }).collect();
        let h = operator(dim, &lambdas);
        let apply = |v: &[f32], out: &mut [f32]| -> Result<(), ()> {
            for r in 0..dim {
                out[r] = (0..dim).map(|c| h[r * dim + c] * v[c] as f64).sum::<f64>() as f32;
            }
            Ok(())
        };
        let got = top_eigenvalues(dim, 5, 200, 1e-5, 3, apply).unwrap();
        assert!(got.converged, "{got:?}");
        for (g, w) in got.values.iter().zip(&lambdas[..5]) {
            assert!((g - w).abs() < 1e-4 * 50.0, "{:?} against {:?}", got.values, &lambdas[..5]);
        }
        // One vector is power iteration: λ1 alone.
        let one = top_eigenvalues(dim, 1, 500, 1e-6, 3, apply).unwrap();
        assert!((one.values[0] - 50.0).abs() < 1e-3, "{one:?}");
    }

    #[test]
    fn stops_after_max_iters_and_says_so() {
        let apply = |v: &[f32], out: &mut [f32]| -> Result<(), ()> {
            out.iter_mut().zip(v).enumerate().for_each(|(i, (o, &x))| *o = x * (1.0 + 1e-3 * i as f32));
            Ok(())
        };
        let got = top_eigenvalues(50, 2, 3, 1e-12, 1, apply).unwrap();
        assert!(!got.converged && got.iterations == 3 && got.products == 3 * (2 + OVERSAMPLE), "{got:?}");
        assert_eq!(got.values.len(), 2);
    }
}
