//! Eigen-decomposition of a small dense symmetric matrix by cyclic Jacobi rotations: the
//! Rayleigh–Ritz step of the subspace iteration (a k × k matrix, k ≤ 64), and the dense
//! Hessians of the tests. Accurate to a few ulps of the largest eigenvalue; O(k³) per sweep.

/// Eigenvalues (descending) and their eigenvectors (`vectors[i]` belongs to `values[i]`) of the
/// symmetric `a` (row-major `n × n`; only its symmetric part is used).
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(a.len(), n * n, "symmetric_eigen: not an n × n matrix");
    let mut m: Vec<f64> = (0..n * n).map(|i| 0.5 * (a[i] + a[(i % n) * n + i / n])).collect();
    let mut v: Vec<f64> = (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n).flat_map(|p| (0..n).filter(move |&q| q != p).map(move |q| (p, q))).map(|(p, q)| m[p * n + q].powi(2)).sum();
        let diag: f64 = (0..n).map(|p| m[p * n + p].powi(2)).sum();
        if off <= 1e-30 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                rotate(&mut m, &mut v, n, p, q);
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| m[j * n + j].total_cmp(&m[i * n + i]));
    let values = order.iter().map(|&i| m[i * n + i]).collect();
    let vectors = order.iter().map(|&i| (0..n).map(|r| v[r * n + i]).collect()).collect();
    (values, vectors)
}

/// One Jacobi rotation zeroing `m[p][q]`; `v` accumulates the rotations (its columns become
/// the eigenvectors).
fn rotate(m: &mut [f64], v: &mut [f64], n: usize, p: usize, q: usize) {
    let apq = m[p * n + q];
    if apq == 0.0 {
        return;
    }
    let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
    let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
    let t = sign / (theta.abs() + (theta * theta + 1.0).sqrt()); // the smaller root: a rotation of at most 45°
    let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
    for k in 0..n {
        let (mkp, mkq) = (m[k * n + p], m[k * n + q]);
        m[k * n + p] = c * mkp - s * mkq;
        m[k * n + q] = s * mkp + c * mkq;
    }
    for k in 0..n {
        let (mpk, mqk) = (m[p * n + k], m[q * n + k]);
        m[p * n + k] = c * mpk - s * mqk;
        m[q * n + k] = s * mpk + c * mqk;
    }
    for k in 0..n {
        let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
        v[k * n + p] = c * vkp - s * vkq;
        v[k * n + q] = s * vkp + c * vkq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_diagonal_matrix_gives_back_its_diagonal() {
        // A = Q diag(5, -2, 1) Qᵀ with Q a rotation in the (0, 2) plane, then (0, 1).
        let (c1, s1, c2, s2) = (0.6f64, 0.8f64, 0.28f64, 0.96f64);
        let q = [[c1 * c2, -s2, -s1 * c2], [c1 * s2, c2, -s1 * s2], [s1, 0.0, c1]];
        let d = [5.0, -2.0, 1.0];
        let a: Vec<f64> = (0..9).map(|i| (0..3).map(|k| q[i / 3][k] * d[k] * q[i % 3][k]).sum()).collect();
        let (values, vectors) = symmetric_eigen(&a, 3);
        for (got, want) in values.iter().zip([5.0, 1.0, -2.0]) {
            assert!((got - want).abs() < 1e-12, "{values:?}");
        }
        // A·v = λ·v for each pair.
        for (l, v) in values.iter().zip(&vectors) {
            for r in 0..3 {
                let av: f64 = (0..3).map(|k| a[r * 3 + k] * v[k]).sum();
                assert!((av - l * v[r]).abs() < 1e-12);
            }
        }
    }
}
