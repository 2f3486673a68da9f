//! The one door to matrix multiplication.
//!
//! Every GEMM in the engine goes through [`gemm()`], which computes `c = a·b` or `c += a·b` on
//! strided views. Strides make transposes free: a row-major `(m × k)` buffer viewed with
//! `rs = 1, cs = m` is its transpose. The convolution kernels rely on that to use the Flax HWIO
//! kernel layout directly.
//!
//! Backends, chosen at build time and measured by `benches/gemm.rs`:
//! - default: the pure-Rust `gemm` crate (feature `x86-v4`: AVX-512 microkernels, chosen at run
//!   time, so the binary still runs on any x86-64) on the engine's rayon pool; fastest measured on
//!   2 AVX-512 cores;
//! - feature `blas`: a system OpenBLAS through blas-src (`cblas_sgemm`), for machines where it is
//!   faster. Views with no unit stride fall back to [`gemm_ref`].
//!
//! [`gemm_ref`] is the obvious triple loop in f64, kept as the reference for tests.

use crate::TensorError;

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// Backing storage; the view must lie inside it.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between consecutive rows.
    pub rs: usize,
    /// Distance between consecutive columns.
    pub cs: usize,
}

/// A mutable strided matrix view (see [`MatRef`]).
#[derive(Debug)]
pub struct MatMut<'a> {
    /// Backing storage; the view must lie inside it.
    pub data: &'a mut [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between consecutive rows.
    pub rs: usize,
    /// Distance between consecutive columns.
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `(rows × cols)` matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, rs: cols, cs: 1 }
    }
    /// The transpose, as a view (no copy).
    pub fn t(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
    fn check(&self, op: &'static str, what: &str) -> Result<(), TensorError> {
        check_view(op, what, self.data.len(), self.rows, self.cols, self.rs, self.cs)
    }
}

impl<'a> MatMut<'a> {
    /// A contiguous row-major `(rows × cols)` matrix.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut { data, rows, cols, rs: cols, cs: 1 }
    }
    /// The transpose, as a view (no copy).
    pub fn t(self) -> Self {
        MatMut { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
    fn check(&self, op: &'static str, what: &str) -> Result<(), TensorError> {
        check_view(op, what, self.data.len(), self.rows, self.cols, self.rs, self.cs)
    }
}

fn check_view(op: &'static str, what: &str, len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> Result<(), TensorError> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let last = (rows - 1).checked_mul(rs).and_then(|a| (cols - 1).checked_mul(cs).and_then(|b| a.checked_add(b)));
    match last {
        Some(l) if l < len => Ok(()),
        _ => Err(TensorError::Shape { op, msg: format!("{what}: view {rows}x{cols} (strides {rs},{cs}) does not fit in {len} elements") }),
    }
}

fn check_dims(a: &MatRef, b: &MatRef, c: &MatMut) -> Result<(), TensorError> {
    a.check("gemm", "a")?;
    b.check("gemm", "b")?;
    c.check("gemm", "c")?;
    if a.cols != b.rows || c.rows != a.rows || c.cols != b.cols {
        return Err(TensorError::Shape {
            op: "gemm",
            msg: format!("({}x{}) · ({}x{}) into ({}x{})", a.rows, a.cols, b.rows, b.cols, c.rows, c.cols),
        });
    }
    Ok(())
}

/// `c = a·b`, or `c += a·b` when `accumulate`. Runs on the engine's thread pool.
pub fn gemm(c: MatMut, a: MatRef, b: MatRef, accumulate: bool) -> Result<(), TensorError> {
    crate::profile::timed("sgemm, called directly (dense layers)", 2.0 * (a.rows * a.cols * b.cols) as f64, || {
        check_dims(&a, &b, &c)?;
        if c.rows == 0 || c.cols == 0 {
            return Ok(());
        }
        if a.cols == 0 {
            if !accumulate {
                fill_view(c, 0.0);
            }
            return Ok(());
        }
        backend::gemm(c, a, b, accumulate);
        Ok(())
    })
}

fn fill_view(c: MatMut, v: f32) {
    for i in 0..c.rows {
        for j in 0..c.cols {
            c.data[i * c.rs + j * c.cs] = v;
        }
    }
}

/// The reference: a triple loop accumulating in f64. Slow; for tests and awkward fallbacks.
pub fn gemm_ref(c: MatMut, a: MatRef, b: MatRef, accumulate: bool) -> Result<(), TensorError> {
    check_dims(&a, &b, &c)?;
    gemm_ref_unchecked(c, a, b, accumulate);
    Ok(())
}

fn gemm_ref_unchecked(c: MatMut, a: MatRef, b: MatRef, accumulate: bool) {
    for i in 0..c.rows {
        for j in 0..c.cols {
            let mut acc = 0.0f64;
            for p in 0..a.cols {
                acc += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
            }
            let dst = &mut c.data[i * c.rs + j * c.cs];
            *dst = if accumulate { (*dst as f64 + acc) as f32 } else { acc as f32 };
        }
    }
}

/// Tells the backend how many threads it may use (called by [`crate::threads::configure`]).
/// The `gemm` crate runs on the rayon pool and needs nothing; OpenBLAS has its own pool.
pub(crate) fn set_threads(n: usize) {
    backend::set_threads(n);
}

/// Name of the GEMM backend compiled in, for benchmark reports.
pub fn backend_name() -> &'static str {
    backend::NAME
}

#[cfg(not(feature = "blas"))]
mod backend {
    use rayon::prelude::*;

    use super::{MatMut, MatRef};

    pub(super) const NAME: &str = "gemm-crate (pure Rust, runtime SIMD dispatch)";

    pub(super) fn set_threads(_n: usize) {}

    /// Below this smaller output side, the `gemm` crate's own threading splits the work poorly
    /// (measured on 2 cores: (64 × 576 × 65536) ran at 34 GFLOP/s on two threads and 49 on one;
    /// split here, 79). We then cut the output's longer side into one piece per thread and run
    /// each piece single-threaded. Wider outputs are left to the crate, which does as well.
    const SPLIT_BELOW: usize = 256;

    pub(super) fn gemm(c: MatMut, a: MatRef, b: MatRef, accumulate: bool) {
        let threads = rayon::current_num_threads();
        let flops = 2 * c.rows * c.cols * a.cols;
        if threads > 1 && c.rows.min(c.cols) < SPLIT_BELOW && flops >= 1 << 24 {
            split_outer(c, a, b, accumulate, threads);
            return;
        }
        let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
        // SAFETY: `check_dims` proved that every index the views can form lies inside their
        // slices, and `c` is a unique borrow, so it cannot alias `a` or `b`.
        unsafe { raw(c.data.as_mut_ptr(), &c, a.data.as_ptr(), &a, b.data.as_ptr(), &b, c.rows, c.cols, accumulate, par) }
    }

    /// One single-threaded GEMM per thread on disjoint slabs of `c` (rows or columns).
    fn split_outer(c: MatMut, a: MatRef, b: MatRef, accumulate: bool, parts: usize) {
        let by_cols = c.cols >= c.rows;
        let len = if by_cols { c.cols } else { c.rows };
        // Raw addresses cross into the worker closures; each worker touches only its own slab.
        let (cp, ap, bp) = (c.data.as_mut_ptr() as usize, a.data.as_ptr() as usize, b.data.as_ptr() as usize);
        (0..parts).into_par_iter().for_each(|p| {
            let (lo, hi) = (len * p / parts, len * (p + 1) / parts);
            if lo == hi {
                return;
            }
            // SAFETY: slabs [lo, hi) are disjoint across workers, lie inside the checked views,
            // and `c` does not alias `a` or `b` (it was a unique borrow).
            unsafe {
                let (cptr, aptr, bptr) = (cp as *mut f32, ap as *const f32, bp as *const f32);
                if by_cols {
                    raw(cptr.add(lo * c.cs), &c, aptr, &a, bptr.add(lo * b.cs), &b, c.rows, hi - lo, accumulate, gemm::Parallelism::None)
                } else {
                    raw(cptr.add(lo * c.rs), &c, aptr.add(lo * a.rs), &a, bptr, &b, hi - lo, c.cols, accumulate, gemm::Parallelism::None)
                }
            }
        });
    }

    /// `c[rows × cols] (+)= a[rows × k] · b[k × cols]` on raw pointers with the views' strides.
    #[allow(clippy::too_many_arguments)]
    unsafe fn raw(
        cp: *mut f32,
        c: &MatMut,
        ap: *const f32,
        a: &MatRef,
        bp: *const f32,
        b: &MatRef,
        rows: usize,
        cols: usize,
        accumulate: bool,
        par: gemm::Parallelism,
    ) {
        // SAFETY: forwarded from the callers, which checked the views.
        unsafe {
            gemm::gemm(
                rows,
                cols,
                a.cols,
                cp,
                c.cs as isize,
                c.rs as isize,
                accumulate,
                ap,
                a.cs as isize,
                a.rs as isize,
                bp,
                b.cs as isize,
                b.rs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        }
    }
}

#[cfg(feature = "blas")]
mod backend {
    use super::{MatMut, MatRef};
    use cblas_sys::{CBLAS_LAYOUT, CBLAS_TRANSPOSE, cblas_sgemm};

    // Link the system OpenBLAS.
    extern crate blas_src;

    pub(super) const NAME: &str = "OpenBLAS (system, via blas-src)";

    unsafe extern "C" {
        fn openblas_set_num_threads(n: std::ffi::c_int);
    }

    /// OpenBLAS keeps its own thread pool; cap it like rayon's so `--threads` holds. Its calls are
    /// made from the calling thread, never from inside a rayon worker, so the pools do not nest.
    pub(super) fn set_threads(n: usize) {
        // SAFETY: a plain setter in libopenblas, callable at any time.
        unsafe { openblas_set_num_threads(n.min(i32::MAX as usize) as std::ffi::c_int) }
    }

    /// How cblas sees a row-major operand: transposed or not, and its leading dimension.
    fn as_blas(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<(CBLAS_TRANSPOSE, i32)> {
        if cs == 1 && rs >= cols.max(1) {
            Some((CBLAS_TRANSPOSE::CblasNoTrans, rs as i32))
        } else if rs == 1 && cs >= rows.max(1) {
            Some((CBLAS_TRANSPOSE::CblasTrans, cs as i32))
        } else {
            None
        }
    }

    pub(super) fn gemm(c: MatMut, a: MatRef, b: MatRef, accumulate: bool) {
        let ao = as_blas(a.rows, a.cols, a.rs, a.cs);
        let bo = as_blas(b.rows, b.cols, b.rs, b.cs);
        match (ao, bo) {
            (Some((ta, lda)), Some((tb, ldb))) if c.cs == 1 && c.rs >= c.cols => {
                let beta = if accumulate { 1.0 } else { 0.0 };
                // SAFETY: bounds were checked by `check_dims`; strides were checked above.
                unsafe {
                    cblas_sgemm(
                        CBLAS_LAYOUT::CblasRowMajor,
                        ta,
                        tb,
                        c.rows as i32,
                        c.cols as i32,
                        a.cols as i32,
                        1.0,
                        a.data.as_ptr(),
                        lda,
                        b.data.as_ptr(),
                        ldb,
                        beta,
                        c.data.as_mut_ptr(),
                        c.rs as i32,
                    );
                }
            }
            _ => super::gemm_ref_unchecked(c, a, b, accumulate),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn gemm_matches_reference_on_transposed_and_strided_views() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (64, 27, 300), (17, 128, 33)] {
            let a = fill(m * k, 1);
            let b = fill(k * n, 2);
            let mut c0 = fill(m * n, 3);
            let mut c1 = c0.clone();
            // a^T stored (k × m), b stored (k × n).
            let at = {
                let mut t = vec![0.0; m * k];
                for i in 0..m {
                    for p in 0..k {
                        t[p * m + i] = a[i * k + p];
                    }
                }
                t
            };
            for acc in [false, true] {
                gemm(MatMut::row_major(&mut c0, m, n), MatRef::row_major(&at, k, m).t(), MatRef::row_major(&b, k, n), acc).unwrap();
                gemm_ref(MatMut::row_major(&mut c1, m, n), MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n), acc).unwrap();
                let max = c0.iter().zip(&c1).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                assert!(max < 1e-3 * k as f32, "m={m} k={k} n={n} acc={acc}: max diff {max}");
            }
        }
    }

    #[test]
    fn gemm_rejects_views_outside_their_buffer() {
        let a = vec![0.0; 6];
        let b = vec![0.0; 6];
        let mut c = vec![0.0; 4];
        let err = gemm(MatMut::row_major(&mut c, 2, 2), MatRef::row_major(&a, 2, 4), MatRef::row_major(&b, 3, 2), false);
        assert!(matches!(err, Err(TensorError::Shape { .. })), "{err:?}");
    }
}
